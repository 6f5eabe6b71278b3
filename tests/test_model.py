"""RadioVAE: shapes of every preset, AutoencoderKL compatibility, API behaviour, saving and bad input."""

import json
import os
import re

import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.models.attention_processor import Attention

from radiodiff_vae import PRESETS, RadioVAE
from radiodiff_vae.errors import InvalidArgumentError


def tiny(**overrides) -> RadioVAE:
    torch.manual_seed(0)
    return RadioVAE.from_preset("tiny", **overrides).eval()


def maps(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, size, size, generator=generator) * 2 - 1


def autoencoder_kl_like_f4(block_out_channels=(128, 256, 512), norm_num_groups=32) -> AutoencoderKL:
    """diffusers' AutoencoderKL built with the numbers of the `radiodiff-ldm-f4` preset."""
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        latent_channels=3,
        block_out_channels=block_out_channels,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=2,
        norm_num_groups=norm_num_groups,
    )


def test_presets_are_listed():
    assert set(PRESETS) == {"radiodiff-vae", "radiodiff-ldm-f4", "tiny", "tiny-f4"}


def test_quick_start_preset_is_tiny_narrower_with_two_downsamplings():
    model = RadioVAE.from_preset("tiny-f4").eval()
    assert {**PRESETS["tiny"], "block_out_channels": (16, 32, 64), "num_downsamples": 2} == PRESETS["tiny-f4"]
    assert model.downsample_factor == 4 and model.latent_shape(64, 64) == (3, 16, 16)
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 64, 64)).sample.shape == (2, 1, 64, 64)


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset, latent_size, factor", [("radiodiff-vae", 40, 8), ("radiodiff-ldm-f4", 80, 4)]
)
def test_full_presets_at_report_size(preset, latent_size, factor):
    model = RadioVAE() if preset == "radiodiff-vae" else RadioVAE.from_preset(preset)
    assert model.downsample_factor == factor
    with torch.no_grad():
        posterior = model.encode(torch.zeros(1, 1, 320, 320)).latent_dist
        assert posterior.mean.shape == posterior.std.shape == (1, 3, latent_size, latent_size)
        assert model.decode(posterior.mean).sample.shape == (1, 1, 320, 320)


@pytest.mark.slow
def test_default_constructor_is_the_report_preset():
    default, preset = dict(RadioVAE().config), dict(RadioVAE.from_preset("radiodiff-vae").config)
    default.pop("_use_default_values"), preset.pop("_use_default_values")
    assert default == preset
    model = RadioVAE()
    assert isinstance(model.encoder.down_blocks[-1].downsamplers[0].conv, torch.nn.Conv2d)
    assert isinstance(model.decoder.up_blocks[0].upsamplers[0].conv, torch.nn.ConvTranspose2d)
    assert model.quant_conv.kernel_size == (1, 1) and model.post_quant_conv.kernel_size == (1, 1)
    assert not any(isinstance(module, Attention) for module in model.modules())
    assert any(isinstance(module, Attention) for module in RadioVAE.from_preset("radiodiff-ldm-f4").modules())


def test_decoder_mirrors_the_encoder_level_by_level():
    model = tiny()
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = output.shape[-1]

        return hook

    for index, block in enumerate(model.encoder.down_blocks):
        block.resnets[-1].register_forward_hook(record(f"encoder.{index}"))
    for index, block in enumerate(model.decoder.up_blocks):
        block.resnets[-1].register_forward_hook(record(f"decoder.{index}"))
    with torch.no_grad():
        model(torch.zeros(1, 1, 64, 64))
    # encoder levels run at 64, 32, 16; decoder levels at 16, 32, 64: resnets at full resolution on both sides
    assert [seen[f"encoder.{i}"] for i in range(3)] == [64, 32, 16]
    assert [seen[f"decoder.{i}"] for i in range(3)] == [16, 32, 64]


def test_ldm_f4_state_dict_is_autoencoder_kl():
    with torch.device("meta"):  # full size, no memory or init cost: keys and shapes only
        reference, model = autoencoder_kl_like_f4(), RadioVAE.from_preset("radiodiff-ldm-f4")
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }


