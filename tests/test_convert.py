"""Conversion of original RadioDiff checkpoints: formats, names, shapes, outputs against the original architecture;
and the way back, ``export-original``: the original's key set, the bit-exact round trip, refusals in one line.

``OriginalAutoencoderKL`` below re-implements the first stage of the original code (CompVis latent diffusion, as
configured by RadioDiff: ch 128, ch_mult (1, 2, 4), 2 resnets per level, no attention except the mid blocks, z 3,
1 channel in and out) with the ORIGINAL module names, so its state dict is what RadioDiff's trainer saved.
"""

import argparse
import os
import re
import stat
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file

from process_runner import ProcessRunner

from radiodiff_vae import NLayerDiscriminator, RadioVAE, RadioVAELoss
from radiodiff_vae.cli import main as cli_main
from radiodiff_vae.conversion.original import (
    CONVERTED_SCALING_FACTOR,
    convert_original_checkpoint,
    export_original_checkpoint,
    load_original_checkpoint,
    load_training_state,
    to_original_state_dict,
)
from radiodiff_vae.errors import ModelFileError
from process_runner import OFFLINE, assert_one_line_error, snapshot

CH, CH_MULT, NUM_RES_BLOCKS, Z_CHANNELS = 128, (1, 2, 4), 2, 3


# ------------------------------------------------------------------------------------------------- original model
def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(in_channels), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2, self.conv2 = _norm(out_channels), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions with 1x1-conv projections."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x):
        h = self.norm(x)
        b, c, height, width = x.shape
        q = self.q(h).reshape(b, c, -1).transpose(1, 2)  # (B, HW, C)
        k = self.k(h).reshape(b, c, -1)  # (B, C, HW)
        v = self.v(h).reshape(b, c, -1)  # (B, C, HW)
        weights = torch.softmax(torch.bmm(q, k) * c**-0.5, dim=2)  # (B, HW_q, HW_k)
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(b, c, height, width)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(channels: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1, mid.attn_1 = ResnetBlock(channels, channels), AttnBlock(channels)
    mid.block_2 = ResnetBlock(channels, channels)
    return mid


class Encoder(nn.Module):
    def __init__(self, ch=CH, ch_mult=CH_MULT, num_res_blocks=NUM_RES_BLOCKS, z_channels=Z_CHANNELS, in_channels=1):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in = ch
        for level, mult in enumerate(ch_mult):
            down = nn.Module()
            down.block = nn.ModuleList()
            for _ in range(num_res_blocks):
                down.block.append(ResnetBlock(block_in, ch * mult))
                block_in = ch * mult
            down.attn = nn.ModuleList()
            if level != len(ch_mult) - 1:
                down.downsample = Downsample(block_in)
            self.down.append(down)
        self.mid = _mid(block_in)
        self.norm_out, self.conv_out = _norm(block_in), nn.Conv2d(block_in, 2 * z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for down in self.down:
            for block in down.block:
                h = block(h)
            if hasattr(down, "downsample"):
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, ch=CH, ch_mult=CH_MULT, num_res_blocks=NUM_RES_BLOCKS, z_channels=Z_CHANNELS, out_ch=1):
        super().__init__()
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = _mid(block_in)
        self.up = nn.ModuleList()
        for level in reversed(range(len(ch_mult))):
            up = nn.Module()
            up.block = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                up.block.append(ResnetBlock(block_in, ch * ch_mult[level]))
                block_in = ch * ch_mult[level]
            up.attn = nn.ModuleList()
            if level != 0:
                up.upsample = Upsample(block_in)
            self.up.insert(0, up)  # up[0] is the highest resolution, as in the original
        self.norm_out, self.conv_out = _norm(block_in), nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(range(len(self.up))):
            for block in self.up[level].block:
                h = block(h)
            if level != 0:
                h = self.up[level].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class OriginalAutoencoderKL(nn.Module):
    """``AutoencoderKL(ddconfig, lossconfig, embed_dim)`` of the original code, its network only (the ``loss*``
    modules that the original object also holds are left out); keyword arguments as in a ddconfig."""

    def __init__(self, embed_dim=Z_CHANNELS, z_channels=Z_CHANNELS, in_channels=1, out_ch=1, **ddconfig):
        super().__init__()
        self.encoder = Encoder(z_channels=z_channels, in_channels=in_channels, **ddconfig)
        self.decoder = Decoder(z_channels=z_channels, out_ch=out_ch, **ddconfig)
        self.quant_conv = nn.Conv2d(2 * z_channels, 2 * embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)

    def encode_moments(self, x):
        return self.quant_conv(self.encoder(x))  # (B, 2 z, H/4, W/4): mean and log-variance

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


def _original_discriminator_state() -> "OrderedDict[str, torch.Tensor]":
    """taming's NLayerDiscriminator(input_nc=1, ndf=64, n_layers=3) with BatchNorm: the names of loss.discriminator.*"""
    layers = [nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2)]
    for previous, current, stride in ((64, 128, 2), (128, 256, 2), (256, 512, 1)):
        layers += [nn.Conv2d(previous, current, 4, stride, 1, bias=False), nn.BatchNorm2d(current), nn.LeakyReLU(0.2)]
    layers.append(nn.Conv2d(512, 1, 4, 1, 1))
    main = nn.Sequential(*layers)
    for module in main:
        if isinstance(module, nn.BatchNorm2d):  # statistics as after training, so that buffers are checked too
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(1234)
    return OrderedDict((f"main.{key}", value) for key, value in main.state_dict().items())


