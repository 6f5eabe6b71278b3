"""RadioVAE: the variational autoencoder of the RadioDiff VAE, built from diffusers' blocks.

One configurable class covers both architectures of ``docs/architecture.md``:

* ``radiodiff-vae`` (default, the report): three strided-conv downsamplings, transposed-conv upsamplings, no
  attention, two resnets per level on both sides. A 1x320x320 map becomes a 3x40x40 latent.
* ``radiodiff-ldm-f4`` (the original RadioDiff code): two downsamplings, nearest+conv upsamplings, one
  self-attention in each mid block, three resnets per decoder level. Its state dict has exactly the keys and shapes
  of ``diffusers.AutoencoderKL`` built with the same numbers.

The checks of configs, inputs and saved folders live in :mod:`.checks`, the config mapping to and from
``AutoencoderKL`` in :mod:`radiodiff_vae.conversion.autoencoder_kl`.
"""

import inspect
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import AutoencoderMixin, DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import DownEncoderBlock2D, UNetMidBlock2D, UpDecoderBlock2D
from diffusers.models.upsampling import Upsample2D
from diffusers.utils.accelerate_utils import apply_forward_hook

from ..hub_id import local_path_or_hub_id
from ..conversion.autoencoder_kl import (
    CONFIG_LOCATION_KEYS,
    autoencoder_kl_config,
    placed_like,
    radio_vae_config_of_autoencoder_kl,
)
from .checks import (
    check_architecture,
    check_config_values,
    check_finite_weights,
    check_pretrained_source,
    check_size_divisible,
    check_tensor,
    warn_if_not_model_range,
)
from .upsampling import NearestConvUpsample2D

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

# The report (seed section 2): 320 -> 160 -> 80 -> 40, 64:1 compression.
_REPORT_LAYOUT: Dict[str, object] = dict(
    block_out_channels=(128, 256, 512),
    layers_per_block=2,
    decoder_layers_per_block=2,
    num_downsamples=3,
    upsample_type="conv_transpose",
    upsample_position="first",
    mid_block_add_attention=False,
    latent_channels=3,
    norm_num_groups=32,
    sample_size=320,
)

PRESETS: Dict[str, Dict[str, object]] = {
    "radiodiff-vae": _REPORT_LAYOUT,
    # The original RadioDiff code (CompVis ldm "f4" first stage with z_channels 3): loads its checkpoints.
    "radiodiff-ldm-f4": {
        **_REPORT_LAYOUT,
        "decoder_layers_per_block": 3,
        "num_downsamples": 2,
        "upsample_type": "nearest",
        "upsample_position": "last",
        "mid_block_add_attention": True,
    },
    # The report's layout with small channel counts: tests.
    "tiny": {**_REPORT_LAYOUT, "block_out_channels": (32, 64, 128), "norm_num_groups": 8, "sample_size": 64},
}
# The CPU codec of the quick start: the report's layout at a quarter of `tiny`'s FLOPs (16/32/64 channels) with two
# downsamplings (a 3x16x16 latent of a 64x64 map). On a 2-core CPU a few minutes of its steps beat the resize
# baseline by more than the same minutes of `tiny` with two downsamplings, and the 8x-downsampling `tiny` is still
# level with it after 800 steps (docs/training.md, "Beating the resize baseline").
PRESETS["tiny-f4"] = {**PRESETS["tiny"], "block_out_channels": (16, 32, 64), "num_downsamples": 2}


@dataclass
class RadioVAEOutput(DecoderOutput):
    """Output of :meth:`RadioVAE.forward`.

    Args:
        sample (`torch.Tensor` of shape `(batch, out_channels, height, width)`): the reconstruction.
        latent_dist (`DiagonalGaussianDistribution`, *optional*): the posterior, returned when
            ``return_posterior=True`` so that one forward feeds the reconstruction and KL terms of the loss.
    """

    latent_dist: Optional[DiagonalGaussianDistribution] = None


