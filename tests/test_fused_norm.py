"""GroupNorm + SiLU as one autograd node (models/normalization.py, RadioVAE.fuse_group_norm_silu): the values and
gradients of the unfused pair, in either memory layout and under bf16 autocast, one full-size tensor kept instead of
two, and the same parameters and state dict."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from radiodiff_vae import RadioVAE
from radiodiff_vae.errors import InvalidArgumentError
from radiodiff_vae.models.normalization import (
    AutocastGroupNorm,
    GroupNormSiLU,
    fuse_group_norm_silu,
    group_norm_in_autocast_dtype,
    group_norm_silu,
)

LAYOUTS = {"NCHW": torch.contiguous_format, "channels-last": torch.channels_last}


def _norm(num_groups: int = 4, channels: int = 16) -> nn.GroupNorm:
    norm = nn.GroupNorm(num_groups, channels, eps=1e-6)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(channels, generator=generator))
        norm.bias.copy_(torch.randn(channels, generator=generator))
    return norm


def _input(layout, shape=(3, 16, 9, 7)) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2)) * 3 + 1  # not centred: the mean matters
    return x.contiguous(memory_format=LAYOUTS[layout])


def _forward_backward(module, act, x):
    """Output, and the gradients of x, weight and bias for a fixed upstream gradient."""
    module.zero_grad(set_to_none=True)
    leaf = x.clone().requires_grad_(True)
    output = act(module(leaf))
    upstream = torch.randn(output.shape, generator=torch.Generator().manual_seed(3)).to(output.dtype)
    output.backward(upstream)
    return output.detach(), leaf.grad, module.weight.grad.clone(), module.bias.grad.clone()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernel", ["native", "strided"])
def test_fused_pair_equals_group_norm_then_silu_in_fp32(layout, kernel):
    norm, x = _norm(), _input(layout)
    expected = _forward_backward(norm, F.silu, x)
    fuse_group_norm_silu(norm).kernel = kernel
    assert isinstance(norm, GroupNormSiLU)
    result = _forward_backward(norm, nn.Identity(), x)
    for got, want, name in zip(result, expected, ("output", "grad x", "grad weight", "grad bias")):
        if kernel == "native":  # the same kernels in the same order: bitwise
            assert torch.equal(got, want), name
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=name)
    # the layout is kept through the normalisation, and so is the input gradient's
    memory_format = LAYOUTS[layout]
    assert result[0].is_contiguous(memory_format=memory_format) and result[1].is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("kernel", ["native", "strided"])
@pytest.mark.parametrize("in_autocast_dtype", [False, True])
def test_fused_pair_under_bf16_autocast_matches_the_unfused_pair(kernel, in_autocast_dtype):
    """Both flavours of today's module: nn.GroupNorm (computes in the dtype F.group_norm picks under autocast) and
    AutocastGroupNorm (in the autocast dtype)."""
    norm = _norm()
    if in_autocast_dtype:
        group_norm_in_autocast_dtype(norm)
    x = _input("channels-last").to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = _forward_backward(norm, F.silu, x)
        fuse_group_norm_silu(norm).kernel = kernel
        assert norm.normalize_in_autocast_dtype == in_autocast_dtype
        result = _forward_backward(norm, nn.Identity(), x)
    assert result[0].dtype == expected[0].dtype and result[1].dtype == expected[1].dtype
    assert result[0].is_contiguous(memory_format=torch.channels_last)
    for got, want, name in zip(result, expected, ("output", "grad x", "grad weight", "grad bias")):
        if kernel == "native":
            assert torch.equal(got, want), name
        else:  # fp32 maths rounded once, against bf16 kernels: within bf16's precision
            torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2, msg=name)


def test_fused_pair_keeps_one_full_size_tensor_instead_of_two():
    def saved_full_size(module, act):
        x = _input("NCHW").requires_grad_(True)
        sizes = []

        def pack(tensor):
            sizes.append(tensor.numel())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            act(module(x))
        return sum(1 for size in sizes if size == x.numel())

    norm = _norm()
    assert saved_full_size(norm, F.silu) == 2  # GroupNorm's input, SiLU's input
    fuse_group_norm_silu(norm)
    assert saved_full_size(norm, nn.Identity()) == 1  # the input only; the statistics are (N, G)


def test_group_norm_silu_rejects_bad_arguments():
    x = torch.randn(2, 6, 4, 4)
    with pytest.raises(InvalidArgumentError, match="kernel must be one of"):
        group_norm_silu(x, 3, kernel="fast")
    with pytest.raises(InvalidArgumentError, match="divisible by num_groups=4"):
        group_norm_silu(x, 4)
    with pytest.raises(ValueError, match="expects an nn.GroupNorm"):
        fuse_group_norm_silu(nn.SiLU())


def test_radio_vae_fuses_every_norm_silu_pair_with_the_same_state_dict_values_and_gradients():
    torch.manual_seed(0)
    vae = RadioVAE.from_preset("tiny", sample_size=32).train()
    maps = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    state = {key: value.clone() for key, value in vae.state_dict().items()}

    def run():
        vae.zero_grad(set_to_none=True)
        output = vae(maps, sample_posterior=True, generator=torch.Generator().manual_seed(1)).sample
        output.square().mean().backward()
        return output.detach(), {name: p.grad.clone() for name, p in vae.named_parameters()}

    expected = run()
    norms = [m for m in vae.modules() if isinstance(m, nn.GroupNorm)]
    fused = vae.fuse_group_norm_silu()
    assert fused == len(norms)  # the tiny preset has no attention: every GroupNorm is followed by a SiLU
    assert all(isinstance(m, GroupNormSiLU) for m in norms)
    assert not any(isinstance(m, nn.SiLU) for m in vae.modules())
    assert vae.fuse_group_norm_silu() == 0  # already fused
    assert vae.state_dict().keys() == state.keys()
    assert all(torch.equal(vae.state_dict()[key], value) for key, value in state.items())
    result = run()
    assert torch.equal(result[0], expected[0])
    for name, grad in expected[1].items():
        assert torch.equal(result[1][name], grad), name
    # group_norm_in_autocast_dtype reaches the fused norms too, in either order
    assert group_norm_in_autocast_dtype(vae) == fused
    assert all(m.normalize_in_autocast_dtype for m in norms)
    assert vae.fuse_group_norm_silu(enabled=False) == fused
    assert all(type(m) is AutocastGroupNorm for m in norms) and any(isinstance(m, nn.SiLU) for m in vae.modules())
    assert torch.equal(run()[0], expected[0])


def test_attention_group_norms_stay_unfused():
    vae = RadioVAE.from_preset("radiodiff-ldm-f4", block_out_channels=(32, 64, 128), norm_num_groups=8, sample_size=32)
    vae.fuse_group_norm_silu()
    attention_norms = [a.group_norm for a in vae.encoder.mid_block.attentions if a is not None]
    assert attention_norms and all(type(norm) is nn.GroupNorm for norm in attention_norms)