# ------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def original():
    torch.manual_seed(0)
    model = OriginalAutoencoderKL().eval()
    with torch.no_grad():
        for module in model.modules():  # non-trivial norms, so that a swapped norm weight shows in the outputs
            if isinstance(module, nn.GroupNorm):
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)
    return model


@pytest.fixture(scope="module")
def original_state(original):
    state = OrderedDict(original.state_dict())
    state["loss.logvar"] = torch.tensor(0.25)
    for key, value in _original_discriminator_state().items():
        state[f"loss.discriminator.{key}"] = value
    # LPIPS and the two loss variants of the original code: present in real checkpoints, skipped by a conversion.
    for prefix in ("loss.", "loss_pinn.", "loss_pinn_dpm2irt4."):
        state[f"{prefix}perceptual_loss.net.slice1.0.weight"] = torch.randn(64, 3, 3, 3)
        state[f"{prefix}perceptual_loss.lin0.model.1.weight"] = torch.randn(1, 64, 1, 1)
    for prefix in ("loss_pinn.", "loss_pinn_dpm2irt4."):
        state[f"{prefix}logvar"] = torch.tensor(0.0)
        state[f"{prefix}discriminator.main.0.weight"] = torch.randn(64, 1, 4, 4)
    return state


@pytest.fixture(scope="module")
def trainer_file(original_state, tmp_path_factory):
    """The trainer's dict on disk, written once: live weights, EMA copies, optimizer and scheduler states."""
    path = tmp_path_factory.mktemp("original") / "model-50.pt"
    torch.save(_trainer_checkpoint(original_state), path)
    return path


def _trainer_checkpoint(state, ema_state=None):
    ema_state = ema_state if ema_state is not None else state
    ema = OrderedDict()
    ema["initted"], ema["step"] = torch.tensor(True), torch.tensor(1000)
    for key, value in ema_state.items():
        ema[f"online_model.{key}"] = state[key]
        ema[f"ema_model.{key}"] = value
    return {
        "step": 1000,
        "model": state,
        "opt_ae": {"state": {}, "param_groups": [{"lr": 5e-6, "params": [0, 1]}]},
        "lr_scheduler_ae": {"last_epoch": 1000, "base_lrs": [5e-6]},
        "opt_disc": {"state": {}, "param_groups": [{"lr": 5e-6, "params": [0]}]},
        "lr_scheduler_disc": {"last_epoch": 1000, "base_lrs": [5e-6]},
        "ema": ema,
        "scaler": None,
    }


