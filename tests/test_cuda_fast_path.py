"""The parts of the CUDA fast path, checked on the CPU against the plain path: channels-last models and maps,
the loss under the step's autocast, gradient checkpointing of the full-resolution levels only, torch.compile's
wiring, the host-side check of the maps, and the one-line CUDA out-of-memory message of examples/train_vae.py."""

import pytest
import torch
from conftest import load_example

from radiodiff_vae import RadioVAE, RadioVAELoss
from radiodiff_vae.errors import MapFileError
from radiodiff_vae.training import NonFiniteGuard, VAEGANStep, compile_for_training

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")
train_vae = load_example("train_vae.py", "train_vae_fast_path")


def _maps(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _one_step(monkeypatch, home, *, channels_last=False, mixed_precision="no", global_step=2):
    """Logs and gradients (autoencoder + logvar, discriminator) of one VAEGANStep micro-batch, without stepping."""
    from accelerate import Accelerator

    from conftest import reset_accelerate_state

    reset_accelerate_state()
    monkeypatch.setenv("TORCH_HOME", str(home))
    accelerator = Accelerator(cpu=True, mixed_precision=mixed_precision)
    torch.manual_seed(0)
    vae = RadioVAE.from_preset("tiny", sample_size=32)
    loss_fn = RadioVAELoss(perceptual_weight=1.0, disc_base_channels=8, disc_start=2, allow_download=False)
    if channels_last:
        vae.to(memory_format=torch.channels_last)
        loss_fn.to(memory_format=torch.channels_last)
    optimizers = [torch.optim.SGD([*vae.parameters(), loss_fn.logvar], lr=0.0)]
    optimizers.append(torch.optim.SGD(loss_fn.discriminator.parameters(), lr=0.0))
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda _: 1.0) for o in optimizers]
    prepared = accelerator.prepare(vae, loss_fn.discriminator, *optimizers, *schedulers)
    step = VAEGANStep(
        accelerator, *prepared[:2], loss_fn, *prepared[2:], NonFiniteGuard(10), channels_last=channels_last
    )
    grads = {}
    hook = lambda name: lambda grad: grads.__setitem__(name, grad.detach().clone())  # noqa: E731
    for name, parameter in [*vae.named_parameters(), ("logvar", loss_fn.logvar)]:
        parameter.register_hook(hook(name))
    for name, parameter in loss_fn.discriminator.named_parameters():
        parameter.register_hook(hook("disc." + name))
    result = step(_maps(), global_step)
    return {key: value.float() for key, value in result.logs.items()}, grads


def test_channels_last_step_has_the_values_and_gradients_of_the_contiguous_step(random_vgg16_home, monkeypatch):
    expected_logs, expected_grads = _one_step(monkeypatch, random_vgg16_home)
    logs, grads = _one_step(monkeypatch, random_vgg16_home, channels_last=True)
    assert set(grads) == set(expected_grads) and any(key.startswith("disc.") for key in grads)
    for key, value in expected_logs.items():
        torch.testing.assert_close(logs[key], value, rtol=1e-4, atol=1e-6, msg=key)
    for key, value in expected_grads.items():
        torch.testing.assert_close(grads[key], value, rtol=1e-3, atol=1e-3 * value.abs().max().item() + 1e-8, msg=key)


def test_bf16_step_computes_the_loss_in_fp32_close_to_the_fp32_step(random_vgg16_home, monkeypatch):
    expected_logs, expected_grads = _one_step(monkeypatch, random_vgg16_home)
    logs, grads = _one_step(monkeypatch, random_vgg16_home, mixed_precision="bf16")
    for key in ("total", "rec", "l1", "mse", "perceptual", "kl", "disc_loss"):
        assert logs[key].dtype == torch.float32
        torch.testing.assert_close(logs[key], expected_logs[key], rtol=5e-2, atol=1e-3, msg=key)
    assert logs["perceptual"] > 0
    for key in ("decoder.conv_out.weight", "encoder.conv_in.weight", "logvar"):
        cosine = torch.nn.functional.cosine_similarity(grads[key].flatten(), expected_grads[key].flatten(), dim=0)
        assert cosine > 0.98, key


def test_full_resolution_checkpointing_recomputes_two_levels_with_the_same_gradients():
    torch.manual_seed(0)
    vae = RadioVAE.from_preset("tiny", sample_size=32)
    maps = _maps()

    def gradients():
        vae.zero_grad(set_to_none=True)
        vae(maps).sample.square().mean().backward()
        return {name: parameter.grad.clone() for name, parameter in vae.named_parameters()}

    expected = gradients()
    vae.enable_gradient_checkpointing(mode="full_resolution")
    checkpointed = []
    original = vae.encoder._gradient_checkpointing_func

    def recording(block, *args):
        checkpointed.append(block)
        return original(block, *args)

    vae.encoder._gradient_checkpointing_func = vae.decoder._gradient_checkpointing_func = recording
    grads = gradients()
    assert checkpointed == [vae.encoder.down_blocks[0], vae.decoder.up_blocks[-1]]
    for name, value in expected.items():
        torch.testing.assert_close(grads[name], value, rtol=1e-5, atol=1e-7, msg=name)
    checkpointed.clear()
    vae.enable_gradient_checkpointing()  # every level again
    vae.encoder._gradient_checkpointing_func = vae.decoder._gradient_checkpointing_func = recording
    gradients()
    assert len(checkpointed) == len(vae.encoder.down_blocks) + 1 + 1 + len(vae.decoder.up_blocks)


