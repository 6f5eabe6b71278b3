"""LPIPS inside RadioVAELoss, without network: the offline failure, and the full path with a local VGG16 trunk.

The trunk file is torchvision's VGG16 with random weights, saved under the name torch looks for, in a temporary
TORCH_HOME: the code cannot tell it from the real file, and the tests check that exactly those weights are used.
"""

import copy
import os
import urllib.error
from pathlib import Path

import huggingface_hub.constants
import lpips
import pytest
import torch
import torchvision

from radiodiff_vae import RadioVAE, RadioVAELoss
from radiodiff_vae.losses.perceptual import ensure_vgg16_trunk, load_lpips_vgg16, vgg16_trunk_path

TRUNK_NAME = "vgg16-397923af.pth"


def maps(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, size, size, generator=generator) * 2 - 1


@pytest.fixture(scope="module")
def trunk_state() -> dict:
    """The `features.*` tensors of a randomly initialised torchvision VGG16 (the real file also holds
    `classifier.*`, which LPIPS does not use; leaving it out saves 470 MB of test writes)."""
    torch.manual_seed(0)
    features = torchvision.models.vgg16(weights=None).features
    return {f"features.{key}": value for key, value in features.state_dict().items()}


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory, trunk_state) -> Path:
    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(trunk_state, home / "hub" / "checkpoints" / TRUNK_NAME)
    return home


@pytest.fixture
def offline(monkeypatch):
    """Downloads fail as on a machine without network; returns the list of attempts."""
    attempts = []

    def no_download(url, dst, *args, **kwargs):
        attempts.append((url, dst, kwargs.get("hash_prefix")))
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return attempts


@pytest.fixture(scope="module")
def criterion(torch_home) -> RadioVAELoss:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(torch_home))
        assert Path(torch.hub.get_dir()) == torch_home / "hub"
        torch.manual_seed(0)
        return RadioVAELoss(perceptual_weight=1.0, disc_base_channels=8, disc_start=0, allow_download=False)


