"""🤗 datasets: convert a RadioMapSeer-layout folder, save_to_disk, load back, same items as the folder (offline)."""

import warnings

import pytest
import torch

from radiodiff_vae.data import HFRadioMaps, RadioMapSeer, load_radio_dataset, radiomapseer_to_hf, write_synthetic_folder

NUM_MAPS, NUM_TX, SIZE = 30, 2, 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("rms_for_hf")
    return write_synthetic_folder(root, NUM_MAPS, NUM_TX, seed=1, resolution=SIZE, show_progress=False)


@pytest.fixture(scope="module")
def saved(folder, tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf_cache")
    converted = radiomapseer_to_hf(folder, "synthetic", split_scheme="disjoint", cache_dir=cache)
    path = tmp_path_factory.mktemp("hf_saved") / "radio_maps"
    converted.save_to_disk(str(path))
    return converted, path


def test_conversion_has_the_image_feature_and_columns(saved):
    import datasets

    converted, _ = saved
    assert list(converted) == ["train", "validation", "test"]
    train = converted["train"]
    assert isinstance(train.features["image"], datasets.Image)
    assert isinstance(train.features["buildings"], datasets.Image)
    assert set(train.column_names) == {"image", "buildings", "transmitter", "map", "tx", "simulation", "name"}
    row = train[0]
    assert row["image"].mode == "L" and row["image"].size == (SIZE, SIZE)
    assert row["simulation"] == "synthetic" and row["name"] == f"{row['map']}_{row['tx']}"


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_saved_dataset_loads_back_with_the_folder_items(folder, saved, split):
    _, path = saved
    loaded = load_radio_dataset(path, split=split)
    reference = RadioMapSeer(folder, "synthetic", split, "disjoint")
    assert isinstance(loaded, HFRadioMaps) and len(loaded) == len(reference)
    for index in (0, len(loaded) - 1):
        item, expected = loaded[index], reference[index]
        assert item["name"] == expected["name"] and item["simulation"] == "synthetic"
        for key in ("pixel_values", "buildings", "transmitter"):
            assert torch.equal(item[key], expected[key]), key
    resized = load_radio_dataset(path, split=split, resolution=48)[0]
    assert resized["pixel_values"].shape == (1, 48, 48) and resized["transmitter"].sum() == 1.0


def test_single_split_conversion_and_loading_rules(folder, tmp_path):
    with pytest.warns(UserWarning, match="also training maps"):
        test_split = radiomapseer_to_hf(folder, "synthetic", split="test", split_scheme="radiodiff", cache_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = RadioMapSeer(folder, "synthetic", "test", "radiodiff")
    assert test_split.num_rows == len(expected)
    assert test_split["name"] == [f"{m}_{t}" for m, t in expected.items]
    test_split.save_to_disk(str(tmp_path / "test_only"))
    assert len(load_radio_dataset(tmp_path / "test_only", split="test")) == len(expected)
    with pytest.raises(ValueError, match="holds only the split 'test'"):
        load_radio_dataset(tmp_path / "test_only", split="train")


def test_radiomapseer_folder_loads_directly(folder):
    with pytest.warns(UserWarning, match="also training maps"):
        dataset = load_radio_dataset(folder, split="val", simulation="synthetic")
    assert isinstance(dataset, RadioMapSeer) and dataset.split == "val" and dataset.split_scheme == "radiodiff"
    disjoint = load_radio_dataset(folder, split="val", simulation="synthetic", split_scheme="disjoint", flip=True)
    assert disjoint.split_scheme == "disjoint" and disjoint.build_item.flip


def test_no_split_takes_a_folder_whole(folder):
    """split=None takes the source whole, as documented: every map of a RadioMapSeer-layout folder."""
    whole = load_radio_dataset(folder, split=None, simulation="synthetic")
    assert isinstance(whole, RadioMapSeer) and whole.split == "all" and len(whole) == NUM_MAPS * NUM_TX
    assert len(load_radio_dataset(folder, split="all", simulation="synthetic")) == NUM_MAPS * NUM_TX


def test_bad_requests_name_what_is_wrong(saved, tmp_path):
    converted, path = saved
    with pytest.raises(ValueError, match="image_column 'gain' is not a column"):
        HFRadioMaps(converted["train"], image_column="gain")
    with pytest.raises(ValueError, match="holds the splits"):
        load_radio_dataset(path, split=None)
    with pytest.raises(ValueError, match="split must be one of"):
        load_radio_dataset(path, split="dev")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_radio_dataset(tmp_path / "missing" / "dataset")
    with pytest.raises(FileNotFoundError, match="simulations found"):
        radiomapseer_to_hf(tmp_path, "synthetic")


def test_a_plain_image_folder_loads_with_defaults_for_missing_columns(tmp_path):
    import numpy as np
    from PIL import Image

    (tmp_path / "maps" / "train").mkdir(parents=True)
    for index in range(3):
        gain = np.full((16, 16), 40, dtype=np.uint8)
        gain[index + 2, 5] = 200  # the brightest pixel stands for the transmitter
        Image.fromarray(gain).save(tmp_path / "maps" / "train" / f"{index}.png")
    dataset = load_radio_dataset(tmp_path / "maps", split="train", cache_dir=tmp_path / "cache")
    assert isinstance(dataset, HFRadioMaps) and len(dataset) == 3
    item = dataset[1]
    row = int(item["transmitter"][0].sum(dim=1).argmax())
    assert item["transmitter"].sum() == 1.0 and row in (2, 3, 4)
    assert item["buildings"].sum() == 0.0 and item["simulation"] == "unknown"
    expected = torch.tensor([40.0, 200.0]) / 255.0 * 2.0 - 1.0
    assert torch.allclose(item["pixel_values"].unique(), expected)


def test_sixteen_bit_maps_are_refused_not_clipped(tmp_path):
    import datasets
    import numpy as np
    from PIL import Image

    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 40_000, dtype=np.uint16)).save(path)
    table = datasets.Dataset.from_dict({"image": [str(path)]}, features=datasets.Features({"image": datasets.Image()}))
    with pytest.raises(ValueError, match="expected an 8-bit image.*mode 'I;16'"):
        HFRadioMaps(table)[0]