# ------------------------------------------------------------------------------------------------- independent name map
def _expected_name(original_name: str) -> str:
    """CompVis -> diffusers AutoencoderKL names, written out here independently of diffusers' converter."""
    name = original_name
    levels = len(CH_MULT)
    name = re.sub(r"^encoder\.down\.(\d+)\.block\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2.", name)
    name = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", name)
    name = re.sub(r"^decoder\.up\.(\d+)\.block\.(\d+)\.", lambda m: f"decoder.up_blocks.{levels - 1 - int(m[1])}.resnets.{m[2]}.", name)
    name = re.sub(r"^decoder\.up\.(\d+)\.upsample\.", lambda m: f"decoder.up_blocks.{levels - 1 - int(m[1])}.upsamplers.0.", name)
    name = re.sub(r"\.mid\.block_(\d)\.", lambda m: f".mid_block.resnets.{int(m[1]) - 1}.", name)
    attention = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
    name = re.sub(r"\.mid\.attn_1\.(\w+)\.", lambda m: f".mid_block.attentions.0.{attention[m[1]]}.", name)
    name = name.replace("nin_shortcut", "conv_shortcut")
    name = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", name)
    return name


def _assert_every_tensor_in_place(result, vae_state):
    converted = result.model.state_dict()
    expected_names = {_expected_name(name): name for name in vae_state}
    assert set(converted) == set(expected_names), "converted keys differ from the architecture's"
    for new_name, original_name in expected_names.items():
        assert result.name_map[new_name] == original_name
        assert torch.equal(converted[new_name], vae_state[original_name].reshape(converted[new_name].shape)), new_name


# ------------------------------------------------------------------------------------------------- tests
def test_vae_names(original):
    assert "encoder.mid.attn_1.q.weight" in original.state_dict()
    assert "decoder.up.2.upsample.conv.weight" in original.state_dict()
    assert "decoder.up.0.block.2.conv2.weight" in original.state_dict()  # 3 decoder resnets per level


@pytest.mark.parametrize("form", ["trainer", "trainer_ema", "lightning", "bare", "ddp_bare", "safetensors", "ldm_first_stage"])
def test_every_format_puts_every_tensor_in_place(original_state, trainer_file, form, tmp_path):
    vae_state = OrderedDict((k, v) for k, v in original_state.items() if not k.startswith(("loss.", "loss_pinn")))
    if form == "trainer":
        checkpoint = None  # read from trainer_file
    elif form == "trainer_ema":
        # EMA weights differ from the live ones: the conversion must take exactly the EMA copy.
        ema_state = OrderedDict((k, v + 1.0 if v.is_floating_point() else v) for k, v in original_state.items())
        checkpoint = _trainer_checkpoint(original_state, ema_state)
        vae_state = OrderedDict((k, ema_state[k]) for k in vae_state)
    elif form == "lightning":
        checkpoint = {"state_dict": original_state, "global_step": 77, "epoch": 3}
    elif form == "bare":
        checkpoint = original_state
    elif form == "ddp_bare":
        checkpoint = OrderedDict((f"module.{k}", v) for k, v in original_state.items())
    elif form == "safetensors":
        checkpoint = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in original_state.items()}, checkpoint)
    else:  # a whole latent-diffusion model: the first stage sits under first_stage_model.
        first_stage = {f"first_stage_model.{k}": v for k, v in vae_state.items()}
        checkpoint = {"state_dict": {**first_stage, "model.diffusion_model.input_blocks.0.0.weight": torch.ones(2)}}
    # The trainer's file goes through torch.load(weights_only=True); the other forms are handed over in memory.
    source = trainer_file if form == "trainer" else checkpoint
    result = convert_original_checkpoint(source, use_ema=form == "trainer_ema")

    assert result.loaded_with_weights_only
    assert result.model.config.scaling_factor == CONVERTED_SCALING_FACTOR
    _assert_every_tensor_in_place(result, vae_state)
    if form == "ldm_first_stage":
        assert result.discriminator is None and result.logvar is None
        assert result.skipped == {"outside first_stage_model.": 1}  # the diffusion model's tensor, counted
        return
    assert result.source_format == {"trainer": "trainer", "trainer_ema": "trainer", "lightning": "lightning"}.get(form, "state_dict")
    assert result.step == {"trainer": 1000, "trainer_ema": 1000, "lightning": 77}.get(form)
    assert result.weights == ("ema/ema_model." if form == "trainer_ema" else result.weights)
    # Nothing dropped silently: LPIPS and the loss variants are counted, the trainer's other entries too.
    assert result.skipped["loss.perceptual_loss."] == 2
    assert result.skipped["loss_pinn."] == 4 and result.skipped["loss_pinn_dpm2irt4."] == 4
    if form.startswith("trainer"):
        assert {"opt_ae", "opt_disc", "lr_scheduler_ae", "lr_scheduler_disc", "scaler"} <= set(result.skipped)
    expected_logvar = 1.25 if form == "trainer_ema" else 0.25
    assert result.logvar.shape == () and result.logvar.item() == expected_logvar
    taken = ema_state if form == "trainer_ema" else original_state
    prefix = "loss.discriminator."
    source = {k[len(prefix):]: v for k, v in taken.items() if k.startswith(prefix)}
    discriminator_state = result.discriminator.state_dict()
    assert discriminator_state.keys() == source.keys()
    for key, value in source.items():
        assert torch.equal(discriminator_state[key], value.to(discriminator_state[key].dtype)), key


