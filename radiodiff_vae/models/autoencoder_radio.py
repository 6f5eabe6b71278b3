"""RadioVAE: the variational autoencoder of the RadioDiff VAE, built from diffusers' blocks.

One configurable class covers both architectures of ``docs/architecture.md``:

* ``radiodiff-vae`` (default, the report): three strided-conv downsamplings, transposed-conv upsamplings, no
  attention, two resnets per level on both sides. A 1x320x320 map becomes a 3x40x40 latent.
* ``radiodiff-ldm-f4`` (the original RadioDiff code): two downsamplings, nearest+conv upsamplings, one
  self-attention in each mid block, three resnets per decoder level. Its state dict has exactly the keys and shapes
  of ``diffusers.AutoencoderKL`` built with the same numbers.

The architecture and input checks live in :mod:`.checks`, the presets in :mod:`.presets`, the config mapping to and
from ``AutoencoderKL`` in :mod:`radiodiff_vae.conversion.autoencoder_kl`.
"""

import inspect
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, List, Mapping, Optional, Tuple, Union

import diffusers
import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import AutoencoderMixin, DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, UpDecoderBlock2D
from diffusers.models.upsampling import Upsample2D
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop

from ..conversion.autoencoder_kl import (
    CONFIG_LOCATION_KEYS,
    autoencoder_kl_config,
    placed_like,
    radio_vae_config_of_autoencoder_kl,
)
from ..errors import InputError, InvalidArgumentError, ModelFileError, NotAFolderError, one_line
from ..hub_id import local_path_or_hub_id
from .blocks import down_encoder_blocks
from .checks import check_architecture, check_size_divisible, check_tensor, warn_if_not_model_range
from .normalization import GroupNormSiLU, fuse_group_norm_silu, unfuse_group_norm_silu
from .presets import PRESETS
from .upsampling import NearestConvUpsample2D

if TYPE_CHECKING:
    from diffusers import AutoencoderKL
    from huggingface_hub import CommitInfo


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


# --------------------------------------------------------------------------------------------------------------
# gradient checkpointing
GRADIENT_CHECKPOINTING_MODES = ("selective", "full_resolution", "all")