def test_ldm_f4_layout_loads_into_autoencoder_kl_and_back():
    # the same layout with small channel counts, so that loading and forwarding stay cheap
    # float64: the decoder's upsampling sums its 3x3 taps in another order (NearestConvUpsample2D), so the two agree
    # to rounding; in double that is ~1e-13, far below what a wrong layout or weight would show
    small = dict(block_out_channels=(32, 64, 64), norm_num_groups=8)
    reference = autoencoder_kl_like_f4(**small).eval().double()
    model = RadioVAE.from_preset("radiodiff-ldm-f4", **small).eval().double()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = maps(1, 16).double()
    with torch.no_grad():
        torch.testing.assert_close(model(x).sample, reference(x).sample, rtol=0, atol=1e-10)
    other = RadioVAE.from_preset("radiodiff-ldm-f4", **small).eval().double()
    reference.load_state_dict(other.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(other(x).sample, reference(x).sample, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nearest_conv_upsample_is_upsample2d_at_input_resolution(dtype):
    from diffusers.models.upsampling import Upsample2D

    from radiodiff_vae.models.upsampling import NearestConvUpsample2D

    torch.manual_seed(0)
    fused = NearestConvUpsample2D(3, out_channels=5).to(dtype)
    reference = Upsample2D(3, use_conv=True, out_channels=5).to(dtype)
    assert fused.state_dict().keys() == reference.state_dict().keys() == {"conv.weight", "conv.bias"}
    reference.load_state_dict(fused.state_dict())
    x = torch.randn(2, 3, 5, 7, dtype=dtype)  # odd, non-square: every border case of the four phases
    grad = torch.randn(2, 5, 10, 14, dtype=dtype)
    outputs, gradients = [], []
    for module in (fused, reference):
        inputs = x.clone().requires_grad_(True)
        out = module(inputs)
        outputs.append(out)
        gradients.append(torch.autograd.grad(out, [inputs, module.conv.weight, module.conv.bias], grad))
    tolerance = dict(rtol=0, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    assert outputs[0].shape == (2, 5, 10, 14)
    torch.testing.assert_close(outputs[0], outputs[1], **tolerance)
    for fused_grad, reference_grad in zip(*gradients):
        torch.testing.assert_close(fused_grad, reference_grad, **tolerance)


def test_ldm_f4_decoder_upsamples_at_input_resolution():
    from radiodiff_vae.models.upsampling import NearestConvUpsample2D

    model = RadioVAE.from_preset("radiodiff-ldm-f4", block_out_channels=(32, 64, 64), norm_num_groups=8)
    upsamplers = [block.upsamplers[0] for block in model.decoder.up_blocks if block.upsamplers]
    assert len(upsamplers) == 2 and all(isinstance(module, NearestConvUpsample2D) for module in upsamplers)
    report = RadioVAE.from_preset("tiny")
    assert not any(isinstance(module, NearestConvUpsample2D) for module in report.modules())


@pytest.mark.parametrize("height, width", [(32, 32), (256 // 4, 256 // 8), (40, 24)])
def test_tiny_shapes_for_any_multiple_of_the_factor(height, width):
    model = tiny()
    x = torch.zeros(3, 1, height, width)
    with torch.no_grad():
        posterior = model.encode(x).latent_dist
        assert posterior.mean.shape == (3, 3, height // 8, width // 8)
        assert model.latent_shape(height, width) == (3, height // 8, width // 8)
        assert model(x).sample.shape == x.shape


def test_return_dict_false_and_posterior():
    model = tiny()
    x = maps()
    with torch.no_grad():
        (posterior,) = model.encode(x, return_dict=False)
        (decoded,) = model.decode(posterior.mode(), return_dict=False)
        assert model(x, return_dict=False)[0].shape == decoded.shape
        sample, returned = model(x, return_dict=False, return_posterior=True)
        torch.testing.assert_close(returned.mean, posterior.mean)
        torch.testing.assert_close(sample, decoded)
        output = model(x, return_posterior=True)
        assert output.latent_dist is not None and model(x).latent_dist is None


def test_sampling_is_repeatable_with_a_generator():
    model = tiny()
    x = maps()
    with torch.no_grad():
        first = model(x, sample_posterior=True, generator=torch.Generator().manual_seed(1)).sample
        second = model(x, sample_posterior=True, generator=torch.Generator().manual_seed(1)).sample
        third = model(x, sample_posterior=True, generator=torch.Generator().manual_seed(2)).sample
        mode = model(x).sample
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not torch.equal(first, third)
    assert not torch.equal(first, mode)


def test_slicing_matches_batched():
    model = tiny()
    x = maps(3)
    with torch.no_grad():
        batched = model(x).sample
        model.enable_slicing()
        sliced = model(x).sample
        model.disable_slicing()
    torch.testing.assert_close(sliced, batched, rtol=1e-5, atol=1e-5)


def test_tiling_blend_is_exact_for_local_functions():
    model = tiny(sample_size=16)
    x = maps(1, 40)
    # an identity-like function is reproduced exactly whatever the overlaps
    torch.testing.assert_close(model._tiled(x, lambda t: 2 * t, 16, 1.0), 2 * x)
    # a downsampling function: the blend of 8x average pools equals the pool of the whole map
    pooled = model._tiled(x, lambda t: torch.nn.functional.avg_pool2d(t, 8), 16, 1 / 8)
    torch.testing.assert_close(pooled, torch.nn.functional.avg_pool2d(x, 8))
    upsampled = model._tiled(pooled, lambda t: t.repeat_interleave(8, -1).repeat_interleave(8, -2), 2, 8)
    torch.testing.assert_close(upsampled, pooled.repeat_interleave(8, -1).repeat_interleave(8, -2))


def test_tiling_runs_on_maps_larger_than_a_tile():
    model = tiny(sample_size=16)
    x = maps(1, 48)
    with torch.no_grad():
        plain = model(x).sample
        model.enable_tiling()
        tiled = model(x).sample
        model.disable_tiling()
    assert tiled.shape == plain.shape and torch.isfinite(tiled).all()
    assert not torch.equal(tiled, plain)  # the tiles really were used


def test_gradient_checkpointing_gives_the_same_gradients():
    x = maps()

    def gradients(checkpointing: bool):
        model = tiny().train()
        if checkpointing:
            model.enable_gradient_checkpointing()
        model(x).sample.square().mean().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain, checkpointed = gradients(False), gradients(True)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6)


def test_last_layer_is_the_decoder_output_conv_and_gets_gradients():
    model = tiny()
    assert model.get_last_layer() is model.decoder.conv_out.weight
    model(maps()).sample.mean().backward()
    assert model.get_last_layer().grad is not None and model.get_last_layer().grad.abs().sum() > 0


def test_save_and_load_are_bit_identical(tmp_path):
    model = tiny(scaling_factor=0.3)
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "diffusion_pytorch_model.safetensors"]
    loaded = RadioVAE.from_pretrained(tmp_path).eval()
    assert loaded.config.scaling_factor == 0.3
    x = maps()
    with torch.no_grad():
        assert torch.equal(model(x).sample, loaded(x).sample)
    half = RadioVAE.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())


def test_weights_of_another_architecture_do_not_load(tmp_path):
    tiny().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["block_out_channels"] = [16, 32, 64]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="decoder.conv_in.bias expected shape"):  # diffusers' own check
        RadioVAE.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"block_out_channels": ()}, "num_downsamples must be between 0 and len(block_out_channels)=0, got 3"),
        ({"num_downsamples": 4}, "num_downsamples must be between 0 and len(block_out_channels)=3, got 4"),
        ({"upsample_type": "bilinear"}, "upsample_type must be one of ('conv_transpose', 'nearest'), got 'bilinear'"),
        ({"upsample_position": "middle"}, "upsample_position must be one of ('first', 'last'), got 'middle'"),
        ({"norm_num_groups": 7}, "divisible by norm_num_groups=7, got [32, 64, 128]"),
        ({"sample_size": 60}, "RadioVAE config sample_size is 60, not divisible by the model's downsampling factor 8"),
    ],
)
def test_architectures_that_build_no_network_name_the_key(overrides, message):
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        RadioVAE.from_preset("tiny", **overrides)