def test_converted_model_matches_the_original_forward(original, original_state, trainer_file, tmp_path):
    result = convert_original_checkpoint(trainer_file, output_dir=tmp_path / "converted")
    vae = RadioVAE.from_pretrained(tmp_path / "converted")  # through the written folder, as a user loads it
    assert vae.config.scaling_factor == CONVERTED_SCALING_FACTOR and vae.downsample_factor == 4

    generator = torch.Generator().manual_seed(1)
    # 16x16 keeps the CPU time small and still gives the mid-block attention 4x4 = 16 positions to mix.
    x = torch.rand(2, 1, 16, 16, generator=generator) * 2 - 1
    z = torch.randn(2, 3, 4, 4, generator=generator)
    with torch.no_grad():
        moments = original.encode_moments(x)
        posterior = vae.encode(x).latent_dist
        reference_mean, reference_logvar = moments.chunk(2, dim=1)
        torch.testing.assert_close(posterior.mean, reference_mean, rtol=0, atol=1e-4)
        torch.testing.assert_close(posterior.logvar, reference_logvar.clamp(-30, 20), rtol=0, atol=1e-4)
        torch.testing.assert_close(vae.decode(z).sample, original.decode(z), rtol=0, atol=1e-4)
        reconstruction = vae(x, sample_posterior=False).sample
        torch.testing.assert_close(reconstruction, original.decode(reference_mean), rtol=0, atol=1e-4)
    assert reconstruction.abs().max() > 1e-2  # a non-trivial output, not two zeros

    # The folder: model, card, discriminator and logvar for continued training.
    folder = tmp_path / "converted"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["config.json", "diffusion_pytorch_model.safetensors", "README.md", "discriminator.safetensors", "logvar.safetensors"]
    )
    assert load_file(folder / "logvar.safetensors")["logvar"].item() == 0.25
    discriminator_file = load_file(folder / "discriminator.safetensors")
    assert discriminator_file.keys() == NLayerDiscriminator().state_dict().keys()
    for key, value in discriminator_file.items():
        assert torch.equal(value, original_state[f"loss.discriminator.{key}"].to(value.dtype)), key
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "model-50.pt" in card and "weights taken from `model`" in card and "training step 1000" in card
    assert "| preset | `radiodiff-ldm-f4` |" in card
    assert result.output_dir == folder

    # Continued training: the state loads strictly into the package's loss (LPIPS off: no VGG weights needed).
    criterion = RadioVAELoss(perceptual_weight=0.0)
    load_training_state(criterion, folder)
    assert criterion.logvar.item() == 0.25
    for key, value in criterion.discriminator.state_dict().items():
        assert torch.equal(value, original_state[f"loss.discriminator.{key}"].to(value.dtype)), key
    mismatched = RadioVAELoss(perceptual_weight=0.0, disc_num_layers=2, logvar_init=-1.0)
    before = {key: value.clone() for key, value in mismatched.state_dict().items()}
    with pytest.raises(ValueError, match="num_layers=3.*num_layers=2"):
        load_training_state(mismatched, folder)
    assert all(torch.equal(before[key], value) for key, value in mismatched.state_dict().items())  # untouched