class UpsampleFirstDecoderBlock2D(UpDecoderBlock2D):
    """An ``UpDecoderBlock2D`` that upsamples *before* its resnets, so that the decoder mirrors the encoder level by
    level (resnets at 80, 160 and 320 for a 40x40 latent) instead of ending on an upsampling with no resnet after it."""

    def forward(self, hidden_states: torch.Tensor, temb: Optional[torch.Tensor] = None) -> torch.Tensor:
        for upsampler in self.upsamplers or ():
            hidden_states = upsampler(hidden_states)  # (B, C_in, 2h, 2w)
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states, temb=temb)
        return hidden_states


def _make_up_block(
    in_channels: int,
    out_channels: int,
    num_layers: int,
    upsample_type: Optional[str],
    upsample_position: str,
    norm_num_groups: int,
    act_fn: str,
) -> UpDecoderBlock2D:
    """A decoder level; ``upsample_type`` None means the level does not change resolution."""
    block_class = UpsampleFirstDecoderBlock2D if upsample_position == "first" else UpDecoderBlock2D
    block = block_class(
        in_channels=in_channels,
        out_channels=out_channels,
        num_layers=num_layers,
        resnet_eps=1e-6,
        resnet_act_fn=act_fn,
        resnet_groups=norm_num_groups,
        add_upsample=False,
        temb_channels=None,
    )
    if upsample_type is not None:
        # Built here rather than by diffusers' block, which only knows nearest+conv after its resnets. The module
        # keeps diffusers' name `upsamplers.0.conv`, so an AutoencoderKL state dict loads into the "last" layout.
        channels = in_channels if upsample_position == "first" else out_channels
        if upsample_type == "nearest":
            upsampler = NearestConvUpsample2D(channels, out_channels=channels)
        else:
            upsampler = Upsample2D(channels, use_conv_transpose=True, out_channels=channels)
        block.upsamplers = nn.ModuleList([upsampler])
    return block


class RadioEncoder(nn.Module):
    """Maps ``(B, in_channels, H, W)`` to the posterior moments ``(B, 2 * latent_channels, H / f, W / f)``."""

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        block_out_channels: Tuple[int, ...],
        layers_per_block: int,
        num_downsamples: int,
        norm_num_groups: int,
        act_fn: str,
        mid_block_add_attention: bool,
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList()
        previous_channels = block_out_channels[0]
        for level, channels in enumerate(block_out_channels):
            self.down_blocks.append(
                DownEncoderBlock2D(
                    in_channels=previous_channels,
                    out_channels=channels,
                    num_layers=layers_per_block,
                    resnet_eps=1e-6,
                    resnet_act_fn=act_fn,
                    resnet_groups=norm_num_groups,
                    add_downsample=level < num_downsamples,
                    # padding 0 pads (0, 1, 0, 1) before the stride-2 conv, as the CompVis encoder does
                    downsample_padding=0,
                )
            )
            previous_channels = channels
        self.mid_block = UNetMidBlock2D(
            in_channels=block_out_channels[-1],
            resnet_eps=1e-6,
            resnet_act_fn=act_fn,
            output_scale_factor=1,
            resnet_time_scale_shift="default",
            attention_head_dim=block_out_channels[-1],
            resnet_groups=norm_num_groups,
            temb_channels=None,
            add_attention=mid_block_add_attention,
        )
        self.conv_norm_out = nn.GroupNorm(num_channels=block_out_channels[-1], num_groups=norm_num_groups, eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[-1], 2 * latent_channels, kernel_size=3, padding=1)
        self.gradient_checkpointing = False
        self.checkpoint_full_resolution_only = False

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        hidden = self.conv_in(sample)  # (B, C0, H, W)
        for index, block in enumerate([*self.down_blocks, self.mid_block]):
            checkpointed = self.gradient_checkpointing and (index == 0 or not self.checkpoint_full_resolution_only)
            if torch.is_grad_enabled() and checkpointed:
                hidden = self._gradient_checkpointing_func(block, hidden)
            else:
                hidden = block(hidden)
        hidden = self.conv_act(self.conv_norm_out(hidden))  # (B, C_last, H/f, W/f)
        return self.conv_out(hidden)  # (B, 2 * latent_channels, H/f, W/f)


