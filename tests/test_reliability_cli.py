"""The ``radiodiff-vae`` commands on bad input (issue 16), each run as a separate process (tests/process_runner.py):
one line ``radiodiff-vae COMMAND: error: ...``, exit code 2, no traceback, nothing written. Plus the quiet surprises:
``decode`` reports the pixels it clipped, ``RadioVAE.encode`` warns on unscaled input, and the model-loading errors
of ``RadioVAE.from_pretrained``."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from process_runner import OFFLINE, ProcessRunner, assert_one_line_error, snapshot
from radiodiff_vae import RadioVAE
from radiodiff_vae.cli.codec import save_latents
from radiodiff_vae.data import split_map_ids, write_synthetic_folder
from radiodiff_vae.errors import ModelFileError

SIZE = 32
NUM_MAPS = 12


@pytest.fixture(scope="module")
def runner():
    return ProcessRunner()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A tiny model, a bad model of each kind, a synthetic RadioMapSeer folder and a latents file."""
    root = tmp_path_factory.mktemp("shared")
    torch.manual_seed(0)
    model = RadioVAE.from_preset("tiny", sample_size=SIZE)
    model.save_pretrained(root / "model")
    config = json.loads((root / "model" / "config.json").read_text())
    weights = (root / "model" / "diffusion_pytorch_model.safetensors").read_bytes()
    bad_configs = {"latent_channels": "three", "block_out_channels": 64, "num_downsamples": 2.5, "norm_num_groups": 0}
    for key, value in bad_configs.items():
        (root / f"bad-{key}").mkdir()
        (root / f"bad-{key}" / "config.json").write_text(json.dumps({**config, key: value}))
        (root / f"bad-{key}" / "diffusion_pytorch_model.safetensors").write_bytes(weights)
    (root / "list-config").mkdir()
    (root / "list-config" / "config.json").write_text("[1, 2]")
    (root / "unet").mkdir()
    (root / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 32}))

    write_synthetic_folder(root / "data", num_maps=NUM_MAPS, num_tx=1, resolution=SIZE, show_progress=False)
    latents = torch.randn(2, 3, SIZE // 8, SIZE // 8) * 40  # far out: the decoder saturates
    save_latents(str(root / "latents.safetensors"), latents, ["a.png", "b.png"], 1.0, 0.0)
    (root / "afile").write_text("not a folder")
    (root / "notes.txt").write_text("not a checkpoint")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "picture.png")
    return root


