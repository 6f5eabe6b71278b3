"""The trivial codec every learned radio-map codec must beat: resizing with the same number of values.

A VAE whose latent of a ``H x W`` map is ``C x h x w`` stores ``C * h * w`` numbers per map. The resize baseline
stores as many: it area-averages the map down to ``s x s`` pixels, with ``s * s`` the square nearest to
``C * h * w``, and brings it back with bicubic interpolation. A learned codec that does not beat it has not learned
to use its latent. ``radiodiff-vae evaluate`` scores it beside every model, on the same maps and pixels, and training
logs the gap (``validation/psnr_gap_db``).

Maps that are not square (or a latent that is not) cannot keep the aspect ratio with a square; then each side is
divided by the model's downsampling factor and multiplied by ``sqrt(C)``, which keeps ``C`` channels' worth of
values in one channel. :class:`ResizeBaseline` says which rule was used.
"""

import math
from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["ResizeBaseline", "baseline_for_model", "downsample_factor_of", "resize_baseline", "resize_reconstruct"]

SQUARE_RULE = "square"
PER_SIDE_RULE = "per-side"


@dataclass(frozen=True)
class ResizeBaseline:
    """The size a map is resized to so that it holds as many values as a model's latent.

    Args:
        height, width: the small image, in pixels (one channel).
        latent_values: ``C * h * w`` of the model's latent, the budget being matched.
        rule: ``"square"`` (nearest square of ``latent_values``) or ``"per-side"`` (each side / factor * sqrt(C)).
    """

    height: int
    width: int
    latent_values: int
    rule: str

    @property
    def values(self) -> int:
        """Numbers the baseline stores per map (``height * width``)."""
        return self.height * self.width

    def describe(self) -> str:
        """One line, e.g. ``"area-resize to 14x14 (196 values, latent 192), bicubic back"``."""
        how = "nearest square" if self.rule == SQUARE_RULE else "each side / factor x sqrt(C): maps are not square"
        return (
            f"area-resize to {self.height}x{self.width} ({self.values} values for a latent of {self.latent_values}; "
            f"{how}), bicubic back"
        )


def resize_baseline(latent_shape: Tuple[int, int, int], height: int, width: int) -> ResizeBaseline:
    """The resize baseline for ``height x width`` maps whose latent is ``latent_shape = (C, h, w)``."""
    channels, latent_height, latent_width = (int(value) for value in latent_shape)
    if min(channels, latent_height, latent_width, height, width) < 1:
        raise ValueError(
            f"resize_baseline expected a positive latent shape (C, h, w) and map size, got {tuple(latent_shape)} "
            f"for {height}x{width} maps"
        )
    values = channels * latent_height * latent_width
    if height == width and latent_height == latent_width:
        side = max(1, round(math.sqrt(values)))
        size, rule = (min(side, height), min(side, width)), SQUARE_RULE
    else:
        stretch = math.sqrt(channels)
        size = (min(height, max(1, round(latent_height * stretch))), min(width, max(1, round(latent_width * stretch))))
        rule = PER_SIDE_RULE
    return ResizeBaseline(height=size[0], width=size[1], latent_values=values, rule=rule)


def resize_reconstruct(maps: torch.Tensor, baseline: ResizeBaseline) -> torch.Tensor:
    """``(B, C, H, W)`` maps -> their baseline reconstruction ``(B, C, H, W)``.

    Area averaging (``adaptive_avg_pool2d``) down, bicubic (``align_corners=False``) up, both in float32. Bicubic can
    overshoot the data's range at edges; callers clamp as they clamp a model's reconstruction.
    """
    if maps.ndim != 4:
        raise ValueError(f"resize_reconstruct expected maps of shape (B, C, H, W), got shape {tuple(maps.shape)}")
    full = maps.float()
    small = F.adaptive_avg_pool2d(full, (baseline.height, baseline.width))  # (B, C, height, width)
    restored = F.interpolate(small, size=full.shape[-2:], mode="bicubic", align_corners=False)  # (B, C, H, W)
    return restored.to(maps.dtype)


def downsample_factor_of(vae: torch.nn.Module) -> int:
    """Spatial factor between a map and its latent, for a ``RadioVAE`` or a ``diffusers.AutoencoderKL``."""
    factor = getattr(vae, "downsample_factor", None)
    if factor is None:
        # AutoencoderKL downsamples once per level except the last.
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
    return int(factor)


def baseline_for_model(vae: torch.nn.Module, height: int, width: int) -> ResizeBaseline:
    """The resize baseline that stores as many values per ``height x width`` map as ``vae``'s latent
    (``C x height / f x width / f``, ``f`` = :func:`downsample_factor_of`)."""
    factor = downsample_factor_of(vae)
    latent_shape = (int(vae.config.latent_channels), height // factor, width // factor)
    return resize_baseline(latent_shape, height, width)
