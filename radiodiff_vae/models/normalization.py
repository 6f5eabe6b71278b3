"""GroupNorm that follows autocast into bf16 / fp16 instead of upcasting to fp32, and GroupNorm fused with its SiLU.

Under CUDA autocast ``group_norm`` is one of the ops cast to fp32: every GroupNorm of the autoencoder then reads a
bf16 activation, writes an fp32 copy of it for the backward, normalises in fp32, and its SiLU keeps another fp32
tensor, before the next convolution casts back to bf16. At 320x320 those fp32 tensors are most of the training
step's activation memory. ``AutocastGroupNorm`` normalises in the autocast dtype; the kernel still accumulates the
mean and variance in fp32, so only the output is rounded, as the following convolution would round it anyway.

``GroupNormSiLU`` runs a GroupNorm and the SiLU after it as one autograd node that keeps only its input for the
backward (``RadioVAE.fuse_group_norm_silu``), in either memory layout.
"""

from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch._subclasses.fake_tensor import is_fake

from ..errors import InvalidArgumentError


class AutocastGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters, same state dict) whose output is in the autocast dtype under autocast.

    Shapes: ``(B, C, *)`` -> ``(B, C, *)``; outside autocast exactly ``nn.GroupNorm``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        if not torch.is_autocast_enabled(device_type):
            return super().forward(x)
        dtype = torch.get_autocast_dtype(device_type)
        weight = None if self.weight is None else self.weight.to(dtype)
        bias = None if self.bias is None else self.bias.to(dtype)
        with torch.autocast(device_type, enabled=False):
            return F.group_norm(x.to(dtype), self.num_groups, weight, bias, self.eps)


def group_norm_in_autocast_dtype(module: nn.Module) -> int:
    """Turns every ``nn.GroupNorm`` inside ``module`` into an :class:`AutocastGroupNorm`, in place (the class only:
    parameters, their names and checkpoints are unchanged). Returns how many were converted."""
    converted = 0
    for child in module.modules():
        if type(child) is nn.GroupNorm:
            child.__class__ = AutocastGroupNorm
            converted += 1
        elif isinstance(child, GroupNormSiLU) and not child.normalize_in_autocast_dtype:
            child.normalize_in_autocast_dtype = True  # fused with its SiLU (`RadioVAE.fuse_group_norm_silu`)
            converted += 1
    return converted


def group_norm_keeps_channels_last(device: torch.device) -> bool:
    """Whether this torch's GroupNorm gives a channels-last output for a channels-last input on ``device``.

    Where it does not (CUDA up to at least torch 2.11), each GroupNorm of a channels-last autoencoder copies its
    input to NCHW and the next convolution copies it back: on an H200 those copies took 38% of the bf16 training
    step (docs/benchmarks.md), more than channels-last saves around cuDNN's convolutions.
    """
    norm = nn.GroupNorm(2, 4).to(device)
    probe = torch.zeros(1, 4, 2, 2, device=device).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        return norm(probe).is_contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------------------------------------------
# GroupNorm + SiLU in one autograd node
#
# Composed, GroupNorm keeps its input for the backward and SiLU keeps GroupNorm's output: two full-size tensors
# before the next convolution keeps a third (SiLU's output). The fused node keeps only its input (and the per-group
# statistics) and recomputes the normalisation in the backward: one full-size tensor fewer per pair, for an
# element-wise pass the backward repeats. Under `torch.utils.checkpoint` it composes with the selective mode of
# `RadioVAE.enable_gradient_checkpointing`.

_KERNELS = ("auto", "native", "strided")
_GROUP_NORM_DTYPE_UNDER_AUTOCAST: Dict[Tuple[str, torch.dtype, torch.dtype], torch.dtype] = {}
_KEEPS_CHANNELS_LAST: Dict[torch.device, bool] = {}


def _group_norm_dtype_under_autocast(x: torch.Tensor) -> torch.dtype:
    """The dtype ``F.group_norm`` computes in for ``x`` under the current autocast: fp32 on CUDA (its autocast
    lists GroupNorm among the fp32 ops), ``x``'s own dtype on a CPU. Probed once per device type and dtypes."""
    device_type = x.device.type
    key = (device_type, x.dtype, torch.get_autocast_dtype(device_type))
    if key not in _GROUP_NORM_DTYPE_UNDER_AUTOCAST:
        probe = torch.zeros(1, 1, 2, device=x.device, dtype=x.dtype)
        with torch.no_grad():
            _GROUP_NORM_DTYPE_UNDER_AUTOCAST[key] = F.group_norm(probe, 1).dtype
    return _GROUP_NORM_DTYPE_UNDER_AUTOCAST[key]


