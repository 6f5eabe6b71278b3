"""data.sources.DataSource: the flags of the training script and of `evaluate` / `encode` opened one way."""

import logging
import warnings

import pytest

from radiodiff_vae.data import RadioMapSeer, SyntheticRadioMaps, write_synthetic_folder
from radiodiff_vae.data.batches import build_datasets
from radiodiff_vae.data.layout import gain_path
from radiodiff_vae.data.sources import DataSource
from radiodiff_vae.data.splits import is_radiomapseer_numbered

SIZE = 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources") / "maps"
    return write_synthetic_folder(root, num_maps=30, num_tx=2, seed=1, resolution=SIZE, show_progress=False)


def test_a_folder_opens_by_split_and_whole(folder):
    source = DataSource(data_dir=str(folder), simulations="synthetic", split_scheme="disjoint")
    assert source.kind == "folder" and source.default_split() == "all"  # 30 maps are not RadioMapSeer's 700
    whole = source.open("all")
    assert isinstance(whole, RadioMapSeer) and len(whole) == 60
    parts = [source.open(split) for split in ("train", "val", "test")]
    assert sorted(map_id for part in parts for map_id in part.map_ids) == whole.map_ids
    assert "every map of the folder" in source.describe("all") and "(synthetic, test, disjoint" in source.describe(
        "test"
    )
    assert is_radiomapseer_numbered(range(1, 701)) and not is_radiomapseer_numbered(range(0, 700))


def test_synthetic_maps_and_bad_values():
    maps = DataSource(synthetic_maps=1, synthetic_tx=2, resolution=SIZE, first_map_id=5, show_progress=False).open()
    assert isinstance(maps, SyntheticRadioMaps) and len(maps) == 2 and maps[0]["name"] == "5_0"
    for options, message in (
        ({"dataset_name": "user/maps", "num_tx": 2}, "num_tx applies to RadioMapSeer \\(--data_dir\\) only"),
        ({"dataset_name": "user/maps", "simulations": ("IRT4", "DPM")}, "one simulation at a time"),
        ({"synthetic_maps": 0}, "at least 1 city"),
        ({"resolution": 0}, "resolution must be a positive number"),
    ):
        with pytest.raises(ValueError, match=message):
            DataSource(**options)
    with pytest.raises(FileNotFoundError, match="--data_dir /nonexistent is not a folder"):
        DataSource(data_dir="/nonexistent")
    with pytest.raises(ValueError, match="split 'all' reads every map of a --data_dir folder"):
        DataSource(dataset_name="user/maps").open("all")


def test_training_validates_without_test_maps_whose_gain_files_are_missing(folder, tmp_path, caplog):
    """A partial RadioMapSeer folder: a test map lacks a gain file, the run validates without test maps."""
    import shutil

    partial = shutil.copytree(folder, tmp_path / "partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        test_map = RadioMapSeer(partial, "synthetic", "test", "disjoint").map_ids[0]
    gain_path(partial, "synthetic", test_map, 1).unlink()
    source = DataSource(data_dir=str(partial), simulations="synthetic", split_scheme="disjoint")
    with caplog.at_level(logging.WARNING):
        run_data = build_datasets(source, num_validation_maps=2)
    assert run_data.test is None and len(run_data.validation) == 2
    assert f"missing gain map {gain_path(partial, 'synthetic', test_map, 1)}" in caplog.text