def _checkpointed(function: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
    """``function(hidden)`` whose intermediate tensors are recomputed in the backward; only ``hidden`` is kept.

    Early stop ends the recomputation as soon as the last tensor the backward needs is there. For a segment that
    ends on a convolution that is the convolution's input, saved before its kernel runs: the convolution itself
    never runs twice (forced on here, whatever a caller set globally)."""
    with set_checkpoint_early_stop(True):
        return checkpoint(function, hidden, use_reentrant=False, early_stop=True)


def _norm_act_conv(norm: nn.Module, act: nn.Module, conv: nn.Module, dropout: Optional[nn.Module] = None):
    """The segment ``conv(dropout(act(norm(h))))``: what selective checkpointing recomputes up to (not through)."""

    def run(hidden: torch.Tensor) -> torch.Tensor:
        hidden = act(norm(hidden))
        if dropout is not None:
            hidden = dropout(hidden)
        return conv(hidden)

    return run


def _resnet_selectively(resnet: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """``ResnetBlock2D.forward(hidden, temb=None)`` keeping only the input of each GroupNorm for the backward.

    Unfused, a resnet keeps six full-size tensors (both GroupNorms' and SiLUs' inputs, both convolutions' inputs);
    here two: its input and the first convolution's output. GroupNorm, SiLU (and dropout) run again in the backward,
    the convolutions once. A resnet with a time embedding or its own resampling runs unchanged."""
    plain = (
        isinstance(resnet, ResnetBlock2D)
        and resnet.upsample is None
        and resnet.downsample is None
        and resnet.time_emb_proj is None
        and resnet.time_embedding_norm == "default"
    )
    if not plain:
        return resnet(hidden, temb=None)
    act = resnet.nonlinearity
    residual = _checkpointed(_norm_act_conv(resnet.norm1, act, resnet.conv1), hidden)  # (B, C_out, H, W)
    residual = _checkpointed(_norm_act_conv(resnet.norm2, act, resnet.conv2, resnet.dropout), residual)
    shortcut = hidden
    if resnet.conv_shortcut is not None:
        # as diffusers does: contiguous in training (DDP gradient strides)
        shortcut = resnet.conv_shortcut(hidden.contiguous() if resnet.training else hidden)
    return (shortcut + residual) / resnet.output_scale_factor


def _level_selectively(block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """One encoder / decoder level (``DownEncoderBlock2D``, ``UNetMidBlock2D``, ``UpDecoderBlock2D`` or
    ``UpsampleFirstDecoderBlock2D``) in the order of its own forward, with its resnets checkpointed selectively."""
    if isinstance(block, UNetMidBlock2D):
        hidden = _resnet_selectively(block.resnets[0], hidden)
        for attention, resnet in zip(block.attentions, block.resnets[1:]):
            if attention is not None:
                hidden = attention(hidden, temb=None)
            hidden = _resnet_selectively(resnet, hidden)
        return hidden
    samplers = getattr(block, "downsamplers", None) or getattr(block, "upsamplers", None) or ()
    samplers_first = isinstance(block, UpsampleFirstDecoderBlock2D)
    for sampler in samplers if samplers_first else ():
        hidden = sampler(hidden)
    for resnet in block.resnets:
        hidden = _resnet_selectively(resnet, hidden)
    for sampler in () if samplers_first else samplers:
        hidden = sampler(hidden)
    return hidden


class _CheckpointedLevels(nn.Module):
    """The level loop and output head shared by :class:`RadioEncoder` and :class:`RadioDecoder`, with the
    gradient-checkpointing modes of :meth:`RadioVAE.enable_gradient_checkpointing` (``checkpoint_mode``)."""

    def _init_checkpointing(self) -> None:
        self.gradient_checkpointing = False
        self.checkpoint_mode = "all"

    def _selective(self) -> bool:
        return self.gradient_checkpointing and self.checkpoint_mode == "selective" and torch.is_grad_enabled()

    def _run_levels(self, blocks: List[nn.Module], hidden: torch.Tensor, full_resolution: int) -> torch.Tensor:
        """Runs ``blocks`` in order; ``full_resolution`` is the index of the level at the map's resolution."""
        selective = self._selective()
        for index, block in enumerate(blocks):
            if selective:
                hidden = _level_selectively(block, hidden)
            elif (
                self.gradient_checkpointing
                and torch.is_grad_enabled()
                and (self.checkpoint_mode == "all" or index == full_resolution)
            ):
                hidden = self._gradient_checkpointing_func(block, hidden)
            else:
                hidden = block(hidden)
        return hidden

    def _output(self, hidden: torch.Tensor) -> torch.Tensor:
        """``conv_out(conv_act(conv_norm_out(hidden)))``."""
        head = _norm_act_conv(self.conv_norm_out, self.conv_act, self.conv_out)
        return _checkpointed(head, hidden) if self._selective() else head(hidden)


class RadioEncoder(_CheckpointedLevels):
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
        # padding 0 pads (0, 1, 0, 1) before each stride-2 conv, as the CompVis encoder does
        self.down_blocks = down_encoder_blocks(
            block_out_channels, layers_per_block, num_downsamples, norm_num_groups, act_fn, downsample_padding=0
        )
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
        self._init_checkpointing()

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        hidden = self.conv_in(sample)  # (B, C0, H, W)
        hidden = self._run_levels([*self.down_blocks, self.mid_block], hidden, 0)  # (B, C_last, H/f, W/f)
        return self._output(hidden)  # (B, 2 * latent_channels, H/f, W/f)


class RadioDecoder(_CheckpointedLevels):
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
        self._init_checkpointing()

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        hidden = self.conv_in(latent)  # (B, C_last, h, w)
        blocks = [self.mid_block, *self.up_blocks]
        hidden = self._run_levels(blocks, hidden, len(blocks) - 1)  # (B, C0, h * f, w * f)
        return self._output(hidden)  # (B, out_channels, h * f, w * f), linear output


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
        factor = self.downsample_factor
        self.tile_sample_min_size = max(factor, sample_size // factor * factor)
        self.tile_overlap_factor = 0.25

    # ----------------------------------------------------------------------------------------------------------
    # construction
    @classmethod
    def from_preset(cls, name: str, **overrides) -> "RadioVAE":
        """Builds a named architecture (see `PRESETS`); keyword arguments override single config values."""
        if name not in PRESETS:
            raise InvalidArgumentError(f"Unknown RadioVAE preset {name!r}: expected one of {sorted(PRESETS)}.")
        unknown = sorted(set(overrides) - set(cls._init_parameter_names()))
        if unknown:
            raise InvalidArgumentError(
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

    def enable_gradient_checkpointing(
        self,
        gradient_checkpointing_func: Optional[Callable] = None,
        full_resolution_only: Optional[bool] = None,
        mode: Optional[str] = None,
    ) -> None:
        """Trades compute for activation memory in the training backward; values and gradients are unchanged.

        Args:
            gradient_checkpointing_func (`Callable`, *optional*): diffusers' checkpoint function for the level
                modes (default: non-reentrant ``torch.utils.checkpoint``); not with ``"selective"``.
            full_resolution_only (`bool`, *optional*): deprecated; ``mode="full_resolution"`` (True) or ``"all"``.
            mode (`str`, *optional*, defaults to `"all"`):
                - ``"selective"``: recomputes GroupNorm, SiLU and dropout in the backward and never a convolution;
                  each resnet keeps two full-size tensors (its input and its first convolution's output) instead
                  of six, at every level (docs/benchmarks.md, "Memory of the report's step, counted on the CPU").
                - ``"full_resolution"``: the encoder's first and the decoder's last level (the widest maps) keep
                  only their inputs and run their whole forward again in the backward, convolutions included.
                - ``"all"``: every level so (diffusers' meaning of gradient checkpointing): the most recomputation.

        Raises:
            InvalidArgumentError: an unknown ``mode``, a ``mode`` that contradicts ``full_resolution_only``, or a
                ``gradient_checkpointing_func`` with ``"selective"``.
        """
        if full_resolution_only is not None:
            implied = "full_resolution" if full_resolution_only else "all"
            warnings.warn(
                "RadioVAE.enable_gradient_checkpointing(full_resolution_only=...) is deprecated; use "
                f"mode={implied!r}.",
                FutureWarning,
                stacklevel=2,
            )
            if mode is not None and mode != implied:
                raise InvalidArgumentError(
                    f"enable_gradient_checkpointing: full_resolution_only={full_resolution_only} means "
                    f"mode={implied!r}, but mode={mode!r} was given; pass mode only."
                )
            mode = implied
        mode = "all" if mode is None else mode
        if mode not in GRADIENT_CHECKPOINTING_MODES:
            raise InvalidArgumentError(
                f"enable_gradient_checkpointing: mode must be one of {list(GRADIENT_CHECKPOINTING_MODES)}, got "
                f"{mode!r}."
            )
        if mode == "selective":
            if gradient_checkpointing_func is not None:
                raise InvalidArgumentError(
                    "enable_gradient_checkpointing: mode='selective' places its own checkpoints (around each "
                    "GroupNorm, SiLU and the convolution after them) and takes no gradient_checkpointing_func."
                )
            self.disable_gradient_checkpointing()  # diffusers' blocks run whole; their resnets are split here
            self.encoder.gradient_checkpointing = self.decoder.gradient_checkpointing = True
        else:
            super().enable_gradient_checkpointing(gradient_checkpointing_func)
        self.encoder.checkpoint_mode = self.decoder.checkpoint_mode = mode

    @property
    def gradient_checkpointing_mode(self) -> Optional[str]:
        """The mode of :meth:`enable_gradient_checkpointing`, or None while checkpointing is off."""
        return self.encoder.checkpoint_mode if self.encoder.gradient_checkpointing else None

    def fuse_group_norm_silu(self, enabled: bool = True) -> int:
        """Runs each GroupNorm that a SiLU always follows (both of every resnet, the encoder's and the decoder's
        output norms) together with that SiLU as one autograd node that keeps only its input for the backward
        (:class:`~radiodiff_vae.models.normalization.GroupNormSiLU`): one full-size tensor fewer per pair, the same
        values and gradients (bitwise, with torch's kernels), the same parameters and state dict. Where the device's
        GroupNorm kernel would copy a channels-last input to NCHW (CUDA, torch 2.11) it normalises in the input's
        layout. Composes with ``group_norm_in_autocast_dtype`` and every gradient-checkpointing mode.
        ``enabled=False`` undoes it. Returns how many GroupNorms changed."""
        changed = 0
        for norms, owner, act_name in self._norm_silu_pairs():
            act = getattr(owner, act_name)
            if enabled and isinstance(act, nn.SiLU):
                for norm in norms:
                    fuse_group_norm_silu(norm)
                setattr(owner, act_name, nn.Identity())
                changed += len(norms)
            elif not enabled and isinstance(act, nn.Identity) and all(isinstance(n, GroupNormSiLU) for n in norms):
                for norm in norms:
                    unfuse_group_norm_silu(norm)
                setattr(owner, act_name, nn.SiLU())
                changed += len(norms)
        return changed

    def _norm_silu_pairs(self):
        """``(norms, owner, name)``: the GroupNorms that ``owner.<name>`` (a SiLU unless fused) always follows."""
        for module in self.modules():
            if isinstance(module, ResnetBlock2D) and module.time_emb_proj is None:
                yield (module.norm1, module.norm2), module, "nonlinearity"  # used after both norms, nowhere else
        for coder in (self.encoder, self.decoder):
            yield (coder.conv_norm_out,), coder, "conv_act"

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
        """diffusers' `from_pretrained`; a name that is neither an existing path nor a Hub id (a mistyped local
        path) raises `FileNotFoundError` before any Hub lookup, and a file `NotADirectoryError` (diffusers would read
        it as the config and fail on a missing key)."""
        if isinstance(pretrained_model_name_or_path, (str, os.PathLike)):
            path = local_path_or_hub_id(pretrained_model_name_or_path, "model folder")
            if path is not None and path.is_file():
                raise NotAFolderError(
                    f"{path} is a file: expected a model folder with config.json and "
                    "diffusion_pytorch_model.safetensors (written by save_pretrained)."
                )
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (TypeError, ValueError, ZeroDivisionError) as error:
            # Raised while building the model from the folder's config values or fitting its weights: the folder's
            # fault, reported in one line. Our own checks already raise typed errors.
            if isinstance(error, InputError):
                raise
            raise ModelFileError(
                f"{pretrained_model_name_or_path} does not build a {cls.__name__}: {type(error).__name__}: "
                f"{one_line(error)} (check its config.json against save_pretrained's)."
            ) from error

    @classmethod
    def load_config(cls, pretrained_model_name_or_path: Union[str, os.PathLike], **kwargs):
        """diffusers' `load_config`, refusing the config of another class: diffusers would build a RadioVAE from its
        defaults and fail later on an unrelated value."""
        loaded = super().load_config(pretrained_model_name_or_path, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        if not isinstance(config, dict):
            raise ModelFileError(
                f"the config.json of {pretrained_model_name_or_path} holds a JSON {type(config).__name__}: expected "
                "an object of config values (written by save_pretrained)."
            )
        class_name = config.get("_class_name", cls.__name__)
        if class_name != cls.__name__:
            loader = "diffusers." if hasattr(diffusers, str(class_name)) else ""
            remedy = ", or convert it with RadioVAE.from_autoencoder_kl" if class_name == "AutoencoderKL" else ""
            article = "an" if str(class_name)[:1] in "AEIO" else "a"  # "a UNet2DModel"
            raise ModelFileError(
                f"{pretrained_model_name_or_path} holds {article} {class_name} (config.json _class_name), not a "
                f"{cls.__name__}: load it with {loader}{class_name}.from_pretrained{remedy}."
            )
        return loaded

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: Optional[str] = None,
        private: Optional[bool] = None,
        token: Optional[Union[str, bool]] = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: Optional[str] = None,
        subfolder: Optional[str] = None,
        *,
        training_args: Optional[Mapping[str, Any]] = None,
        metrics: Optional[Mapping[str, Any]] = None,
        sample_image: Optional[Union[str, os.PathLike]] = None,
        **card_kwargs: Any,
    ) -> "CommitInfo":
        """diffusers' `push_to_hub` with this package's model card in place of diffusers' generic one.

        Uploads `config.json`, the weights, `README.md` (rendered by `radiodiff_vae.hub.render_model_card`: the
        architecture, latent, data scale, metrics and how to load) and the sample figure, in one commit; the
        repository is created (public unless `private`) if needed. The endpoint is `HF_ENDPOINT`. A folder written
        by `save_pretrained` and `radiodiff_vae.hub.save_model_card` (the training script's output) is uploaded as it
        is with `huggingface_hub.HfApi().upload_folder`.

        Args:
            repo_id, commit_message, private, token, create_pr, safe_serialization, variant, subfolder: as in
                diffusers (`subfolder`: upload into it, without a card, as diffusers does).
            training_args (`Mapping`, *optional*): listed in the card (tokens left out).
            metrics (`Mapping`, *optional*): scores shown in the card and its `model-index`.
            sample_image (`str` or `os.PathLike`, *optional*): an image file uploaded next to the card and shown in it.
            **card_kwargs: passed to `render_model_card` (`description`, `eval_split`, `baseline`, ...).

        Returns:
            `CommitInfo`: `.oid` is the revision that `from_pretrained(repo_id, revision=...)` pins.
        """
        from ..hub.model_card import save_model_card
        from ..hub.push import push_with_card

        def write_card(folder: os.PathLike, name: str) -> None:
            save_model_card(folder, self, training_args, metrics, sample_image, repo_id=name, **card_kwargs)

        return push_with_card(
            self, repo_id, write_card, commit_message, private, token, create_pr, safe_serialization, variant, subfolder
        )

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
                raise ModelFileError(
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