class RadioDecoder(nn.Module):
    """Maps a latent ``(B, latent_channels, h, w)`` to a map ``(B, out_channels, h * f, w * f)``."""

    def __init__(
        self,
        latent_channels: int,
        out_channels: int,
        block_out_channels: Tuple[int, ...],
        layers_per_block: int,
        num_upsamples: int,
        upsample_type: str,
        upsample_position: str,
        norm_num_groups: int,
        act_fn: str,
        mid_block_add_attention: bool,
    ):
        super().__init__()
        reversed_channels = tuple(reversed(block_out_channels))
        self.conv_in = nn.Conv2d(latent_channels, reversed_channels[0], kernel_size=3, padding=1)
        self.mid_block = UNetMidBlock2D(
            in_channels=reversed_channels[0],
            resnet_eps=1e-6,
            resnet_act_fn=act_fn,
            output_scale_factor=1,
            resnet_time_scale_shift="default",
            attention_head_dim=reversed_channels[0],
            resnet_groups=norm_num_groups,
            temb_channels=None,
            add_attention=mid_block_add_attention,
        )
        self.up_blocks = nn.ModuleList()
        previous_channels = reversed_channels[0]
        num_levels = len(reversed_channels)
        for index, channels in enumerate(reversed_channels):
            # "first": the last `num_upsamples` levels open with an upsampling (the mirror of the encoder);
            # "last": the first `num_upsamples` levels close with one (AutoencoderKL's layout).
            upsamples = index >= num_levels - num_upsamples if upsample_position == "first" else index < num_upsamples
            self.up_blocks.append(
                _make_up_block(
                    previous_channels,
                    channels,
                    num_layers=layers_per_block,
                    upsample_type=upsample_type if upsamples else None,
                    upsample_position=upsample_position,
                    norm_num_groups=norm_num_groups,
                    act_fn=act_fn,
                )
            )
            previous_channels = channels
        self.conv_norm_out = nn.GroupNorm(num_channels=block_out_channels[0], num_groups=norm_num_groups, eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)
        self.gradient_checkpointing = False
        self.checkpoint_full_resolution_only = False

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        hidden = self.conv_in(latent)  # (B, C_last, h, w)
        blocks = [self.mid_block, *self.up_blocks]
        for index, block in enumerate(blocks):
            last = index == len(blocks) - 1  # the level that ends at full resolution
            checkpointed = self.gradient_checkpointing and (last or not self.checkpoint_full_resolution_only)
            if torch.is_grad_enabled() and checkpointed:
                hidden = self._gradient_checkpointing_func(block, hidden)
            else:
                hidden = block(hidden)
        hidden = self.conv_act(self.conv_norm_out(hidden))  # (B, C0, h * f, w * f)
        return self.conv_out(hidden)  # (B, out_channels, h * f, w * f), linear output


