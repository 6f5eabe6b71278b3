"""RadioMapSeer loader on tiny folders in RadioMapSeer's layout written by the synthetic writer."""

import random
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from radiodiff_vae.cli import main as cli_main
from radiodiff_vae.data import RadioMapSeer, SyntheticRadioMaps, split_map_ids, write_synthetic_folder
from radiodiff_vae.data.layout import antenna_path, gain_path

NUM_MAPS, NUM_TX, SIZE, SEED = 30, 2, 32, 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("radiomapseer")
    return write_synthetic_folder(root, NUM_MAPS, NUM_TX, seed=SEED, resolution=SIZE, show_progress=False)


def _open(root, split="train", scheme="disjoint", **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return RadioMapSeer(root, "synthetic", split, scheme, **kwargs)


@pytest.mark.parametrize("scheme", ["radiodiff", "disjoint"])
def test_split_membership_follows_the_rule(folder, scheme):
    ids = list(range(1, NUM_MAPS + 1))
    datasets = {split: _open(folder, split, scheme) for split in ("train", "val", "test")}
    for split, dataset in datasets.items():
        assert dataset.map_ids == split_map_ids(ids, split, scheme)
        assert len(dataset) == NUM_TX * len(dataset.map_ids)
        # Items run map by map in the shuffled order, every transmitter of a map together.
        assert dataset.items == [(map_id, tx) for map_id in dataset.map_ids for tx in range(NUM_TX)]
    train, val, test = (set(datasets[split].map_ids) for split in ("train", "val", "test"))
    assert train | val | test == set(ids)  # every map present lands in a split
    if scheme == "disjoint":
        assert not train & val and not train & test and not val & test
    else:
        assert val <= train  # the original overlap, reproduced


def test_radiodiff_scheme_warns_about_its_overlap(folder):
    with pytest.warns(UserWarning, match="validation maps .* are also training maps"):
        RadioMapSeer(folder, "synthetic", "val", "radiodiff")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RadioMapSeer(folder, "synthetic", "val", "disjoint")


def test_items_equal_the_files_and_the_in_memory_generator(folder):
    dataset = _open(folder, "train")
    memory = SyntheticRadioMaps(NUM_MAPS, NUM_TX, seed=SEED, resolution=SIZE, show_progress=False)
    for index in (0, len(dataset) - 1):
        item = dataset[index]
        map_id, tx = dataset.items[index]
        assert item["name"] == f"{map_id}_{tx}" and item["simulation"] == "synthetic"
        grey = np.asarray(Image.open(gain_path(folder, "synthetic", map_id, tx)), dtype=np.float32)
        assert torch.equal(item["pixel_values"][0], torch.from_numpy(grey / 255.0 * 2.0 - 1.0))
        assert item["pixel_values"].min() >= -1.0 and item["pixel_values"].max() <= 1.0
        assert torch.all(item["pixel_values"][item["buildings"] > 0] == -1.0)
        reference = memory[(map_id - 1) * NUM_TX + tx]
        for key in ("pixel_values", "buildings", "transmitter"):
            assert torch.equal(item[key], reference[key]), key


def test_flip_mirrors_gain_buildings_and_transmitter_together(folder):
    plain = _open(folder)[0]
    flipping = _open(folder, flip=True)
    random.seed(0)
    seen = set()
    for _ in range(16):
        item = flipping[0]
        mirrored = torch.equal(item["pixel_values"], plain["pixel_values"].flip(-1))
        if not mirrored:
            assert torch.equal(item["pixel_values"], plain["pixel_values"])
        for key in ("buildings", "transmitter"):
            assert torch.equal(item[key], plain[key].flip(-1) if mirrored else plain[key])
        seen.add(mirrored)
    assert seen == {True, False}


@pytest.mark.parametrize("resolution", [48, 320])
def test_resize(folder, resolution):
    native = _open(folder)[1]
    item = _open(folder, resolution=resolution)[1]
    for key in ("pixel_values", "buildings", "transmitter"):
        assert item[key].shape == (1, resolution, resolution)
    assert item["pixel_values"].min() >= -1.0 and item["pixel_values"].max() <= 1.0
    assert set(item["buildings"].unique().tolist()) <= {0.0, 1.0}
    assert item["buildings"].mean().item() == pytest.approx(native["buildings"].mean().item(), abs=0.03)
    assert item["pixel_values"].mean().item() == pytest.approx(native["pixel_values"].mean().item(), abs=0.03)
    # The transmitter stays one pixel, at its scaled position.
    assert item["transmitter"].sum() == 1.0
    row, col = divmod(int(native["transmitter"].argmax()), SIZE)
    scaled = divmod(int(item["transmitter"].argmax()), resolution)
    assert scaled == (int((row + 0.5) * resolution / SIZE), int((col + 0.5) * resolution / SIZE))


def test_missing_files_fail_at_construction_naming_the_path(folder, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    map_id = _open(broken).map_ids[2]
    gain_path(broken, "synthetic", map_id, 1).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{map_id}_1\.png.*RadioMapSeer's layout"):
        _open(broken)
    assert len(_open(broken, num_tx=1)) == len(_open(folder, num_tx=1))  # transmitter 1 is not asked for
    antenna_path(broken, map_id, 0).unlink()
    with pytest.raises(FileNotFoundError, match=rf"antennas.{map_id}_0\.png"):
        _open(broken, num_tx=1)
    with pytest.raises(FileNotFoundError, match=r"gain.synthetic.\d+_2\.png"):
        _open(folder, num_tx=3)
    with pytest.raises(FileNotFoundError, match="is not a directory.*buildings_complete"):
        _open(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"simulations found under .*\['synthetic'\]"):
        RadioMapSeer(folder, "IRT4", "train", "disjoint")


def test_bad_arguments_are_rejected_before_reading(folder, tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        _open(folder, "dev")
    with pytest.raises(ValueError, match="split_scheme must be one of"):
        _open(folder, "train", "random")
    with pytest.raises(ValueError, match="num_tx"):
        _open(folder, num_tx=0)
    # Map 1 sits in the training part of the shuffle, so the test split of a folder holding only map 1 is empty.
    assert split_map_ids([1], "test", "disjoint") == []
    single = write_synthetic_folder(tmp_path / "one", 1, 1, resolution=16, show_progress=False)
    with pytest.raises(ValueError, match="holds none of the 1 maps"):
        _open(single, "test")


def test_make_synthetic_command_writes_a_readable_folder(tmp_path, capsys):
    out = tmp_path / "cli"
    arguments = ["make-synthetic", "--out", str(out), "--maps", "4", "--tx", "2", "--seed", "7", "--resolution", "32"]
    assert cli_main(arguments) == 0
    assert "wrote 8 radio maps" in capsys.readouterr().out
    written = sorted(path.name for path in (out / "gain" / "synthetic").iterdir())
    assert written == [f"{m}_{t}.png" for m in range(1, 5) for t in range(2)]
    assert (out / "synthetic.json").is_file()
    memory = SyntheticRadioMaps(4, 2, seed=7, resolution=32, show_progress=False)
    for split in ("train", "val", "test"):
        try:
            dataset = _open(out, split)
        except ValueError:  # a split of 4 maps can be empty
            continue
        for index in range(len(dataset)):
            map_id, tx = dataset.items[index]
            assert torch.equal(dataset[index]["pixel_values"], memory[(map_id - 1) * 2 + tx]["pixel_values"])

    # A second run into the same folder stops before touching a file; bad flags name themselves.
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*.png")}
    assert cli_main(arguments) == 2
    assert "already holds radio-map files" in capsys.readouterr().err
    assert before == {path: path.stat().st_mtime_ns for path in out.rglob("*.png")}
    assert cli_main(["make-synthetic", "--out", str(tmp_path / "x"), "--tx", "0"]) == 2
    assert "--tx must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_overwrite_replaces_an_earlier_synthetic_folder_and_protects_others(tmp_path):
    out = write_synthetic_folder(tmp_path / "syn", 5, 2, seed=0, resolution=16, show_progress=False)
    write_synthetic_folder(out, 2, 1, seed=4, resolution=16, overwrite=True, show_progress=False)
    assert sorted(path.name for path in (out / "gain" / "synthetic").iterdir()) == ["1_0.png", "2_0.png"]
    assert sorted(path.name for path in (out / "png" / "antennas").iterdir()) == ["1_0.png", "2_0.png"]
    assert sorted(path.name for path in (out / "png" / "buildings_complete").iterdir()) == ["1.png", "2.png"]
    memory = SyntheticRadioMaps(2, 1, seed=4, resolution=16, show_progress=False)
    assert torch.equal(_open(out, "train")[0]["pixel_values"], memory[0]["pixel_values"])

    # A RadioMapSeer-like root (building images, no synthetic.json) is never written into.
    foreign = tmp_path / "rms"
    (foreign / "png" / "buildings_complete").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(foreign / "png" / "buildings_complete" / "1.png")
    before = (foreign / "png" / "buildings_complete" / "1.png").read_bytes()
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="buildings_complete"):
            write_synthetic_folder(foreign, 1, 1, resolution=16, overwrite=overwrite, show_progress=False)
    assert (foreign / "png" / "buildings_complete" / "1.png").read_bytes() == before
    assert not (foreign / "gain").exists()


def test_skip_missing_takes_the_transmitters_present(folder, tmp_path):
    """A folder holding some transmitters of some maps (a second trace of a subset): what is there is read."""
    partial = shutil.copytree(folder, tmp_path / "partial")
    gain_path(partial, "synthetic", 2, 1).unlink()
    for tx in range(NUM_TX):
        gain_path(partial, "synthetic", 3, tx).unlink()
    with pytest.raises(FileNotFoundError, match="missing gain map"):
        _open(partial, "all")
    present = _open(partial, "all", skip_missing=True)
    assert len(present) == NUM_MAPS * NUM_TX - 3 and 3 not in present.map_ids and present.num_tx == NUM_TX
    assert "2_0" in present.names and "2_1" not in present.names and present.names == [item["name"] for item in present]
    assert len(_open(partial, "all", skip_missing=True, num_tx=1)) == NUM_MAPS - 1