def test_shape_mismatch_names_the_first_tensor(original_state):
    state = OrderedDict(original_state)
    state["encoder.down.1.block.0.conv1.weight"] = torch.zeros(256, 128, 1, 1)
    with pytest.raises(ValueError, match=r"Shape mismatch: 'encoder\.down\.1\.block\.0\.conv1\.weight' has shape \(256, 128, 1, 1\)"):
        convert_original_checkpoint(state)
    # z_channels 4 instead of 3: caught at the first tensor that carries it.
    state = OrderedDict(original_state)
    state["encoder.conv_out.weight"] = torch.zeros(8, 512, 3, 3)
    with pytest.raises(ValueError, match=r"'encoder\.conv_out\.weight' has shape \(8, 512, 3, 3\)"):
        convert_original_checkpoint(state)


def test_missing_leftover_and_unknown_tensors_are_named(original_state):
    missing = OrderedDict((k, v) for k, v in original_state.items() if k != "decoder.up.0.block.2.conv2.bias")
    with pytest.raises(ValueError, match=r"lacks 1 tensor\(s\).*'decoder\.up_blocks\.2\.resnets\.2\.conv2\.bias'"):
        convert_original_checkpoint(missing)
    extra = OrderedDict(original_state)
    extra["decoder.up.0.block.3.conv2.bias"] = torch.zeros(128)  # a 4th resnet: another architecture
    with pytest.raises(ValueError, match=r"'decoder\.up\.0\.block\.3\.conv2\.bias'"):
        convert_original_checkpoint(extra)
    unknown = OrderedDict(original_state)
    unknown["colorize"] = torch.zeros(3, 5, 1, 1)
    with pytest.raises(ValueError, match=r"no known part.*'colorize'"):
        convert_original_checkpoint(unknown)
    with pytest.raises(ValueError, match="no 'ema'"):
        convert_original_checkpoint({"model": original_state, "step": 3}, use_ema=True)


def test_pickled_objects_need_trust(original_state, tmp_path):
    path = tmp_path / "with_objects.ckpt"
    torch.save({**_trainer_checkpoint(original_state), "args": argparse.Namespace(lr=5e-6)}, path)
    with pytest.raises(ValueError, match=r"weights_only=True\) refused it.*--trust_pickle"):
        load_original_checkpoint(path)
    loaded, weights_only = load_original_checkpoint(path, trust_pickle=True)
    assert not weights_only and loaded["args"].lr == 5e-6
    with pytest.raises(FileNotFoundError, match="nothing.ckpt"):
        load_original_checkpoint(tmp_path / "nothing.ckpt")