class RadioVAE(ModelMixin, AutoencoderMixin, ConfigMixin):
    r"""The RadioDiff VAE: a KL-regularised autoencoder for single-channel radio maps.

    Parameters:
        in_channels (`int`, defaults to 1): channels of the input map.
        out_channels (`int`, defaults to 1): channels of the reconstruction.
        block_out_channels (`Tuple[int]`, defaults to `(128, 256, 512)`): channels of each resolution level.
        layers_per_block (`int`, defaults to 2): resnet blocks per encoder level.
        decoder_layers_per_block (`int`, defaults to 2): resnet blocks per decoder level (3 in the original code).
        num_downsamples (`int`, defaults to 3): stride-2 downsamplings, after the first `num_downsamples` levels;
            the downsampling factor is `2 ** num_downsamples`. The decoder upsamples as often.
        upsample_type (`str`, defaults to `"conv_transpose"`): `"conv_transpose"` (4x4 stride-2 transposed conv, the
            report) or `"nearest"` (nearest x2 then 3x3 conv, the original code and `AutoencoderKL`).
        upsample_position (`str`, defaults to `"first"`): `"first"`: a decoder level upsamples before its resnets, so
            the decoder mirrors the encoder (resnets at every resolution up to the full one); `"last"`: after them,
            the `AutoencoderKL` layout (same computation when `num_downsamples < len(block_out_channels)`).
        mid_block_add_attention (`bool`, defaults to `False`): one self-attention in each mid block.
        latent_channels (`int`, defaults to 3): channels of the latent.
        norm_num_groups (`int`, defaults to 32): GroupNorm groups.
        act_fn (`str`, defaults to `"silu"`): activation of the resnets (Swish).
        sample_size (`int`, defaults to 320): the training resolution; also the tile size when tiling is enabled.
        scaling_factor (`float`, defaults to 1.0): latent multiplier for a diffusion model (`z * scaling_factor`).
            1.0 means "not measured"; training stores `1 / std` of its latents, a converted original checkpoint 0.3.
        use_quant_conv (`bool`, defaults to `True`): 1x1 conv on the posterior moments.
        use_post_quant_conv (`bool`, defaults to `True`): 1x1 conv on the latent before decoding.
        shift_factor (`float`, *optional*): `AutoencoderKL`'s latent shift (`(z - shift_factor) * scaling_factor`);
            None: RadioVAE latents are only scaled.
        latents_mean / latents_std (`Tuple[float]`, *optional*): per-channel latent statistics that SDXL-style
            pipelines normalise with instead of `scaling_factor`; None: not measured.
        force_upcast (`bool`, defaults to `True`): asks fp16 pipelines to run the VAE in fp32, as `AutoencoderKL`'s
            default does; RadioVAE's fp16 range is not verified.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["ResnetBlock2D"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        block_out_channels: Tuple[int, ...] = (128, 256, 512),
        layers_per_block: int = 2,
        decoder_layers_per_block: int = 2,
        num_downsamples: int = 3,
        upsample_type: str = "conv_transpose",
        upsample_position: str = "first",
        mid_block_add_attention: bool = False,
        latent_channels: int = 3,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        sample_size: int = 320,
        scaling_factor: float = 1.0,
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
        shift_factor: Optional[float] = None,
        latents_mean: Optional[Tuple[float, ...]] = None,
        latents_std: Optional[Tuple[float, ...]] = None,
        force_upcast: bool = True,
    ):
        check_config_values(locals())
        super().__init__()
        check_architecture(
            block_out_channels, num_downsamples, upsample_type, upsample_position, norm_num_groups, sample_size
        )
        self.encoder = RadioEncoder(
            in_channels=in_channels,
            latent_channels=latent_channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            num_downsamples=num_downsamples,
            norm_num_groups=norm_num_groups,
            act_fn=act_fn,
            mid_block_add_attention=mid_block_add_attention,
        )
        self.decoder = RadioDecoder(
            latent_channels=latent_channels,
            out_channels=out_channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=decoder_layers_per_block,
            num_upsamples=num_downsamples,
            upsample_type=upsample_type,
            upsample_position=upsample_position,
            norm_num_groups=norm_num_groups,
            act_fn=act_fn,
            mid_block_add_attention=mid_block_add_attention,
        )
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1) if use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1) if use_post_quant_conv else None

        self.use_slicing = False
        self.use_tiling = False
        # Tiles are `sample_size` pixels wide and overlap by a quarter, both rounded to the downsampling factor.
        self.tile_sample_min_size = max(self.downsample_factor, sample_size // self.downsample_factor * self.downsample_factor)
        self.tile_overlap_factor = 0.25

    # ----------------------------------------------------------------------------------------------------------
    # construction
    @classmethod
    def from_preset(cls, name: str, **overrides) -> "RadioVAE":
        """Builds a named architecture (see `PRESETS`); keyword arguments override single config values."""
        if name not in PRESETS:
            raise ValueError(f"Unknown RadioVAE preset {name!r}: expected one of {sorted(PRESETS)}.")
        unknown = sorted(set(overrides) - set(cls._init_parameter_names()))
        if unknown:
            raise ValueError(
                f"Unknown RadioVAE config key(s) {unknown} for preset {name!r}: expected any of "
                f"{sorted(cls._init_parameter_names())}."
            )
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def _init_parameter_names(cls) -> Tuple[str, ...]:
        return tuple(name for name in inspect.signature(cls.__init__).parameters if name != "self")

    @property
    def downsample_factor(self) -> int:
        """Spatial factor between a map and its latent (8 for `radiodiff-vae`, 4 for `radiodiff-ldm-f4`)."""
        return 2 ** self.config.num_downsamples

    @property
    def spatial_compression_ratio(self) -> int:
        """The `vae_scale_factor` a diffusers pipeline needs: `2 ** (len(block_out_channels) - 1)`, which pipelines
        compute from an `AutoencoderKL` config, is wrong whenever `num_downsamples != len(block_out_channels) - 1`."""
        return self.downsample_factor

    def latent_shape(self, height: int, width: int) -> Tuple[int, int, int]:
        """`(latent_channels, height / f, width / f)` of the latent of a `height` x `width` map."""
        check_size_divisible(height, width, self.downsample_factor, "RadioVAE.latent_shape: the map size")
        factor = self.downsample_factor
        return (self.config.latent_channels, height // factor, width // factor)

    def enable_gradient_checkpointing(self, gradient_checkpointing_func=None, full_resolution_only: bool = False):
        """diffusers' gradient checkpointing: the activations of each checkpointed level are recomputed in the
        backward instead of kept. ``full_resolution_only=True`` checkpoints only the encoder's first and the
        decoder's last level, which hold most of the activation memory (the widest maps), and keeps the rest."""
        super().enable_gradient_checkpointing(gradient_checkpointing_func)
        self.encoder.checkpoint_full_resolution_only = full_resolution_only
        self.decoder.checkpoint_full_resolution_only = full_resolution_only

    def get_last_layer(self) -> torch.nn.Parameter:
        """Weight of the decoder's output conv, where the adaptive GAN weight compares gradient norms."""
        return self.decoder.conv_out.weight

    # ----------------------------------------------------------------------------------------------------------
    # encode
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if self.use_tiling and max(height, width) > self.tile_sample_min_size:
            return self._tiled(x, self._encode_tile, self.tile_sample_min_size, 1 / self.downsample_factor)
        return self._encode_tile(x)

    def _encode_tile(self, x: torch.Tensor) -> torch.Tensor:
        moments = self.encoder(x)  # (B, 2 * latent_channels, H/f, W/f)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return moments

    @apply_forward_hook
    def encode(
        self, x: torch.Tensor, return_dict: bool = True, check_values: bool = True
    ) -> Union[AutoencoderKLOutput, Tuple[DiagonalGaussianDistribution]]:
        """Encodes maps `x` of shape `(B, in_channels, H, W)`, values in [-1, 1], into the posterior.

        `check_values=False` skips the value checks (finite, in range), each a host-device sync; the shape checks
        always run. For callers that checked the maps before they moved to the device, as the training step does.

        Returns `AutoencoderKLOutput` whose `latent_dist` has mean and std of shape `(B, latent_channels, H/f, W/f)`
        (a one-tuple when `return_dict=False`).
        """
        check_tensor(x, self.config.in_channels, self.downsample_factor, "map", "encode", check_values)
        if check_values:
            warn_if_not_model_range(x)
        if self.use_slicing and x.shape[0] > 1:
            moments = torch.cat([self._encode(x_slice) for x_slice in x.split(1)])
        else:
            moments = self._encode(x)
        if torch.is_autocast_enabled(moments.device.type):
            # Mixed-precision training: the KL term and the posterior draw in fp32, as without autocast.
            moments = moments.float()
        posterior = DiagonalGaussianDistribution(moments)
        if not return_dict:
            return (posterior,)
        return AutoencoderKLOutput(latent_dist=posterior)

    # ----------------------------------------------------------------------------------------------------------
    # decode
    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        height, width = z.shape[-2:]
        tile_latent_size = self.tile_sample_min_size // self.downsample_factor
        if self.use_tiling and max(height, width) > tile_latent_size:
            return self._tiled(z, self._decode_tile, tile_latent_size, self.downsample_factor)
        return self._decode_tile(z)

    def _decode_tile(self, z: torch.Tensor) -> torch.Tensor:
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)  # (B, out_channels, h * f, w * f)

    @apply_forward_hook
    def decode(
        self,
        z: torch.Tensor,
        return_dict: bool = True,
        generator: Optional[torch.Generator] = None,
        check_values: bool = True,
    ) -> Union[DecoderOutput, Tuple[torch.Tensor]]:
        """Decodes latents `z` of shape `(B, latent_channels, h, w)` into maps `(B, out_channels, h * f, w * f)`.

        `z` is the unscaled latent (divide by `scaling_factor` first if it comes from a diffusion model).
        `check_values=False` skips the finiteness check (a host-device sync).
        """
        check_tensor(z, self.config.latent_channels, 1, "latent", "decode", check_values)
        if self.use_slicing and z.shape[0] > 1:
            decoded = torch.cat([self._decode(z_slice) for z_slice in z.split(1)])
        else:
            decoded = self._decode(z)
        if not return_dict:
            return (decoded,)
        return DecoderOutput(sample=decoded)

    # ----------------------------------------------------------------------------------------------------------
    # tiling: overlapping tiles, blended with weights that fall linearly to the tile borders inside the overlap
    def _tiled(
        self, x: torch.Tensor, function: Callable[[torch.Tensor], torch.Tensor], tile: int, scale: float
    ) -> torch.Tensor:
        """Applies `function` (which maps a `tile`-sized input to a `tile * scale` output) over overlapping tiles."""
        factor = self.downsample_factor
        unit = factor if scale < 1 else 1  # input sizes must stay multiples of the factor when encoding
        overlap = int(tile * self.tile_overlap_factor) // unit * unit
        stride = max(unit, tile - overlap)
        height, width = x.shape[-2:]
        output, weight = None, None
        for top in _tile_starts(height, tile, stride):
            for left in _tile_starts(width, tile, stride):
                piece = function(x[..., top : top + tile, left : left + tile])
                if output is None:
                    out_height, out_width = round(height * scale), round(width * scale)
                    output = piece.new_zeros(piece.shape[0], piece.shape[1], out_height, out_width)
                    weight = piece.new_zeros(1, 1, out_height, out_width)
                ramp = _blend_ramp(piece.shape[-2], piece.shape[-1], max(1, round(overlap * scale)), piece)
                out_top, out_left = round(top * scale), round(left * scale)
                window = (..., slice(out_top, out_top + piece.shape[-2]), slice(out_left, out_left + piece.shape[-1]))
                output[window] += piece * ramp
                weight[window] += ramp
        return output / weight

    # ----------------------------------------------------------------------------------------------------------
    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: Optional[torch.Generator] = None,
        return_posterior: bool = False,
        check_values: bool = True,
    ) -> Union[RadioVAEOutput, Tuple[torch.Tensor, ...]]:
        """Encodes and decodes `sample` `(B, in_channels, H, W)`.

        Args:
            sample_posterior: decode a draw from the posterior (training) instead of its mean.
            generator: makes that draw repeatable.
            return_posterior: also return the posterior, so that a training step needs a single forward.
            check_values: check that `sample` is finite and in range (host-device syncs). `False` leaves no sync
                in the forward: the training step checks its maps on the host before they move.

        Returns:
            `RadioVAEOutput` with `sample` `(B, out_channels, H, W)` (and `latent_dist`), or the tuple
            `(sample,)` / `(sample, latent_dist)` when `return_dict=False`.
        """
        posterior = self.encode(sample, check_values=check_values).latent_dist
        latent = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        decoded = self.decode(latent, check_values=False).sample  # the encoder's own latent: nothing to check
        if not return_dict:
            return (decoded, posterior) if return_posterior else (decoded,)
        return RadioVAEOutput(sample=decoded, latent_dist=posterior if return_posterior else None)

    # ----------------------------------------------------------------------------------------------------------
    # sharing and loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], **kwargs) -> "RadioVAE":
        """diffusers' `from_pretrained`, with a clear error for a local folder whose files are missing or corrupt, a
        local path that does not exist (before any Hub lookup), another model class, and non-finite weights."""
        if isinstance(pretrained_model_name_or_path, (str, os.PathLike)):
            check_pretrained_source(pretrained_model_name_or_path, kwargs.get("subfolder"), kwargs.get("variant"))
        model = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        check_finite_weights(model, pretrained_model_name_or_path)
        return model

    def to_autoencoder_kl(self) -> "AutoencoderKL":
        """The same network as a `diffusers.AutoencoderKL`: same weights, dtype and device, equal `encode`/`decode`.

        `to_autoencoder_kl().save_pretrained(folder)` writes a folder that `AutoencoderKL.from_pretrained` loads
        (the command line: `radiodiff-vae export-diffusers`). Raises ValueError for a layout `AutoencoderKL` cannot
        build, such as the report's `radiodiff-vae` (transposed convs, upsampling first, 8x with three levels).
        """
        from diffusers import AutoencoderKL

        autoencoder = AutoencoderKL(**autoencoder_kl_config(self.config))
        autoencoder.load_state_dict(self.state_dict(), strict=True)
        return placed_like(autoencoder, self)

    @classmethod
    def from_autoencoder_kl(
        cls, autoencoder_or_path: Union["AutoencoderKL", str, os.PathLike], **from_pretrained_kwargs
    ) -> "RadioVAE":
        """A RadioVAE with the layout and weights of a `diffusers.AutoencoderKL` (a model, a folder or a Hub id).

        Keyword arguments go to `AutoencoderKL.from_pretrained` (`subfolder`, `torch_dtype`, `revision`, ...).
        Raises ValueError for an `AutoencoderKL` with block types other than `DownEncoderBlock2D` / `UpDecoderBlock2D`.
        """
        from diffusers import AutoencoderKL

        if isinstance(autoencoder_or_path, (str, os.PathLike)):
            local_path_or_hub_id(autoencoder_or_path, "AutoencoderKL folder")  # a mistyped path fails before the Hub
            location = {key: value for key, value in from_pretrained_kwargs.items() if key in CONFIG_LOCATION_KEYS}
            class_name = AutoencoderKL.load_config(autoencoder_or_path, **location).get("_class_name")
            if class_name != "AutoencoderKL":
                # AutoencoderKL would build its default one-level layout from another class's config and only warn.
                raise ValueError(
                    f"{autoencoder_or_path} holds a {class_name}, not an AutoencoderKL"
                    + (": load it with RadioVAE.from_pretrained." if class_name == cls.__name__ else ".")
                )
            autoencoder = AutoencoderKL.from_pretrained(autoencoder_or_path, **from_pretrained_kwargs)
        elif isinstance(autoencoder_or_path, AutoencoderKL):
            if from_pretrained_kwargs:
                raise ValueError(
                    f"from_autoencoder_kl takes from_pretrained arguments only with a folder or Hub id, got a model "
                    f"and {sorted(from_pretrained_kwargs)}."
                )
            autoencoder = autoencoder_or_path
        else:
            raise ValueError(
                "from_autoencoder_kl expects a diffusers.AutoencoderKL, a folder or a Hub id, "
                f"got {type(autoencoder_or_path).__name__}."
            )
        model = cls(**radio_vae_config_of_autoencoder_kl(autoencoder.config))
        model.load_state_dict(autoencoder.state_dict(), strict=True)
        return placed_like(model, autoencoder)


# --------------------------------------------------------------------------------------------------------------
# tiling helpers
def _tile_starts(length: int, tile: int, stride: int) -> list:
    """Start offsets of tiles of size `tile` that cover `[0, length)`; the last tile ends at `length`."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _blend_ramp(height: int, width: int, overlap: int, like: torch.Tensor) -> torch.Tensor:
    """Weights `(1, 1, height, width)` that rise linearly from the tile border to 1 over `overlap` pixels."""

    def ramp(size: int) -> torch.Tensor:
        position = torch.arange(size, device=like.device, dtype=like.dtype)
        distance_to_border = torch.minimum(position + 0.5, size - position - 0.5)
        return (distance_to_border / overlap).clamp(max=1.0)

    return (ramp(height)[:, None] * ramp(width)[None, :])[None, None]
