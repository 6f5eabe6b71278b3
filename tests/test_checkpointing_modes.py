"""The gradient-checkpointing modes of RadioVAE and RadioVAELoss: the same values and gradients as without
checkpointing, what each mode recomputes (selective: never a convolution), what it keeps, and the mode argument."""

import warnings

import pytest
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

from radiodiff_vae import RadioVAE, RadioVAELoss
from radiodiff_vae.errors import InvalidArgumentError

MODES = ("selective", "full_resolution", "all")


class StepRecorder(TorchDispatchMode):
    """Counts the convolution forwards that run inside a backward (recomputation), and the bytes of the tensors
    created while it is active that are still alive (``alive_bytes``)."""

    def __init__(self):
        super().__init__()
        self.recomputed = 0
        self.storages = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default and torch._C._current_graph_task_id() != -1:
            self.recomputed += 1
        output = func(*args, **(kwargs or {}))
        for tensor in output if isinstance(output, (tuple, list)) else [output]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                self.storages.setdefault(storage._cdata, (StorageWeakRef(storage), storage.nbytes()))
        return output

    def alive_bytes(self) -> int:
        return sum(size for reference, size in self.storages.values() if not reference.expired())


def _maps(batch: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _run(vae: RadioVAE, maps: torch.Tensor):
    """Output, parameter gradients, convolutions recomputed, and bytes the forward left for the backward."""
    vae.zero_grad(set_to_none=True)
    counter = StepRecorder()
    with counter:
        output = vae(maps, sample_posterior=True, generator=torch.Generator().manual_seed(1)).sample
        kept = counter.alive_bytes()
        output.square().mean().backward()
    grads = {name: parameter.grad.clone() for name, parameter in vae.named_parameters()}
    return output.detach(), grads, counter.recomputed, kept


def _assert_same(result, expected, what: str) -> None:
    torch.testing.assert_close(result[0], expected[0], rtol=1e-6, atol=1e-8, msg=f"{what}: output")
    assert result[1].keys() == expected[1].keys()
    for name, grad in expected[1].items():
        torch.testing.assert_close(result[1][name], grad, rtol=1e-6, atol=1e-8, msg=f"{what}: {name}")


@pytest.mark.parametrize("preset", ["tiny", "radiodiff-ldm-f4"])
def test_every_mode_gives_the_gradients_of_no_checkpointing(preset):
    """fp32; `radiodiff-ldm-f4` (attention in the mid blocks, upsampling last) at small channel counts."""
    overrides = {"block_out_channels": (32, 64, 128), "norm_num_groups": 8} if preset != "tiny" else {}
    torch.manual_seed(0)
    vae = RadioVAE.from_preset(preset, sample_size=32, **overrides).train()
    maps = _maps()
    expected = _run(vae, maps)
    assert expected[2] == 0
    recomputed = {}
    for mode in MODES:
        vae.enable_gradient_checkpointing(mode=mode)
        assert vae.gradient_checkpointing_mode == mode and vae.is_gradient_checkpointing
        result = _run(vae, maps)
        _assert_same(result, expected, mode)
        recomputed[mode] = result[2]
    assert recomputed["selective"] == 0  # GroupNorm, SiLU and additions only
    assert 0 < recomputed["full_resolution"] < recomputed["all"]
    vae.disable_gradient_checkpointing()
    assert vae.gradient_checkpointing_mode is None
    _assert_same(_run(vae, maps), expected, "disabled again")


def test_selective_mode_keeps_less_than_none_and_more_than_all():
    torch.manual_seed(0)
    vae = RadioVAE.from_preset("tiny", sample_size=32).train()
    maps = _maps()
    kept = {"none": _run(vae, maps)[3]}
    for mode in MODES:
        vae.enable_gradient_checkpointing(mode=mode)
        kept[mode] = _run(vae, maps)[3]
    # each resnet keeps two full-size tensors instead of six
    assert kept["all"] < kept["selective"] < 0.55 * kept["none"]


def test_selective_mode_under_bf16_autocast_gives_the_same_gradients():
    torch.manual_seed(0)
    vae = RadioVAE.from_preset("tiny", sample_size=32).train()
    maps = _maps()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = _run(vae, maps)
        vae.enable_gradient_checkpointing(mode="selective")
        result = _run(vae, maps)
    assert result[0].dtype == torch.bfloat16 and result[2] == 0
    _assert_same(result, expected, "selective, bf16")


def test_selective_mode_with_the_fused_group_norm_gives_the_same_gradients():
    torch.manual_seed(0)
    vae = RadioVAE.from_preset("tiny", sample_size=32).train()
    maps = _maps()
    expected = _run(vae, maps)
    vae.fuse_group_norm_silu()
    vae.enable_gradient_checkpointing(mode="selective")
    result = _run(vae, maps)
    assert result[2] == 0
    _assert_same(result, expected, "selective + fused GroupNorm-SiLU")


def test_mode_argument_and_its_deprecated_alias():
    vae = RadioVAE.from_preset("tiny", sample_size=32)
    vae.enable_gradient_checkpointing()  # diffusers' call: every level
    assert vae.gradient_checkpointing_mode == "all"
    with pytest.warns(FutureWarning, match="mode='full_resolution'"):
        vae.enable_gradient_checkpointing(full_resolution_only=True)
    assert vae.gradient_checkpointing_mode == "full_resolution"
    with pytest.warns(FutureWarning):
        vae.enable_gradient_checkpointing(full_resolution_only=False, mode="all")
    assert vae.gradient_checkpointing_mode == "all"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new argument warns about nothing
        vae.enable_gradient_checkpointing(mode="selective")
    # selective leaves diffusers' own block-level checkpointing off
    assert not vae.encoder.mid_block.gradient_checkpointing and vae.encoder.gradient_checkpointing
    with pytest.raises(InvalidArgumentError, match="mode must be one of"):
        vae.enable_gradient_checkpointing(mode="full")
    with pytest.raises(ValueError, match="full_resolution_only=True means mode='full_resolution'"):
        with pytest.warns(FutureWarning):
            vae.enable_gradient_checkpointing(full_resolution_only=True, mode="selective")
    with pytest.raises(ValueError, match="takes no gradient_checkpointing_func"):
        vae.enable_gradient_checkpointing(torch.utils.checkpoint.checkpoint, mode="selective")


def test_lpips_modes_give_the_same_distance_and_gradient(random_vgg16_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(random_vgg16_home))
    loss = RadioVAELoss(perceptual_weight=1.0, disc_base_channels=8, allow_download=False)
    inputs = _maps(2, 32)
    reconstructions = inputs + 0.2 * torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(5))

    def distance_and_gradient():
        leaf = reconstructions.clone().requires_grad_(True)
        counter = StepRecorder()
        with counter:
            distance = loss.perceptual(inputs, leaf)
            kept = counter.alive_bytes()
            (grad,) = torch.autograd.grad(distance.sum(), leaf)
        return distance.detach(), grad, counter.recomputed, kept

    expected = distance_and_gradient()
    results = {}
    for mode in MODES:
        loss.enable_gradient_checkpointing(mode=mode)
        assert loss.perceptual.checkpoint_mode == ("all" if mode == "all" else "selective")
        results[mode] = distance_and_gradient()
    loss.perceptual.checkpoint_mode = "trunk"  # the trunk alone, as before the selective mode
    results["trunk"] = distance_and_gradient()
    for mode, result in results.items():
        torch.testing.assert_close(result[0], expected[0], rtol=1e-6, atol=1e-8, msg=mode)
        torch.testing.assert_close(result[1], expected[1], rtol=1e-6, atol=1e-9, msg=mode)
    assert expected[2] == 0 and results["selective"][2] == 0  # no VGG16 convolution twice
    assert results["all"][2] == results["trunk"][2] == 13  # the trunk's 13 convolutions again
    # pool indices and fp32 heads recomputed; "all" keeps the least
    assert results["all"][3] < results["selective"][3] < 0.8 * expected[3]
    assert results["all"][3] < results["trunk"][3]
    loss.perceptual.checkpoint_mode = "everything"
    with pytest.raises(InvalidArgumentError, match="checkpoint_mode must be one of"):
        distance_and_gradient()
    with pytest.raises(InvalidArgumentError, match="mode must be one of"):
        loss.enable_gradient_checkpointing(mode="trunk")
