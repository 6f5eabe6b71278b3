"""`radiodiff-vae encode` / `decode`: PNG maps -> scaled latents in safetensors -> PNG maps."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from radiodiff_vae import RadioVAE
from radiodiff_vae.cli import main
from radiodiff_vae.cli.codec import load_latents
from radiodiff_vae.data.conventions import model_to_unit

SIZE = 32
SCALING_FACTOR = 0.5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "tiny-vae"
    RadioVAE.from_preset("tiny", scaling_factor=SCALING_FACTOR).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def png_dir(tmp_path):
    folder = tmp_path / "maps"
    folder.mkdir()
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, SIZE)[None, :] * np.ones((SIZE, 1))
    for name in ("3_0", "1_0", "2_5"):
        grey = np.clip(ramp + rng.normal(0, 20, (SIZE, SIZE)), 0, 255).astype(np.uint8)
        Image.fromarray(grey).save(folder / f"{name}.png")
    (folder / "notes.txt").write_text("not a map")
    return folder


def _read_grey(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L"
        return np.asarray(image)


def test_encode_decode_round_trip(model_dir, png_dir, tmp_path, capsys):
    latents_file = tmp_path / "latents.safetensors"
    assert main(["encode", model_dir, "--input_dir", str(png_dir), "--output", str(latents_file), "--batch_size", "2"]) == 0
    latents, metadata = load_latents(str(latents_file))
    names = json.loads(metadata["names"])
    assert names == ["1_0.png", "2_5.png", "3_0.png"]  # sorted, only PNGs
    assert latents.shape == (3, 3, SIZE // 8, SIZE // 8)
    assert float(metadata["scaling_factor"]) == SCALING_FACTOR and metadata["latents_scaled"] == "true"
    assert json.loads(metadata["model_config"])["latent_channels"] == 3
    assert json.loads(metadata["image_size"]) == [SIZE, SIZE]

    # The stored latents are the posterior means times the scaling factor.
    vae = RadioVAE.from_pretrained(model_dir).eval()
    inputs = torch.stack([torch.from_numpy(_read_grey(png_dir / name) / 255.0 * 2 - 1).float()[None] for name in names])
    with torch.no_grad():
        means = vae.encode(inputs).latent_dist.mode()
        expected_maps = vae.decode(means).sample
    assert torch.allclose(latents, means * SCALING_FACTOR, atol=1e-5)

    output = tmp_path / "decoded"
    assert main(["decode", model_dir, str(latents_file), "--output_dir", str(output), "--batch_size", "2"]) == 0
    assert sorted(path.name for path in output.iterdir()) == names
    umask = os.umask(0)
    os.umask(umask)
    assert output.stat().st_mode & 0o777 == 0o777 & ~umask  # the staging folder's 0700 is not kept
    assert latents_file.stat().st_mode & 0o777 == 0o666 & ~umask
    expected_grey = torch.round(model_to_unit(expected_maps.clamp(-1, 1)) * 255).to(torch.uint8)[:, 0].numpy()
    for name, grey in zip(names, expected_grey):
        decoded = _read_grey(output / name)
        assert decoded.shape == (SIZE, SIZE)
        assert np.abs(decoded.astype(int) - grey.astype(int)).max() <= 1  # float rounding at .5 only
    assert not list(tmp_path.glob(".*partial*"))  # staging folder cleaned up


def test_posterior_samples_are_seeded(model_dir, png_dir, tmp_path):
    files = [tmp_path / f"{name}.safetensors" for name in ("a", "b", "c")]
    base = ["encode", model_dir, "--input_dir", str(png_dir), "--sample_posterior"]
    assert main(base + ["--output", str(files[0]), "--seed", "7", "--batch_size", "1"]) == 0
    assert main(base + ["--output", str(files[1]), "--seed", "7", "--batch_size", "3"]) == 0
    assert main(base + ["--output", str(files[2]), "--seed", "8"]) == 0
    first, second, other = (load_latents(str(path))[0] for path in files)
    assert torch.allclose(first, second, atol=1e-6) and not torch.allclose(first, other)


def test_encode_a_synthetic_dataset(model_dir, tmp_path):
    latents_file = tmp_path / "synthetic.safetensors"
    argv = ["encode", model_dir, "--output", str(latents_file), "--synthetic_maps", "1", "--synthetic_tx", "2"]
    assert main(argv + ["--resolution", str(SIZE)]) == 0
    with safe_open(str(latents_file), framework="pt") as handle:
        # held-out cities by default: numbered after any training run's
        assert json.loads(handle.metadata()["names"]) == ["synthetic_10001_0.png", "synthetic_10001_1.png"]
        assert handle.get_tensor("latents").shape == (2, 3, 4, 4)


def test_encode_a_folder_that_is_not_radiomapseer_whole(model_dir, tmp_path):
    """make-synthetic / make-raytraced folders: --split defaults to all, every map is encoded."""
    from radiodiff_vae.data import write_synthetic_folder

    folder = write_synthetic_folder(tmp_path / "maps", num_maps=3, num_tx=2, resolution=SIZE, show_progress=False)
    latents_file = tmp_path / "folder.safetensors"
    assert main(["encode", model_dir, "--output", str(latents_file), "--data_dir", str(folder), "--simulation",
                 "synthetic", "--device", "cpu"]) == 0  # fmt: skip
    latents, metadata = load_latents(str(latents_file))
    assert latents.shape[0] == 6 and len(json.loads(metadata["names"])) == 6
    assert "every map of the folder: --split all" in metadata["source"]


def _last_error(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_encode_bad_input(model_dir, png_dir, tmp_path, capsys):
    output = tmp_path / "out.safetensors"
    encode = ["encode", model_dir, "--output", str(output), "--input_dir"]
    assert main(encode + [str(tmp_path / "missing")]) == 2
    assert "does not exist" in _last_error(capsys)
    (tmp_path / "empty").mkdir()
    assert main(encode + [str(tmp_path / "empty")]) == 2
    assert "holds no .png files" in _last_error(capsys)

    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(png_dir / "0_rgb.png")
    assert main(encode + [str(png_dir)]) == 2
    assert "0_rgb.png is a mode-RGB image; expected single-channel 8-bit grey" in _last_error(capsys)
    (png_dir / "0_rgb.png").unlink()

    Image.fromarray(np.zeros((40, 40), np.uint8)).save(png_dir / "9_big.png")
    assert main(encode + [str(png_dir)]) == 2
    assert "9_big.png is 40x40 pixels but 1_0.png is 32x32" in _last_error(capsys)
    (png_dir / "9_big.png").unlink()

    two_channel = tmp_path / "two-channel"
    RadioVAE.from_preset("tiny", in_channels=2, out_channels=2).save_pretrained(two_channel)
    assert main(["encode", str(two_channel), "--output", str(output), "--input_dir", str(png_dir)]) == 2
    assert "the model takes 2-channel maps but PNG folder" in _last_error(capsys)
    assert not output.exists() and list(tmp_path.glob("*.partial")) == []

    output.write_bytes(b"keep me")
    assert main(encode + [str(png_dir)]) == 2
    assert "--overwrite" in _last_error(capsys) and output.read_bytes() == b"keep me"


def test_decode_bad_input_and_overwrite(model_dir, png_dir, tmp_path, capsys):
    latents_file = tmp_path / "latents.safetensors"
    assert main(["encode", model_dir, "--input_dir", str(png_dir), "--output", str(latents_file)]) == 0
    output = tmp_path / "decoded"
    output.mkdir()
    (output / "1_0.png").write_bytes(b"an older map")
    decode = ["decode", model_dir, str(latents_file), "--output_dir", str(output)]
    assert main(decode) == 2
    assert "already holds 1 of these maps (e.g. 1_0.png)" in _last_error(capsys)
    assert (output / "1_0.png").read_bytes() == b"an older map"
    assert main(decode + ["--overwrite"]) == 0
    assert _read_grey(output / "1_0.png").shape == (SIZE, SIZE)

    assert main(["decode", model_dir, str(tmp_path / "missing.safetensors"), "--output_dir", str(output)]) == 2
    assert "does not exist" in _last_error(capsys)

    # Latents with the wrong channel count, from a file without metadata.
    foreign = tmp_path / "foreign.safetensors"
    save_file({"latents": torch.zeros(2, 4, 4, 4)}, str(foreign))
    foreign_out = tmp_path / "foreign"
    assert main(["decode", model_dir, str(foreign), "--output_dir", str(foreign_out)]) == 2
    assert "does not record its scaling_factor" in _last_error(capsys)
    assert main(["decode", model_dir, str(foreign), "--output_dir", str(foreign_out), "--scaling_factor", "0.5"]) == 2
    assert "decodes 3-channel latents but" in _last_error(capsys) and not foreign_out.exists()

    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    assert main(["decode", model_dir, str(tmp_path / "junk.safetensors"), "--output_dir", str(foreign_out)]) == 2
    assert "cannot be read as a safetensors file" in _last_error(capsys)