def _data_copy(shared: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic folder, and the path of the gain map of its last training map."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(shared / "data", data)
    last = split_map_ids(list(range(1, NUM_MAPS + 1)), "train", "disjoint")[-1]
    return data / "gain" / "synthetic" / f"{last}_0.png"


def _rgb(path: Path) -> None:
    Image.open(path).convert("RGB").save(path)


def _not_an_image(path: Path) -> None:
    path.write_text("not an image")


def _other_size(path: Path) -> None:
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(path)


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


EVALUATE_DATA = ["--data_dir", "data", "--simulation", "synthetic", "--split", "train", "--split_scheme", "disjoint"]

# name -> (argv with {shared}, words the line must hold)
CASES = {
    "evaluate_output_under_a_file": (["evaluate", "{shared}/model", "--output_dir", "{shared}/afile/out"], "is a file"),
    "encode_output_under_a_file": (
        ["encode", "{shared}/model", "--output", "{shared}/afile/x.safetensors"], "--output '{shared}/afile'"
    ),
    "decode_output_under_a_file": (
        ["decode", "{shared}/model", "{shared}/latents.safetensors", "--output_dir", "{shared}/afile/maps"],
        "is a file, not a folder",
    ),
    "make_synthetic_out_under_a_file": (["make-synthetic", "--out", "{shared}/afile/syn"], "--out '{shared}/afile/syn'"),
    "convert_output_under_a_file": (
        ["convert-original", "{shared}/notes.txt", "--output_dir", "{shared}/afile/vae"], "is a file, not a folder"
    ),
    "convert_text_file": (
        ["convert-original", "{shared}/notes.txt", "--output_dir", "vae"], "notes.txt is not a PyTorch checkpoint"
    ),
    "convert_png_file": (
        ["convert-original", "{shared}/picture.png", "--output_dir", "vae"], "(it looks like a PNG image)"
    ),
    "model_missing_local_folder": (["evaluate", "./no-such-model", "--output_dir", "out"], "'./no-such-model' does not exist"),
    "model_config_is_a_list": (["evaluate", "{shared}/list-config", "--output_dir", "out"], "holds a JSON list"),
    "model_unet_folder": (
        ["evaluate", "{shared}/unet", "--output_dir", "out"], "holds a UNet2DModel (config.json _class_name)"
    ),
    **{
        f"model_config_{key}": (["evaluate", f"{{shared}}/bad-{key}", "--output_dir", "out"], words)
        for key, words in [
            ("latent_channels", "bad-latent_channels does not build a RadioVAE: TypeError"),
            ("block_out_channels", "bad-block_out_channels does not build a RadioVAE: TypeError"),
            ("num_downsamples", "num_downsamples must be an integer, got 2.5"),
            ("norm_num_groups", "bad-norm_num_groups does not build a RadioVAE: ZeroDivisionError"),
        ]
    },
    "unknown_flag": (
        ["evaluate", "{shared}/model", "--output_dir", "out", "--output_dri", "x"], "unrecognized arguments: --output_dri"
    ),
}
# name -> (damage to the last training map, command, words)
DATA_CASES = {
    "evaluate_rgb_gain_map": (_rgb, "evaluate", "is a mode-RGB image; expected single-channel 8-bit grey gain maps"),
    "encode_rgb_gain_map": (_rgb, "encode", "is a mode-RGB image; expected single-channel 8-bit grey gain maps"),
    "evaluate_not_an_image": (_not_an_image, "evaluate", "cannot be read as an image"),
    "evaluate_other_size": (_other_size, "evaluate", "is 16x16 pixels but"),
    "encode_other_size": (_other_size, "encode", "is 16x16 pixels but"),
    "evaluate_truncated_png": (_truncated, "evaluate", "cannot be read as an image (image file is truncated"),
    "encode_truncated_png": (_truncated, "encode", "cannot be read as an image (image file is truncated"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_writes_nothing(case, runner, shared, tmp_path):
    argv, words = CASES[case]
    argv = [arg.replace("{shared}", str(shared)) for arg in argv]
    before = snapshot(tmp_path), snapshot(shared)
    finished = runner.cli(argv, tmp_path, environment=OFFLINE)
    # argparse reports an unknown flag from the top-level parser
    prefix = "radiodiff-vae: error: " if case == "unknown_flag" else f"radiodiff-vae {argv[0]}: error: "
    assert_one_line_error(finished, words.replace("{shared}", str(shared)), prefix=prefix)
    assert (snapshot(tmp_path), snapshot(shared)) == before


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_map_file_is_named_in_one_line(case, runner, shared, tmp_path):
    damage, command, words = DATA_CASES[case]
    bad_file = _data_copy(shared, tmp_path)
    damage(bad_file)
    if command == "encode":
        # --input_dir: the folder of gain maps itself
        argv = ["encode", shared / "model", "--input_dir", bad_file.parent, "--output", "latents.safetensors"]
    else:
        argv = ["evaluate", shared / "model", "--output_dir", "out", "--no_figure"] + EVALUATE_DATA
    before = snapshot(tmp_path)
    finished = runner.cli(argv, tmp_path, environment=OFFLINE)
    # a map that fails while the model works through the maps comes after the progress bar's lines
    finished.output = "\n".join(line for line in re.split(r"[\r\n]+", finished.output) if not re.match(r"\w+: +\d+%\|", line))
    line = assert_one_line_error(finished, words, prefix=f"radiodiff-vae {command}: error: ")
    assert str(bad_file.relative_to(tmp_path)) in line
    assert snapshot(tmp_path) == before


def test_decode_counts_the_pixels_it_clips(runner, shared, tmp_path):
    argv = ["decode", shared / "model", shared / "latents.safetensors", "--output_dir", "maps"]
    finished = runner.cli(argv, tmp_path, environment=OFFLINE)
    assert finished.code == 0, finished.output
    (report,) = [line for line in finished.lines if line.startswith("wrote 2 maps")]
    clipped, total = (int(word) for word in report.split("; ")[1].split(" pixels")[0].split(" of "))
    assert total == 2 * SIZE * SIZE and 0 < clipped <= total
    pixels = np.concatenate([np.asarray(Image.open(path)).ravel() for path in sorted((tmp_path / "maps").iterdir())])
    assert clipped <= int(((pixels == 0) | (pixels == 255)).sum())  # every clipped pixel became 0 or 255


def test_encode_warns_once_about_unscaled_input():
    import warnings

    vae = RadioVAE.from_preset("tiny", sample_size=SIZE).eval()
    pixels = torch.randint(0, 256, (1, 1, SIZE, SIZE)).float()  # 0..255, not [-1, 1]
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("default")  # Python's: once per calling line
        for _ in range(3):
            vae.encode(pixels)
        vae.encode(pixels / 127.5 - 1)  # scaled: no warning
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 1 and "values in [0, 255]; it expects [-1, 1]" in messages[0], messages


def test_from_pretrained_names_the_problem(shared, tmp_path):
    from diffusers import AutoencoderKL

    with pytest.raises(FileNotFoundError, match="no such folder"):
        RadioVAE.from_pretrained(str(tmp_path / "missing"))
    with pytest.raises(NotADirectoryError, match="expected a model folder with config.json"):
        RadioVAE.from_pretrained(str(shared / "model" / "config.json"))
    AutoencoderKL(block_out_channels=(32,), norm_num_groups=8).save_pretrained(tmp_path / "kl")
    with pytest.raises(ValueError, match=r"holds an AutoencoderKL .*diffusers.AutoencoderKL.from_pretrained"):
        RadioVAE.from_pretrained(tmp_path / "kl")
    with pytest.raises(ModelFileError, match="bad-norm_num_groups does not build a RadioVAE: ZeroDivisionError"):
        RadioVAE.from_pretrained(shared / "bad-norm_num_groups")
    assert RadioVAE.from_pretrained(shared / "model").config.sample_size == SIZE


def test_an_internal_error_in_a_command_keeps_its_traceback(tmp_path, monkeypatch):
    """A ValueError that no input check raised is a bug: ``radiodiff-vae`` lets it through (traceback, exit code 1)
    instead of printing it as the user's mistake; a typed input error of the same command stays one line."""
    from radiodiff_vae import cli
    from radiodiff_vae.cli import make_synthetic
    from radiodiff_vae.errors import InvalidArgumentError

    def broken(args):
        raise ValueError("internal bug in make-synthetic")

    monkeypatch.setattr(make_synthetic, "run", broken)
    with pytest.raises(ValueError, match="internal bug in make-synthetic"):
        cli.main(["make-synthetic", "--out", str(tmp_path / "maps")])

    def refuses(args):
        raise InvalidArgumentError("--maps must be >= 1, got 0")

    monkeypatch.setattr(make_synthetic, "run", refuses)
    assert cli.main(["make-synthetic", "--out", str(tmp_path / "maps")]) == 2