def test_cli_convert_original(trainer_file, tmp_path, capsys):
    path = trainer_file
    output = tmp_path / "vae"
    umask = os.umask(0o027)
    try:
        assert cli_main(["convert-original", str(path), "--output_dir", str(output), "--use_ema", "--no_training_state"]) == 0
    finally:
        os.umask(umask)
    # the umask's permissions, as every other command's output (not mkdtemp's 0o700 nor safetensors' 0o600)
    assert stat.S_IMODE(output.stat().st_mode) == 0o750
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in output.iterdir()} == dict.fromkeys(
        ["README.md", "config.json", "diffusion_pytorch_model.safetensors"], 0o640
    )
    printed = capsys.readouterr().out
    assert "ema/ema_model." in printed and str(output) in printed
    assert sorted(p.name for p in output.iterdir()) == ["README.md", "config.json", "diffusion_pytorch_model.safetensors"]
    assert RadioVAE.from_pretrained(output).config.scaling_factor == CONVERTED_SCALING_FACTOR

    # Refusals come before any work and leave the existing folder as it was.
    before = sorted(p.name for p in output.iterdir())
    assert cli_main(["convert-original", str(path), "--output_dir", str(output)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in output.iterdir()) == before
    assert cli_main(["convert-original", str(tmp_path / "missing.ckpt"), "--output_dir", str(tmp_path / "x")]) == 2
    assert "missing.ckpt" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left behind


# ------------------------------------------------------------------------------------------------- export-original
# The network of the original first stage as RadioDiff configures it (ch 128, ch_mult (1, 2, 4), 2 resnets, z 3, 1
# channel in and out), counted from its Encoder / Decoder (denoising_diffusion_pytorch/encoder_decoder.py): a resnet
# has 8 tensors (+2 for nin_shortcut when its channels change), the mid block 26 (two resnets, GroupNorm and four
# 1x1 convs), each downsample / upsample conv 2. 204 in all.
ORIGINAL_KEY_COUNTS = {
    "encoder.conv_in.": 2, "encoder.down.0.": 18, "encoder.down.1.": 20, "encoder.down.2.": 18, "encoder.mid.": 26,
    "encoder.norm_out.": 2, "encoder.conv_out.": 2,
    "decoder.conv_in.": 2, "decoder.mid.": 26, "decoder.up.0.": 26, "decoder.up.1.": 28, "decoder.up.2.": 26,
    "decoder.norm_out.": 2, "decoder.conv_out.": 2,
    "quant_conv.": 2, "post_quant_conv.": 2,
}  # fmt: skip
ORIGINAL_SHAPES = {
    "encoder.conv_in.weight": (128, 1, 3, 3),
    "encoder.down.0.block.1.norm2.weight": (128,),
    "encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
    "encoder.down.1.downsample.conv.weight": (256, 256, 3, 3),
    "encoder.mid.attn_1.q.weight": (512, 512, 1, 1),  # 1x1 convs, not linear layers
    "encoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
    "encoder.conv_out.weight": (6, 512, 3, 3),
    "decoder.conv_in.weight": (512, 3, 3, 3),
    "decoder.mid.attn_1.v.bias": (512,),
    "decoder.up.2.block.0.conv1.weight": (512, 512, 3, 3),
    "decoder.up.2.upsample.conv.weight": (512, 512, 3, 3),  # NearestConvUpsample2D's conv, unchanged
    "decoder.up.1.block.0.nin_shortcut.weight": (256, 512, 1, 1),
    "decoder.up.0.block.2.conv2.weight": (128, 128, 3, 3),
    "decoder.conv_out.weight": (1, 128, 3, 3),
    "quant_conv.weight": (6, 6, 1, 1),
    "post_quant_conv.weight": (3, 3, 1, 1),
}
# A small layout the original can build: ch 32, ch_mult (1, 1, 2), 1 resnet (2 in the decoder), z 4, 2 channels in.
SMALL = dict(block_out_channels=(32, 32, 64), layers_per_block=1, decoder_layers_per_block=2, latent_channels=4,
             in_channels=2, sample_size=32, scaling_factor=0.625)  # fmt: skip
SMALL_DDCONFIG = {
    "double_z": True, "z_channels": 4, "resolution": [32, 32], "in_channels": 2, "out_ch": 1, "ch": 32,
    "ch_mult": [1, 1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
}  # fmt: skip
LOSS_PREFIXES = ("loss.", "loss_pinn.", "loss_pinn_dpm2irt4.")


def _small_vae():
    torch.manual_seed(3)
    vae = RadioVAE.from_preset("radiodiff-ldm-f4", **SMALL)
    with torch.no_grad():
        for tensor in vae.parameters():  # away from the initialisation, so that every tensor differs from the rest
            tensor.add_(torch.randn_like(tensor) * 0.1)
    return vae


def test_exported_keys_are_the_original_networks():
    with torch.device("meta"):  # the full preset without initialising 55M parameters: names and shapes only
        vae = RadioVAE.from_preset("radiodiff-ldm-f4")
        reference = OriginalAutoencoderKL()
    state, first_stage = to_original_state_dict(vae)
    assert len(state) == 204 == sum(ORIGINAL_KEY_COUNTS.values())
    counts = {prefix: sum(key.startswith(prefix) for key in state) for prefix in ORIGINAL_KEY_COUNTS}
    assert counts == ORIGINAL_KEY_COUNTS
    assert {key: tuple(state[key].shape) for key in ORIGINAL_SHAPES} == ORIGINAL_SHAPES
    assert not any(key.startswith(LOSS_PREFIXES) for key in state)
    # the re-implementation of the original: same names, same order, same shapes
    assert [(key, tuple(value.shape)) for key, value in state.items()] == [
        (key, tuple(value.shape)) for key, value in reference.state_dict().items()
    ]
    assert first_stage == {
        "embed_dim": 3,
        "ddconfig": {
            "double_z": True, "z_channels": 3, "resolution": [320, 320], "in_channels": 1, "out_ch": 1, "ch": 128,
            "ch_mult": [1, 2, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
        },
    }  # fmt: skip


def test_export_then_convert_is_bit_exact(tmp_path, capsys):
    vae = _small_vae()
    vae.save_pretrained(tmp_path / "vae")
    output = tmp_path / "export" / "vae-first-stage.pt"
    assert cli_main(["export-original", str(tmp_path / "vae"), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert f"Wrote {output}: 152 tensors" in printed and "without an 'ema' entry" in printed

    checkpoint = torch.load(output, map_location="cpu", weights_only=True)
    assert list(checkpoint) == ["model"]  # no 'ema' for RadioDiff's init_from_ckpt to prefer
    state = checkpoint["model"]
    # Exactly the tensors of the original network with this ddconfig, strictly loadable into it ...
    reference = OriginalAutoencoderKL(
        embed_dim=4, z_channels=4, in_channels=2, ch=32, ch_mult=(1, 1, 2), num_res_blocks=1
    )
    assert [(key, value.shape) for key, value in state.items()] == [
        (key, value.shape) for key, value in reference.state_dict().items()
    ]
    assert all(value.dtype == torch.float32 and value.is_contiguous() for value in state.values())
    reference.load_state_dict(state, strict=True)
    # ... where it computes what the RadioVAE computes.
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 2, 16, 16, generator=generator) * 2 - 1
    z = torch.randn(2, 4, 4, 4, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(z).sample, reference.decode(z), rtol=0, atol=1e-5)
        mean = reference.encode_moments(x).chunk(2, dim=1)[0]
        torch.testing.assert_close(vae.encode(x).latent_dist.mean, mean, rtol=0, atol=1e-5)

    # The config entries beside it build that network.
    config = yaml.safe_load((tmp_path / "export" / "vae-first-stage.yaml").read_text(encoding="utf-8"))["model"]
    assert config["first_stage"]["ddconfig"] == SMALL_DDCONFIG and config["first_stage"]["embed_dim"] == 4
    assert config["first_stage"]["lossconfig"] == {
        "disc_start": 50001, "kl_weight": 1e-6, "disc_weight": 0.5, "disc_in_channels": 1
    }  # fmt: skip
    assert config["first_stage"]["ckpt_path"] == str(output)
    assert (config["scale_factor"], config["scale_by_std"], config["default_scale"]) == (0.625, True, True)

    # convert-original gives the same model back, bit for bit.
    back = tmp_path / "back"
    argv = ["convert-original", str(output), "--output_dir", str(back), "--sample_size", "32"]
    assert cli_main(argv + ["--scaling_factor", "0.625"]) == 0
    converted = RadioVAE.from_pretrained(back)
    saved = RadioVAE.from_pretrained(tmp_path / "vae").config  # as the JSON config holds it (lists, not tuples)
    assert {key: converted.config[key] for key in SMALL} == {key: saved[key] for key in SMALL}
    ours, theirs = vae.state_dict(), converted.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        assert theirs[key].dtype == value.dtype and torch.equal(theirs[key], value), key
    assert sorted(path.name for path in back.iterdir()) == [
        "README.md", "config.json", "diffusion_pytorch_model.safetensors"
    ]  # fmt: skip


def test_original_checkpoint_round_trip_keeps_the_training_state(original_state, trainer_file, tmp_path, capsys):
    """original -> convert-original -> export-original gives the original's network and loss tensors back."""
    folder = tmp_path / "converted"
    convert_original_checkpoint(trainer_file, output_dir=folder)  # with discriminator.safetensors, logvar.safetensors
    output = tmp_path / "model-50-again.pt"
    assert cli_main(["export-original", str(folder), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "204 tensors of the original RadioDiff AutoencoderKL's network and 23 of its loss" in printed
    checkpoint = torch.load(output, map_location="cpu", weights_only=True)
    assert list(checkpoint) == ["model"]
    state = checkpoint["model"]
    kept = [key for key in original_state if not key.startswith(LOSS_PREFIXES)] + ["loss.logvar"] + [
        key for key in original_state if key.startswith("loss.discriminator.")
    ]
    assert sorted(state) == sorted(kept) and len(state) == 204 + 1 + 22
    for key, value in state.items():
        original = original_state[key]
        assert value.dtype == original.dtype and torch.equal(value, original.reshape(value.shape)), key
    # the discriminator's config reaches the YAML: the original loss builds the same discriminator from it
    config = yaml.safe_load(output.with_suffix(".yaml").read_text(encoding="utf-8"))
    lossconfig = config["model"]["first_stage"]["lossconfig"]
    assert (lossconfig["disc_in_channels"], lossconfig["disc_num_layers"], lossconfig["use_actnorm"]) == (1, 3, False)

    # --no_training_state: the network alone; an existing file is replaced only with --overwrite
    argv = ["export-original", str(folder), "--output", str(output), "--no_training_state"]
    assert cli_main(argv) == 2
    assert "exists" in capsys.readouterr().err
    assert cli_main(argv + ["--overwrite"]) == 0
    state = torch.load(output, map_location="cpu", weights_only=True)["model"]
    assert len(state) == 204 and not any(key.startswith(LOSS_PREFIXES) for key in state)


def test_export_refuses_what_the_original_cannot_build():
    with torch.device("meta"):
        cases = {
            "radiodiff-vae": RadioVAE.from_preset("radiodiff-vae"),
            "channels": RadioVAE.from_preset("radiodiff-ldm-f4", block_out_channels=(64, 96, 128)),
            "groups": RadioVAE.from_preset("radiodiff-ldm-f4", block_out_channels=(32, 64, 128), norm_num_groups=16),
            "no_attention": RadioVAE.from_preset("radiodiff-ldm-f4", mid_block_add_attention=False),
            "decoder_resnets": RadioVAE.from_preset("radiodiff-ldm-f4", decoder_layers_per_block=2),
        }
    expected = {
        "radiodiff-vae": [
            "upsample_type='conv_transpose' (expected 'nearest'", "upsample_position='first' (expected 'last'",
            "num_downsamples=3 (expected 2", "mid_block_add_attention=False (expected True",
            "decoder_layers_per_block=2 (expected 3",
        ],
        "channels": ["block_out_channels=[64, 96, 128] (expected multiples of the first entry"],
        "groups": ["norm_num_groups=16 (expected 32"],
        "no_attention": ["mid_block_add_attention=False (expected True"],
        "decoder_resnets": ["decoder_layers_per_block=2 (expected 3"],
    }  # fmt: skip
    for name, model in cases.items():
        with pytest.raises(ModelFileError) as caught:
            to_original_state_dict(model)
        message = str(caught.value)
        assert "\n" not in message and message.startswith("The original RadioDiff AutoencoderKL cannot build")
        for words in expected[name]:
            assert words in message, (name, message)


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    output = tmp_path / "vae.pt"

    def broken_save(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space left"):
        export_original_checkpoint(_small_vae(), output)
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no half-written temporary file, no YAML
    output.write_bytes(b"an earlier export")
    with pytest.raises(OSError, match="No space left"):
        export_original_checkpoint(_small_vae(), output, overwrite=True)
    assert output.read_bytes() == b"an earlier export" and sorted(p.name for p in tmp_path.iterdir()) == ["vae.pt"]


@pytest.fixture(scope="module")
def runner():
    return ProcessRunner()


@pytest.mark.parametrize(
    "case, output, words",
    [
        ("report_preset", "out.pt", "upsample_type='conv_transpose' (expected 'nearest'"),
        ("tiny", "out.pt", "norm_num_groups=8 (expected 32"),
        ("existing_output", "kept.pt", "--output kept.pt exists; pass --overwrite"),
        ("safetensors", "out.safetensors", "expected a .pt/.ckpt/.pth file"),
    ],
)
def test_cli_refusal_is_one_line_and_writes_nothing(runner, tmp_path, case, output, words):
    preset = {"report_preset": "radiodiff-vae", "tiny": "tiny"}.get(case, "radiodiff-ldm-f4")
    overrides = {} if preset == "tiny" else {"block_out_channels": (32, 32, 64)}
    RadioVAE.from_preset(preset, sample_size=32, **overrides).save_pretrained(tmp_path / "model")
    (tmp_path / "kept.pt").write_bytes(b"the user's original checkpoint")
    before = snapshot(tmp_path)
    finished = runner.cli(["export-original", "model", "--output", output], tmp_path, environment=OFFLINE)
    line = assert_one_line_error(finished, words, prefix="radiodiff-vae export-original: error: ")
    if case in ("report_preset", "tiny"):
        assert "The original RadioDiff AutoencoderKL cannot build this RadioVAE" in line
    assert snapshot(tmp_path) == before  # nothing written, nothing replaced, no temporary file