def _native_kernel_keeps_layout(x: torch.Tensor) -> bool:
    if x.is_contiguous():
        return True
    if is_fake(x):  # traced (torch.compile, memory counting): no kernel to probe; the CPU's keeps the layout
        return _KEEPS_CHANNELS_LAST.get(x.device, x.device.type == "cpu")
    if x.device not in _KEEPS_CHANNELS_LAST:
        _KEEPS_CHANNELS_LAST[x.device] = group_norm_keeps_channels_last(x.device)
    return _KEEPS_CHANNELS_LAST[x.device]


def _grouped(tensor: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``(N, C, *spatial)`` -> ``(N, G, C / G, *spatial)``, a view in either memory layout."""
    return tensor.unflatten(1, (num_groups, tensor.shape[1] // num_groups))


def _per_group_channel(parameter: Optional[torch.Tensor], num_groups: int, ndim: int) -> Optional[torch.Tensor]:
    """An affine parameter ``(C,)`` as ``(1, G, C / G, 1, ...)`` in fp32, broadcastable against a grouped input."""
    if parameter is None:
        return None
    return parameter.float().reshape(1, num_groups, -1, *([1] * (ndim - 3)))


class _GroupNormSiLUFunction(torch.autograd.Function):
    """``silu(group_norm(x))`` computed in ``x``'s dtype with autocast off; saves ``x`` and the ``(N, G)`` statistics.

    ``native``: torch's GroupNorm kernels; the backward recomputes the normalised tensor with the same kernel, so
    values and gradients are bitwise those of ``F.silu(F.group_norm(x))``. ``strided``: reductions over a grouped
    view and element-wise ops in fp32 that follow ``x``'s memory layout (channels-last stays channels-last, where
    CUDA's kernel copies to NCHW and back); values equal to float rounding.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, num_groups: int, eps: float, kernel: str):
        batch, channels = x.shape[:2]
        spatial = x.numel() // max(1, batch * channels)
        with torch.autocast(x.device.type, enabled=False):
            if kernel == "native":
                normalized, mean, rstd = torch.ops.aten.native_group_norm(
                    x, weight, bias, batch, channels, spatial, num_groups, eps
                )
                output = F.silu(normalized)  # (N, C, *), x's dtype
            else:
                grouped = _grouped(x, num_groups)  # (N, G, C/G, *)
                dims = tuple(range(2, grouped.ndim))
                variance, mean = torch.var_mean(grouped.float(), dim=dims, correction=0, keepdim=True)  # (N, G, 1..)
                rstd = torch.rsqrt(variance + eps)
                scale, shift = _affine(rstd, mean, weight, bias, num_groups, grouped.ndim)
                output = F.silu(torch.addcmul(shift, grouped, scale)).to(x.dtype).flatten(1, 2)
                mean, rstd = mean.reshape(batch, num_groups), rstd.reshape(batch, num_groups)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.num_groups, ctx.eps, ctx.kernel = num_groups, eps, kernel
        return output

    @staticmethod
    def backward(ctx, grad_output):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        num_groups, kernel = ctx.num_groups, ctx.kernel
        batch, channels = x.shape[:2]
        spatial = x.numel() // max(1, batch * channels)
        needs_weight = weight is not None and ctx.needs_input_grad[1]
        needs_bias = bias is not None and ctx.needs_input_grad[2]
        with torch.autocast(x.device.type, enabled=False):
            if kernel == "native":
                normalized = torch.ops.aten.native_group_norm(
                    x, weight, bias, batch, channels, spatial, num_groups, ctx.eps
                )[0]
                grad_normalized = torch.ops.aten.silu_backward(grad_output, normalized)
                del normalized
                grad_x, grad_weight, grad_bias = torch.ops.aten.native_group_norm_backward(
                    grad_normalized, x, mean, rstd, weight, batch, channels, spatial, num_groups,
                    [ctx.needs_input_grad[0], needs_weight, needs_bias],
                )  # fmt: skip
                return grad_x, grad_weight, grad_bias, None, None, None
            grouped = _grouped(x, num_groups)  # (N, G, C/G, *)
            shape = (batch, num_groups) + (1,) * (grouped.ndim - 2)
            mean, rstd = mean.reshape(shape), rstd.reshape(shape)
            normalized = (grouped.float() - mean) * rstd  # x-hat, fp32
            gamma = _per_group_channel(weight, num_groups, grouped.ndim)
            beta = _per_group_channel(bias, num_groups, grouped.ndim)
            pre_activation = normalized if gamma is None else normalized * gamma
            if beta is not None:
                pre_activation = pre_activation + beta
            grad_pre = torch.ops.aten.silu_backward(_grouped(grad_output, num_groups).float(), pre_activation)
            del pre_activation
            reduce_over = (0, *range(3, grouped.ndim))  # batch and space: per channel
            grad_weight = (grad_pre * normalized).sum(reduce_over).flatten().to(weight.dtype) if needs_weight else None
            grad_bias = grad_pre.sum(reduce_over).flatten().to(bias.dtype) if needs_bias else None
            grad_x = None
            if ctx.needs_input_grad[0]:
                grad_normalized = grad_pre if gamma is None else grad_pre * gamma
                in_group = tuple(range(2, grouped.ndim))
                mean_grad = grad_normalized.mean(in_group, keepdim=True)
                mean_grad_dot = (grad_normalized * normalized).mean(in_group, keepdim=True)
                grad_x = (rstd * (grad_normalized - mean_grad - normalized * mean_grad_dot)).to(x.dtype).flatten(1, 2)
        return grad_x, grad_weight, grad_bias, None, None, None


def _affine(rstd, mean, weight, bias, num_groups: int, ndim: int):
    """Per (sample, channel) ``scale`` and ``shift`` in fp32 with ``normalized * gamma + beta == x * scale + shift``."""
    gamma = _per_group_channel(weight, num_groups, ndim)
    beta = _per_group_channel(bias, num_groups, ndim)
    scale = rstd if gamma is None else rstd * gamma  # (N, G, C/G, 1, ...)
    shift = -mean * scale
    if beta is not None:
        shift = shift + beta
    return scale, shift


def group_norm_silu(
    x: torch.Tensor,
    num_groups: int,
    weight: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
    eps: float = 1e-5,
    kernel: str = "auto",
) -> torch.Tensor:
    """``F.silu(F.group_norm(x, ...))`` that keeps only ``x`` (and per-group statistics) for the backward.

    Computes in ``x``'s dtype with autocast off, so the caller casts first (see :class:`GroupNormSiLU`).
    ``kernel``: ``"native"`` (torch's GroupNorm kernels; bitwise equal to the composition), ``"strided"``
    (layout-following reductions and element-wise ops), or ``"auto"``: native unless ``x`` is channels-last on a
    device whose GroupNorm kernel would copy it to NCHW (``group_norm_keeps_channels_last``).

    Shapes: ``(N, C, *)`` -> ``(N, C, *)``, in ``x``'s memory layout.
    """
    if kernel not in _KERNELS:
        raise InvalidArgumentError(f"group_norm_silu: kernel must be one of {_KERNELS}, got {kernel!r}.")
    if x.ndim < 3 or x.shape[1] % num_groups:
        raise InvalidArgumentError(
            f"group_norm_silu expects (N, C, *spatial) with C divisible by num_groups={num_groups}, got "
            f"{tuple(x.shape)}."
        )
    if kernel == "auto":
        kernel = "native" if _native_kernel_keeps_layout(x) else "strided"
    return _GroupNormSiLUFunction.apply(x, weight, bias, num_groups, eps, kernel)


class GroupNormSiLU(nn.GroupNorm):
    """``nn.GroupNorm`` followed by SiLU in one autograd node (same parameters and state dict as ``nn.GroupNorm``)
    that keeps one tensor for the backward instead of two; see :func:`group_norm_silu`.

    Under autocast it computes in the dtype the unfused pair would: the autocast dtype when
    ``normalize_in_autocast_dtype`` (as :class:`AutocastGroupNorm`), else the dtype ``F.group_norm`` picks on that
    device (fp32 on CUDA). ``kernel`` as in :func:`group_norm_silu`.

    Shapes: ``(B, C, *)`` -> ``(B, C, *)``.
    """

    normalize_in_autocast_dtype: bool = False
    kernel: str = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):
            if self.normalize_in_autocast_dtype:
                dtype = torch.get_autocast_dtype(device_type)
                weight = None if weight is None else weight.to(dtype)
                bias = None if bias is None else bias.to(dtype)
            else:
                dtype = _group_norm_dtype_under_autocast(x)
            x = x.to(dtype)
        return group_norm_silu(x, self.num_groups, weight, bias, self.eps, self.kernel)


