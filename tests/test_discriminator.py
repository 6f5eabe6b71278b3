"""NLayerDiscriminator and ActNorm: layout, original key names, initialisation, ActNorm's data-dependent start."""

import pytest
import torch
import torch.nn as nn

from radiodiff_vae import NLayerDiscriminator
from radiodiff_vae.models.discriminator import ActNorm


def maps(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, size, size, generator=generator) * 2 - 1


def test_default_layout_matches_the_report_and_the_original_keys():
    torch.manual_seed(0)
    discriminator = NLayerDiscriminator()
    convs = [module for module in discriminator.main if isinstance(module, nn.Conv2d)]
    channels = [(conv.in_channels, conv.out_channels) for conv in convs]
    assert channels == [(1, 64), (64, 128), (128, 256), (256, 512), (512, 1)]
    assert [conv.stride for conv in convs] == [(2, 2), (2, 2), (2, 2), (1, 1), (1, 1)]
    assert all(conv.kernel_size == (4, 4) and conv.padding == (1, 1) for conv in convs)
    # Bias only where no BatchNorm follows (the first and the last conv).
    assert [conv.bias is not None for conv in convs] == [True, False, False, False, True]
    leaky = [module for module in discriminator.main if isinstance(module, nn.LeakyReLU)]
    assert len(leaky) == 4 and all(module.negative_slope == 0.2 for module in leaky)
    # The CompVis/RadioDiff discriminator's state dict names (loss.discriminator.main.*), so checkpoints convert.
    expected = ["main.0.weight", "main.0.bias", "main.2.weight"]
    for norm, next_conv in ((3, 5), (6, 8), (9, 11)):
        buffers = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        expected += [f"main.{norm}.{name}" for name in buffers]
        expected.append(f"main.{next_conv}.weight")
    expected.append("main.11.bias")
    assert list(discriminator.state_dict()) == expected


def test_actnorm_variant_keeps_conv_biases_and_original_names():
    discriminator = NLayerDiscriminator(use_actnorm=True)
    keys = set(discriminator.state_dict())
    assert {"main.3.loc", "main.3.scale", "main.3.initialized", "main.2.bias", "main.8.bias"} <= keys
    assert not any("running_mean" in key for key in keys)


@pytest.mark.parametrize("size, num_layers, expected", [(32, 3, 2), (64, 3, 6), (40, 3, 3), (24, 3, 1), (64, 2, 14)])
def test_patch_logits_shape(size: int, num_layers: int, expected: int):
    discriminator = NLayerDiscriminator(base_channels=8, num_layers=num_layers)
    assert discriminator(maps(3, size)).shape == (3, 1, expected, expected)


def test_initialisation_follows_n_0_002():
    torch.manual_seed(0)
    discriminator = NLayerDiscriminator()
    big = discriminator.main[8].weight  # 512 x 256 x 4 x 4 weights
    assert abs(big.mean().item()) < 1e-3
    assert big.std().item() == pytest.approx(0.02, rel=0.01)
    for index in (3, 6, 9):
        norm = discriminator.main[index]
        assert norm.weight.mean().item() == pytest.approx(1.0, abs=0.01)
        assert 0.01 < norm.weight.std().item() < 0.03
        assert torch.count_nonzero(norm.bias) == 0
    assert torch.count_nonzero(discriminator.main[0].bias) == 0


def test_actnorm_initialises_from_the_first_training_batch_only():
    torch.manual_seed(0)
    norm = ActNorm(4)
    batch = torch.randn(8, 4, 5, 5) * torch.tensor([1.0, 2.0, 0.5, 3.0]).view(1, 4, 1, 1) + 7.0
    out = norm(batch)
    assert norm.initialized.item() == 1
    per_channel = out.transpose(0, 1).reshape(4, -1)
    torch.testing.assert_close(per_channel.mean(dim=1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(dim=1), torch.ones(4), atol=1e-4, rtol=0)
    # A second batch is normalised with the stored values, not its own statistics.
    loc, scale = norm.loc.detach().clone(), norm.scale.detach().clone()
    norm(batch * 10)
    torch.testing.assert_close(norm.loc.detach(), loc)
    torch.testing.assert_close(norm.scale.detach(), scale)


def test_actnorm_in_eval_mode_does_not_initialise_and_reloaded_flags_count():
    norm = ActNorm(2).eval()
    batch = torch.randn(4, 2, 3, 3) + 5
    torch.testing.assert_close(norm(batch), batch)  # identity before initialisation
    assert norm.initialized.item() == 0

    trained = ActNorm(2)
    trained(batch)
    fresh = ActNorm(2)
    fresh.load_state_dict(trained.state_dict())
    fresh(batch * 3 - 1)  # the loaded flag says initialised: no re-initialisation
    torch.testing.assert_close(fresh.scale, trained.scale)

    # Loading an uninitialised state into a layer that has run makes it initialise again on the next batch.
    trained.load_state_dict(ActNorm(2).state_dict())
    assert trained.initialized.item() == 0
    trained(batch * 3 - 1)
    assert trained.initialized.item() == 1
    assert not torch.allclose(trained.scale, fresh.scale)


def test_save_and_load_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    discriminator = NLayerDiscriminator(base_channels=8, use_actnorm=True)
    discriminator(maps())  # initialise ActNorm
    discriminator.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = NLayerDiscriminator.from_pretrained(tmp_path)
    assert loaded.config.use_actnorm and loaded.config.base_channels == 8
    discriminator.eval()
    loaded.eval()
    torch.testing.assert_close(loaded(maps(seed=1)), discriminator(maps(seed=1)))


@pytest.mark.parametrize(
    "sample, message",
    [
        (torch.zeros(2, 3, 32, 32), r"\(B, 1, H, W\), got \(2, 3, 32, 32\)"),
        (torch.zeros(32, 32), r"got \(32, 32\)"),
        (torch.zeros(1, 1, 16, 64), r"at least 24x24 pixels, got 16x64"),
    ],
)
def test_bad_input_is_refused(sample: torch.Tensor, message: str):
    with pytest.raises(ValueError, match=message):
        NLayerDiscriminator(base_channels=8)(sample)


@pytest.mark.parametrize("argument", [dict(num_layers=0), dict(base_channels=2.5), dict(in_channels=True)])
def test_bad_configuration_is_refused(argument: dict):
    with pytest.raises(ValueError, match="must be a positive integer"):
        NLayerDiscriminator(**argument)
