"""The stack of diffusers ``DownEncoderBlock2D`` levels that the package's encoders share (the city encoder's stem;
the VAE encoder builds the same stack)."""

from typing import Sequence

import torch.nn as nn
from diffusers.models.unets.unet_2d_blocks import DownEncoderBlock2D


def down_encoder_blocks(
    block_out_channels: Sequence[int],
    layers_per_block: int,
    num_downsamples: int,
    norm_num_groups: int,
    act_fn: str,
    downsample_padding: int,
) -> nn.ModuleList:
    """One ``DownEncoderBlock2D`` per entry of ``block_out_channels``, from ``block_out_channels[0]`` channels in;
    the first ``num_downsamples`` levels end with a stride-2 ``Downsample2D``.

    ``(B, C_0, H, W)`` -> ``(B, C_last, H / 2^num_downsamples, W / 2^num_downsamples)`` through the levels in order.
    ``downsample_padding`` 0 pads ``(0, 1, 0, 1)`` before the stride-2 conv (the CompVis encoder), 1 pads every side.
    """
    blocks, previous = [], block_out_channels[0]
    for level, channels in enumerate(block_out_channels):
        blocks.append(
            DownEncoderBlock2D(
                in_channels=previous,
                out_channels=channels,
                num_layers=layers_per_block,
                resnet_eps=1e-6,
                resnet_act_fn=act_fn,
                resnet_groups=norm_num_groups,
                add_downsample=level < num_downsamples,
                downsample_padding=downsample_padding,
            )
        )
        previous = channels
    return nn.ModuleList(blocks)