def fuse_group_norm_silu(norm: nn.GroupNorm) -> GroupNormSiLU:
    """Turns ``norm`` (an ``nn.GroupNorm`` or :class:`AutocastGroupNorm`) into a :class:`GroupNormSiLU` in place
    (the class only; parameters and their names are unchanged). The caller drops the SiLU that followed it."""
    if not isinstance(norm, nn.GroupNorm):
        raise InvalidArgumentError(f"fuse_group_norm_silu expects an nn.GroupNorm, got {type(norm).__name__}.")
    if not isinstance(norm, GroupNormSiLU):
        in_autocast_dtype = isinstance(norm, AutocastGroupNorm)
        norm.__class__ = GroupNormSiLU
        norm.normalize_in_autocast_dtype = in_autocast_dtype
    return norm


def unfuse_group_norm_silu(norm: GroupNormSiLU) -> nn.GroupNorm:
    """Undoes :func:`fuse_group_norm_silu`: back to ``nn.GroupNorm`` or :class:`AutocastGroupNorm`, in place."""
    in_autocast_dtype = norm.__dict__.pop("normalize_in_autocast_dtype", False)
    norm.__dict__.pop("kernel", None)
    norm.__class__ = AutocastGroupNorm if in_autocast_dtype else nn.GroupNorm
    return norm
