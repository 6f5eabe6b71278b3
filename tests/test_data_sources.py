"""data.sources.DataSource: the flags of the training script and of `evaluate` / `encode` opened one way."""

import logging
import warnings

import pytest

from radiodiff_vae.data import RadioMapSeer, SyntheticRadioMaps, write_synthetic_folder
from radiodiff_vae.data.batches import build_datasets
from radiodiff_vae.errors import DataError, InputNotFoundError, InvalidArgumentError
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
        with pytest.raises(InvalidArgumentError, match=message):
            DataSource(**options)
    with pytest.raises(InputNotFoundError, match="--data_dir /nonexistent is not a folder"):
        DataSource(data_dir="/nonexistent")
    with pytest.raises(InvalidArgumentError, match="split 'all' reads every map of a --data_dir folder"):
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


def test_one_name_per_data_flag_and_the_old_names_warn(capsys):
    """The commands and the training scripts take the same data flags; the commands' old names still work for one
    version, with a one-line warning each."""
    import argparse

    from radiodiff_vae.cli import build_parser
    from radiodiff_vae.cli.arguments import add_data_arguments, data_source_from_args

    parser = build_parser()
    new = parser.parse_args(["evaluate", "m", "--output_dir", "o", "--synthetic_num_maps", "3", "--synthetic_seed", "5"])
    assert capsys.readouterr().err == ""
    old = parser.parse_args(
        ["evaluate", "m", "--output_dir", "o", "--synthetic_maps", "3", "--data_seed", "5", "--num_workers", "2"]
    )
    warnings_printed = capsys.readouterr().err.splitlines()
    assert warnings_printed == [
        f"radiodiff-vae evaluate: warning: {old_name} is deprecated and will be removed in the next version; use {name}"
        for old_name, name in [
            ("--synthetic_maps", "--synthetic_num_maps"), ("--data_seed", "--synthetic_seed"),
            ("--num_workers", "--dataloader_num_workers"),
        ]
    ]  # fmt: skip
    assert (old.synthetic_num_maps, old.synthetic_seed, old.dataloader_num_workers) == (3, 5, 2)
    assert data_source_from_args(old) == data_source_from_args(new)
    assert data_source_from_args(new).first_map_id == 10001  # the commands' held-out cities
    assert "--synthetic_maps" not in parser._subparsers._group_actions[0].choices["evaluate"].format_help()

    training = argparse.ArgumentParser()
    training.add_argument("--seed", type=int, default=42)
    add_data_arguments(training, training=True)
    args = training.parse_args(["--synthetic_num_maps", "6", "--synthetic_num_tx", "2"])
    source = data_source_from_args(args)
    assert (source.synthetic_maps, source.synthetic_tx, source.seed, source.resolution) == (6, 2, 42, 64)
    assert data_source_from_args(training.parse_args(["--synthetic_seed", "7"])).seed == 7
    with pytest.raises(SystemExit):
        training.parse_args(["--synthetic_maps", "6"])  # the training scripts never had the old names


def test_build_datasets_holds_out_synthetic_cities_and_collate_stacks_the_keys():
    from functools import partial

    from radiodiff_vae.data.batches import collate_maps

    source = DataSource(synthetic_maps=3, synthetic_tx=2, resolution=SIZE, seed=4, show_progress=False)
    data = build_datasets(source, num_validation_maps=2, max_train_samples=5)
    assert len(data.train) == 5 and len(data.validation) == 2 and data.test is None
    assert [data.validation[index]["name"] for index in range(2)] == ["4_0", "5_0"]  # cities 4, 5: after 1..3
    assert data.label == "synthetic" and "held-out" in data.validation_kind
    items = [data.train[index] for index in range(2)]
    batch = partial(collate_maps, keys=("pixel_values", "buildings", "transmitter"))(items)
    assert {key: tuple(value.shape) for key, value in batch.items() if key != "name"} == {
        key: (2, 1, SIZE, SIZE) for key in ("pixel_values", "buildings", "transmitter")
    }
    assert batch["name"] == [items[0]["name"], items[1]["name"]] and batch["transmitter"].sum() == 2
    assert set(collate_maps(items)) == {"pixel_values", "name"}
    with pytest.raises(DataError, match="0 training and 2 validation maps"):
        build_datasets(source, num_validation_maps=2, max_train_samples=0)