def test_missing_trunk_fails_at_construction_with_a_useful_message(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1 when it was imported
    expected_path = tmp_path / "hub" / "checkpoints" / TRUNK_NAME
    assert vgg16_trunk_path() == expected_path
    with pytest.raises(FileNotFoundError) as error:
        RadioVAELoss()
    message = str(error.value)
    assert str(expected_path) in message and "torch.hub.get_dir()" in message
    assert "perceptual_weight=0" in message and "HF_HUB_OFFLINE is set" in message
    assert offline == []  # failed before any download
    # ... and training without the perceptual term needs no file.
    assert RadioVAELoss(perceptual_weight=0, disc_base_channels=8).perceptual is None


def test_failed_download_is_reported_with_its_cause(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"Downloading it failed \(.*no network in tests.*perceptual_weight=0"):
        ensure_vgg16_trunk()
    url, destination, hash_prefix = offline[0]
    assert url == torchvision.models.VGG16_Weights.IMAGENET1K_V1.url  # the file torchvision would fetch
    assert destination == str(tmp_path / "hub" / "checkpoints" / TRUNK_NAME) and hash_prefix == "397923af"
    assert not os.path.exists(destination)
    with pytest.raises(FileNotFoundError, match=r"allow_download=False"):
        ensure_vgg16_trunk(allow_download=False)
    assert len(offline) == 1


def test_successful_download_lands_where_torch_looks(tmp_path, monkeypatch, torch_home):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    source = torch_home / "hub" / "checkpoints" / TRUNK_NAME
    def fake_download(url: str, dst: str, **kwargs) -> None:
        Path(dst).write_bytes(source.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    assert ensure_vgg16_trunk() == tmp_path / "hub" / "checkpoints" / TRUNK_NAME
    assert (tmp_path / "hub" / "checkpoints" / TRUNK_NAME).stat().st_size == source.stat().st_size


def test_broken_trunk_files_are_refused(tmp_path, monkeypatch, trunk_state):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = tmp_path / "hub" / "checkpoints" / TRUNK_NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<html>captive portal</html>")
    with pytest.raises(ValueError, match=r"is not a readable VGG16 state dict"):
        load_lpips_vgg16()
    torch.save({key: value for key, value in trunk_state.items() if key != "features.28.weight"}, path)
    with pytest.raises(ValueError, match=r"missing \['features.28.weight'\]"):
        load_lpips_vgg16()


def test_lpips_uses_exactly_the_local_trunk_and_the_packaged_heads(criterion, trunk_state):
    network = criterion.perceptual.lpips
    torch.testing.assert_close(network.net.slice1[0].weight, trunk_state["features.0.weight"], rtol=0, atol=0)
    torch.testing.assert_close(getattr(network.net.slice5, "28").bias, trunk_state["features.28.bias"], rtol=0, atol=0)
    heads = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth", map_location="cpu")
    for index in range(5):
        torch.testing.assert_close(getattr(network, f"lin{index}").model[1].weight, heads[f"lin{index}.model.1.weight"])
    assert all(not parameter.requires_grad for parameter in criterion.perceptual.parameters())
    assert criterion.trainable_autoencoder_parameters() == [criterion.logvar]


def test_perceptual_distance_of_single_channel_maps(criterion):
    inputs, other = maps(seed=0), maps(seed=1)
    distance = criterion.perceptual(inputs, other)
    assert distance.shape == (2, 1, 1, 1) and (distance > 0).all()
    assert criterion.perceptual(inputs, inputs).abs().max().item() == 0.0
    # One channel is the three-channel distance of the repeated map.
    three = criterion.perceptual.lpips(inputs.repeat(1, 3, 1, 1), other.repeat(1, 3, 1, 1))
    torch.testing.assert_close(distance, three)
    with pytest.raises(ValueError, match=r"same shape \(B, 1 or 3, H, W\), got \(2, 2, 32, 32\)"):
        criterion.perceptual(torch.zeros(2, 2, 32, 32), torch.zeros(2, 2, 32, 32))


def test_channels_last_trunk_gives_the_contiguous_values_and_gradients(criterion):
    # The trunk runs channels-last for speed; the distance and its gradient are those of the plain lpips network.
    network = criterion.perceptual.lpips
    assert network.net.slice1[0].weight.is_contiguous(memory_format=torch.channels_last)
    reference = copy.deepcopy(network).to(memory_format=torch.contiguous_format)
    assert reference.net.slice1[0].weight.is_contiguous()
    inputs, other = maps(seed=2), maps(seed=3).requires_grad_()
    distance = criterion.perceptual(inputs, other)
    (gradient,) = torch.autograd.grad(distance.sum(), other)
    plain = other.detach().clone().requires_grad_()
    expected = reference(inputs.repeat(1, 3, 1, 1), plain.repeat(1, 3, 1, 1))
    (expected_gradient,) = torch.autograd.grad(expected.sum(), plain)
    assert gradient.is_contiguous() or gradient.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(distance, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-5, atol=1e-7)


def test_generator_objective_with_lpips_passes_gradients_to_the_reconstruction(criterion):
    torch.manual_seed(0)
    vae = RadioVAE.from_preset("tiny")
    inputs = maps()
    out = vae(inputs, sample_posterior=True, return_posterior=True)
    reconstructions = out.sample  # (2, 1, 32, 32), part of the graph
    total, logs = criterion.generator_objective(inputs, reconstructions, out.latent_dist, 0, vae.get_last_layer())
    logs = {key: float(value) for key, value in logs.items()}
    lpips_values = criterion.perceptual(inputs, reconstructions)  # (2, 1, 1, 1)
    assert logs["perceptual"] == pytest.approx(lpips_values.mean().item(), rel=1e-5)
    assert logs["rec"] == pytest.approx(logs["l1"] + logs["mse"] + logs["perceptual"], rel=1e-5)
    assert logs["d_weight"] > 0 and logs["disc_factor"] == 0.5

    # d total / d x_hat (the surrogate's gradient) = pixel term + perceptual term + adversarial term, each computed
    # on its own.
    (total_grad,) = torch.autograd.grad(total, reconstructions, retain_graph=True)
    scale = 1.0 / (torch.exp(criterion.logvar.detach()) * 2)  # / exp(logvar) / B
    difference = (reconstructions - inputs).detach()
    pixel_grad = (torch.sign(difference) + 2 * difference) * scale
    # LPIPS is added to each of the 32 * 32 pixels of its map.
    (perceptual_grad,) = torch.autograd.grad(lpips_values.sum() * 32 * 32 * scale, reconstructions, retain_graph=True)
    g_loss = -criterion.discriminator(reconstructions).mean()
    (adversarial_grad,) = torch.autograd.grad(g_loss * logs["d_weight"] * 0.5, reconstructions, retain_graph=True)
    assert perceptual_grad.abs().sum() > 0 and torch.isfinite(perceptual_grad).all()
    # Where the terms nearly cancel, float32 rounding follows the size of the terms, not of their sum.
    terms = pixel_grad.abs() + perceptual_grad.abs() + adversarial_grad.abs()
    error = (total_grad - (pixel_grad + perceptual_grad + adversarial_grad)).abs()
    assert (error <= 1e-4 * terms + 1e-7).all(), (error / terms).max()


def test_lpips_stays_frozen_in_eval_mode_and_out_of_checkpoints(criterion):
    criterion.train()
    assert criterion.training and criterion.discriminator.training
    assert not criterion.perceptual.lpips.training  # its dropout stays off
    assert not any(module.training for module in criterion.perceptual.lpips.modules())
    state = criterion.state_dict()
    assert not any(key.startswith("perceptual") for key in state)
    assert "log_variance.logvar" in state and "discriminator.main.0.weight" in state
    criterion.load_state_dict(state, strict=True)  # a checkpoint without the frozen network loads strictly
    # ... and so does one that carries it (the keys of the frozen network exist).
    network_state = criterion.perceptual.lpips.state_dict()
    criterion.load_state_dict(dict(state, **{"perceptual.lpips." + key: value for key, value in network_state.items()}))
    with pytest.raises(RuntimeError, match="Unexpected key"):
        criterion.load_state_dict(dict(state, extra=torch.zeros(1)), strict=True)


def test_lpips_under_bf16_autocast_keeps_values_gradients_and_an_fp32_result(criterion):
    # On a GPU the trunk runs under the training step's autocast; its heads and the distance stay fp32.
    inputs, other = maps(seed=4), maps(seed=5).requires_grad_()
    expected = criterion.perceptual(inputs, other)
    (expected_gradient,) = torch.autograd.grad(expected.sum(), other)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        distance = criterion.perceptual(inputs, other)
    (gradient,) = torch.autograd.grad(distance.sum(), other)
    assert distance.dtype == torch.float32 and gradient.dtype == torch.float32
    torch.testing.assert_close(distance, expected, rtol=3e-2, atol=1e-3)  # bf16: 8 bits of mantissa
    cosine = torch.nn.functional.cosine_similarity(gradient.flatten(), expected_gradient.flatten(), dim=0)
    assert cosine > 0.99
