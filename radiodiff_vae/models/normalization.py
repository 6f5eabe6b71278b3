"""GroupNorm that follows autocast into bf16 / fp16 instead of upcasting to fp32.

Under CUDA autocast ``group_norm`` is one of the ops cast to fp32: every GroupNorm of the autoencoder then reads a
bf16 activation, writes an fp32 copy of it for the backward, normalises in fp32, and its SiLU keeps another fp32
tensor, before the next convolution casts back to bf16. At 320x320 those fp32 tensors are most of the training
step's activation memory. ``AutocastGroupNorm`` normalises in the autocast dtype; the kernel still accumulates the
mean and variance in fp32, so only the output is rounded, as the following convolution would round it anyway.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


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