def test_unknown_preset_or_key_is_named():
    with pytest.raises(ValueError, match="Unknown RadioVAE preset 'huge'"):
        RadioVAE.from_preset("huge")
    with pytest.raises(ValueError, match=r"Unknown RadioVAE config key\(s\) \['blocks_out'\]"):
        RadioVAE.from_preset("tiny", blocks_out=(1,))


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(1, 32, 32), "4-D"),
        (torch.zeros(1, 3, 32, 32), "1 channel"),
        (torch.zeros(1, 1, 36, 32), "the map size is 36x32, not divisible by the model's downsampling factor 8"),
        (torch.zeros(1, 1, 0, 32), "the map size is 0x32, which has a zero side"),
        (torch.full((1, 1, 32, 32), float("nan")), "non-finite"),
        (torch.zeros(1, 1, 32, 32, dtype=torch.long), "floating-point"),
        (torch.zeros(0, 1, 32, 32), "empty batch"),
    ],
)
def test_bad_maps_are_rejected(bad, message):
    with pytest.raises(InvalidArgumentError, match=message):
        tiny().encode(bad)


def test_bad_latents_are_rejected():
    with pytest.raises(InvalidArgumentError, match="3 channel"):
        tiny().decode(torch.zeros(1, 4, 4, 4))
    with pytest.raises(InvalidArgumentError, match="non-finite"):
        tiny().decode(torch.full((1, 3, 4, 4), float("inf")))