def test_compile_for_training_wraps_the_blocks_and_keeps_the_outputs(random_vgg16_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(random_vgg16_home))
    torch.manual_seed(0)
    vae = RadioVAE.from_preset("tiny", sample_size=32).eval()
    loss_fn = RadioVAELoss(perceptual_weight=1.0, disc_base_channels=8, allow_download=False).eval()
    maps = _maps()
    with torch.no_grad():
        expected = (vae(maps).sample, loss_fn.perceptual(maps, -maps), loss_fn.discriminator(maps))
        compile_for_training(vae, loss_fn, backend="eager")  # the wiring, without a compiler on CI
        outputs = (vae(maps).sample, loss_fn.perceptual(maps, -maps), loss_fn.discriminator(maps))
    assert vae.encoder._compiled_call_impl is not None and vae.decoder.conv_out._compiled_call_impl is None
    assert loss_fn.discriminator.main._compiled_call_impl is not None
    for value, reference in zip(outputs, expected):
        torch.testing.assert_close(value, reference)


def test_the_collator_refuses_non_finite_maps_on_the_host():
    items = [{"pixel_values": _maps(1)[0], "name": f"{index}_0"} for index in range(3)]
    items[1]["pixel_values"][0, 2, 2] = float("nan")
    with pytest.raises(MapFileError, match=r"map\(s\) 1_0: expected finite values in \[-1, 1\], got NaN or inf"):
        train_vae.collate_maps(items)
    assert train_vae.collate_maps(items[::2])["pixel_values"].shape == (2, 1, 32, 32)


def test_cuda_out_of_memory_stops_with_one_line_naming_the_run_and_the_remedies(tmp_path, monkeypatch, capsys):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_vae.VAEGANStep, "__call__", out_of_memory)
    arguments = ["--preset", "tiny", "--resolution", "32", "--synthetic_num_maps", "4", "--synthetic_num_tx", "1"]
    arguments += ["--num_validation_maps", "1", "--train_batch_size", "4", "--gradient_accumulation_steps", "1"]
    arguments += ["--perceptual_weight", "0", "--report_to", "none", "--output_dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as stopped:
        train_vae.run_from_command_line(arguments + ["--mixed_precision", "no"])
    assert stopped.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "CUDA out of memory training tiny at batch 4, 32x32, precision no, on a GPU with unknown" in line
    for remedy in ("--gradient_checkpointing", "--train_batch_size 2 --gradient_accumulation_steps 2", "bf16"):
        assert remedy in line
    assert "Traceback" not in line


def test_autocast_group_norm_normalises_in_bf16_with_the_same_parameters():
    from radiodiff_vae.models.normalization import AutocastGroupNorm, group_norm_in_autocast_dtype

    torch.manual_seed(0)
    vae = RadioVAE.from_preset("tiny", sample_size=32)
    keys = list(vae.state_dict())
    plain_output = vae(_maps()).sample
    count = group_norm_in_autocast_dtype(vae)
    norms = [module for module in vae.modules() if isinstance(module, torch.nn.GroupNorm)]
    assert count == len(norms) > 10 and all(type(module) is AutocastGroupNorm for module in norms)
    assert list(vae.state_dict()) == keys
    torch.testing.assert_close(vae(_maps()).sample, plain_output, rtol=0, atol=0)  # no autocast: nn.GroupNorm
    norm = norms[0]
    x = torch.randn(2, norm.num_channels, 8, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = norm(x)
    expected = torch.nn.functional.group_norm(x.float(), norm.num_groups, norm.weight, norm.bias, norm.eps)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), expected, rtol=2e-2, atol=2e-2)
    y.float().sum().backward()
    assert norm.weight.grad is not None and norm.weight.grad.dtype == torch.float32 and x.grad is not None


def test_channels_last_auto_follows_whether_group_norm_keeps_the_layout(monkeypatch):
    from radiodiff_vae.models import normalization

    # torch's CPU GroupNorm has a channels-last kernel; its CUDA GroupNorm (torch 2.11) copies to NCHW
    assert normalization.group_norm_keeps_channels_last(torch.device("cpu"))
    calls = []

    def probe(device):
        calls.append(device)
        return False

    monkeypatch.setattr(train_vae, "group_norm_keeps_channels_last", probe)
    assert not train_vae.group_norm_keeps_channels_last(torch.device("cpu")) and calls
