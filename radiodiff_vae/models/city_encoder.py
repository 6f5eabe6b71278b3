"""The condition encoder of the construction stage: a city (building mask + transmitter) to feature maps.

Two parts:

* :func:`city_features`: deterministic physics features at full resolution, `(B, 5, H, W)`: the building mask, the
  transmitter's one-hot image, the normalised log-distance to the transmitter, the fraction of the straight
  transmitter -> pixel segment that lies inside buildings, and how many buildings that segment enters. A one-pixel
  transmitter tells a network little; the distance and the walls in the way are what path gain mostly follows (on
  the synthetic cities a least-squares fit on distance alone leaves 15.5 dB RMSE, 11.3 dB with the fraction, 7.6 dB
  with the fraction and the wall count: docs/construction.md).
* :class:`CityEncoder`: those features through a stem of diffusers blocks down to the latent's resolution (the VAE's
  downsampling factor), optionally with the features themselves, area-averaged, appended. With `downsample_factor=1`
  and no learned channels it is the feature extractor of the direct (pixel-space) predictor.
"""

import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ..data.conventions import RADIOMAPSEER_NATIVE_SIZE
from ..errors import CityInputError, InvalidArgumentError
from .blocks import down_encoder_blocks

FEATURE_NAMES: Tuple[str, ...] = ("buildings", "transmitter", "distance", "walls", "wall_count")

# distance feature = 1 + log10(d / side) / DISTANCE_DECADES: 0 at half a pixel of a native 256-pixel RadioMapSeer map
# (0.5 m of its 256 m), 1 at the map side, 1.06 at the diagonal. A fixed scale, so that a pixel at a given fraction of
# the map gets the same value at every resolution.
DISTANCE_DECADES = math.log10(2 * RADIOMAPSEER_NATIVE_SIZE)

# Sampled points this close to the pixel (in pixels) are not counted as entries: the pixel's own building.
END_MARGIN = 0.7

# "wall_count" = building entries / WALL_COUNT_SCALE: about [0, 1] in dense city blocks.
WALL_COUNT_SCALE = 4.0

# Points sampled at once along the rays (batch x samples x pixels): ~32 MiB of grid, whatever the map size.
MAX_RAY_POINTS = 1 << 22


def transmitter_positions(transmitter: torch.Tensor) -> torch.Tensor:
    """`(B, 2)` long (row, col) of the largest pixel of each transmitter image `(B, 1, H, W)`."""
    width = transmitter.shape[-1]
    flat = transmitter.reshape(transmitter.shape[0], -1).argmax(dim=1)  # (B,)
    return torch.stack([flat // width, flat % width], dim=1)


def _ray_fractions(ray_samples: Union[int, torch.Tensor], device: torch.device) -> torch.Tensor:
    if isinstance(ray_samples, torch.Tensor):
        return ray_samples.to(device=device, dtype=torch.float32).reshape(-1)
    if int(ray_samples) < 1:
        raise InvalidArgumentError(f"ray_samples must be >= 1, got {ray_samples}")
    return (torch.arange(int(ray_samples), device=device, dtype=torch.float32) + 0.5) / int(ray_samples)


def walls_crossed(
    buildings: torch.Tensor, positions: torch.Tensor, ray_samples: Union[int, torch.Tensor] = 64
) -> Tuple[torch.Tensor, torch.Tensor]:
    """What lies between each transmitter and each pixel centre: the fraction of the segment inside buildings, and
    how many times the segment enters a building.

    The building mask is sampled bilinearly (``F.grid_sample``) at ``ray_samples`` evenly spaced midpoints of every
    segment, in chunks of at most `MAX_RAY_POINTS` points, so memory stays bounded (a 320 x 320 map with 64 samples
    takes four chunks). The fraction is the mean of the samples; an entry is a rise of the sampled mask from one
    point to the next, summed over the segment, counting only points more than `END_MARGIN` pixels before the pixel
    itself (a pixel inside a building does not count its own walls). Path loss follows the entries: every wall costs
    about the same whatever the building's depth (multi-wall models, and RadioMapSeer's dominant-path simulations).

    Args:
        buildings (`torch.Tensor` of shape `(B, 1, H, W)`): the mask, 1 on buildings.
        positions (`torch.Tensor` of shape `(B, 2)`): (row, col) of each transmitter.
        ray_samples (`int` or `torch.Tensor` of shape `(S,)`): points per segment, or their positions in (0, 1),
            increasing.

    Returns:
        `(fraction, entries)`, each a `torch.Tensor` of shape `(B, 1, H, W)`, float32: the fraction in [0, 1] and the
        number of building entries (>= 0, not an integer where the mask is sampled between pixels); both 0 on a line
        of sight.
    """
    batch, _, height, width = buildings.shape
    device = buildings.device
    mask = buildings.float()
    fractions = _ray_fractions(ray_samples, device)  # (S,)
    # grid_sample's normalised coordinates of pixel centres (align_corners=False): x = (2 col + 1) / W - 1
    pixel_x = (2 * torch.arange(width, device=device, dtype=torch.float32) + 1) / width - 1  # (W,)
    pixel_y = (2 * torch.arange(height, device=device, dtype=torch.float32) + 1) / height - 1  # (H,)
    tx_y = (2 * positions[:, 0].float() + 1) / height - 1  # (B,)
    tx_x = (2 * positions[:, 1].float() + 1) / width - 1  # (B,)
    rows = torch.arange(height, device=device, dtype=torch.float32).view(1, -1, 1)
    cols = torch.arange(width, device=device, dtype=torch.float32).view(1, 1, -1)
    length = torch.sqrt(
        (rows - positions[:, 0].float().view(-1, 1, 1)) ** 2 + (cols - positions[:, 1].float().view(-1, 1, 1)) ** 2
    )  # (B, H, W) segment length in pixels
    inside = torch.zeros(batch, height, width, device=device, dtype=torch.float32)
    entries = torch.zeros_like(inside)
    previous = torch.zeros_like(inside)  # the mask before the first point: the transmitter starts outside
    chunk = max(1, MAX_RAY_POINTS // max(1, batch * height * width))
    for start in range(0, fractions.numel(), chunk):
        t = fractions[start : start + chunk].view(1, -1, 1, 1)  # (1, k, 1, 1)
        samples = t.shape[1]
        x = tx_x.view(-1, 1, 1, 1) + t * (pixel_x.view(1, 1, 1, -1) - tx_x.view(-1, 1, 1, 1))  # (B, k, 1, W)
        y = tx_y.view(-1, 1, 1, 1) + t * (pixel_y.view(1, 1, -1, 1) - tx_y.view(-1, 1, 1, 1))  # (B, k, H, 1)
        grid = torch.stack(torch.broadcast_tensors(x, y), dim=-1)  # (B, k, H, W, 2)
        grid = grid.reshape(batch, samples * height, width, 2)
        sampled = F.grid_sample(mask, grid, mode="bilinear", padding_mode="border", align_corners=False)
        sampled = sampled.view(batch, samples, height, width)  # (B, k, H, W)
        inside += sampled.sum(dim=1)
        before_end = ((1 - t) * length.unsqueeze(1) > END_MARGIN).float()  # (B, k, H, W)
        counted = sampled * before_end
        steps = torch.diff(counted, dim=1, prepend=previous.unsqueeze(1))  # (B, k, H, W)
        entries += steps.clamp(min=0).sum(dim=1)
        previous = counted[:, -1]
    return (inside / fractions.numel()).unsqueeze(1), entries.unsqueeze(1)


def walls_fraction(
    buildings: torch.Tensor, positions: torch.Tensor, ray_samples: Union[int, torch.Tensor] = 64
) -> torch.Tensor:
    """`(B, 1, H, W)`: the fraction of each transmitter -> pixel segment inside buildings (:func:`walls_crossed`)."""
    return walls_crossed(buildings, positions, ray_samples)[0]


def city_features(
    buildings: torch.Tensor,
    transmitter: torch.Tensor,
    ray_samples: Union[int, torch.Tensor] = 64,
    features: Sequence[str] = FEATURE_NAMES,
) -> torch.Tensor:
    """Physics features of a city at full resolution.

    Args:
        buildings (`torch.Tensor` of shape `(B, 1, H, W)`): building mask, 1 on buildings, 0 elsewhere.
        transmitter (`torch.Tensor` of shape `(B, 1, H, W)`): the transmitter's image; its largest pixel is the
            transmitter (a one-hot image as the datasets give).
        ray_samples (`int` or `torch.Tensor` of shape `(S,)`, defaults to 64): points sampled along each
            transmitter -> pixel segment for ``"walls"`` and ``"wall_count"`` (or their positions in (0, 1)).
        features (`Sequence[str]`, defaults to all five): which channels, in order, among
            ``"buildings"``, ``"transmitter"`` (one-hot), ``"distance"`` (``1 + log10(d / side) / log10(512)`` with
            ``d`` the distance in pixels clamped at half a pixel and ``side = max(H, W)``: about [0, 1], clamped at
            0), ``"walls"`` (fraction of the segment inside buildings, [0, 1]), ``"wall_count"`` (buildings the segment
            enters, divided by `WALL_COUNT_SCALE`).

    Returns:
        `torch.Tensor` of shape `(B, len(features), H, W)`, float32.
    """
    if buildings.ndim != 4 or buildings.shape[1] != 1 or transmitter.shape != buildings.shape:
        raise CityInputError(
            f"city_features expects buildings and transmitter of one shape (B, 1, H, W), got "
            f"{tuple(buildings.shape)} and {tuple(transmitter.shape)}"
        )
    unknown = [name for name in features if name not in FEATURE_NAMES]
    if unknown or not features:
        raise InvalidArgumentError(f"features must be a non-empty selection of {FEATURE_NAMES}, got {tuple(features)}")
    batch, _, height, width = buildings.shape
    device = buildings.device
    positions = transmitter_positions(transmitter)  # (B, 2)
    channels = {}
    if "buildings" in features:
        channels["buildings"] = buildings.float()
    if "transmitter" in features:
        one_hot = torch.zeros(batch, height * width, device=device, dtype=torch.float32)
        one_hot[torch.arange(batch, device=device), positions[:, 0] * width + positions[:, 1]] = 1.0
        channels["transmitter"] = one_hot.view(batch, 1, height, width)
    if "distance" in features:
        rows = torch.arange(height, device=device, dtype=torch.float32).view(1, -1, 1)
        cols = torch.arange(width, device=device, dtype=torch.float32).view(1, 1, -1)
        d_row = rows - positions[:, 0].float().view(-1, 1, 1)  # (B, H, 1)
        d_col = cols - positions[:, 1].float().view(-1, 1, 1)  # (B, 1, W)
        distance = torch.sqrt(d_row**2 + d_col**2).clamp(min=0.5) / max(height, width)  # (B, H, W)
        channels["distance"] = (1.0 + torch.log10(distance) / DISTANCE_DECADES).clamp(min=0.0).unsqueeze(1)
    if "walls" in features or "wall_count" in features:
        fraction, entries = walls_crossed(buildings, positions, ray_samples)
        channels["walls"] = fraction
        channels["wall_count"] = entries / WALL_COUNT_SCALE
    return torch.cat([channels[name] for name in features], dim=1)  # (B, len(features), H, W)


def _check_encoder_config(
    in_features: Tuple[str, ...],
    out_channels: int,
    block_out_channels: Tuple[int, ...],
    layers_per_block: int,
    downsample_factor: int,
    ray_samples: int,
    norm_num_groups: int,
    append_features: bool,
) -> int:
    """Raises a one-line InvalidArgumentError for a config the encoder cannot build; returns the learned channels."""
    if not in_features or len(set(in_features)) != len(in_features) or not set(in_features) <= set(FEATURE_NAMES):
        raise InvalidArgumentError(
            f"in_features must be distinct names among {FEATURE_NAMES}, got {tuple(in_features)}"
        )
    factor = int(downsample_factor)
    if factor < 1 or factor & (factor - 1):
        raise InvalidArgumentError(
            f"downsample_factor must be a power of two >= 1 (the VAE's factor), got {downsample_factor}"
        )
    if int(ray_samples) < 1:
        raise InvalidArgumentError(f"ray_samples must be >= 1, got {ray_samples}")
    learned = int(out_channels) - (len(in_features) if append_features else 0)
    if learned < 0 or out_channels < 1:
        raise InvalidArgumentError(
            f"out_channels {out_channels} must be >= {len(in_features) if append_features else 1} "
            f"({'the appended features' if append_features else 'one channel'})"
        )
    if learned > 0:
        num_downsamples = factor.bit_length() - 1
        if len(block_out_channels) < max(1, num_downsamples):
            raise InvalidArgumentError(
                f"block_out_channels {tuple(block_out_channels)} needs at least {max(1, num_downsamples)} level(s): "
                f"one per downsampling of downsample_factor {factor}"
            )
        if layers_per_block < 1:
            raise InvalidArgumentError(f"layers_per_block must be >= 1, got {layers_per_block}")
        bad = [channels for channels in block_out_channels if channels % norm_num_groups]
        if bad:
            raise InvalidArgumentError(
                f"block_out_channels {tuple(block_out_channels)} must be multiples of norm_num_groups {norm_num_groups}"
            )
    return learned


class CityEncoder(ModelMixin, ConfigMixin):
    r"""Encodes a city (building mask + transmitter) into feature maps at the latent's resolution.

    The physics features of :func:`city_features` go through ``conv_in``, one diffusers ``DownEncoderBlock2D`` per
    entry of ``block_out_channels`` (the first ``log2(downsample_factor)`` of them end with a stride-2
    ``Downsample2D``), a GroupNorm + activation and ``conv_out``. With ``append_features`` the features themselves,
    averaged over each ``f x f`` cell, are appended after the learned channels.

    Parameters:
        in_features (`Tuple[str]`, defaults to `FEATURE_NAMES`, all five): the physics
            features used, in order (see :func:`city_features`).
        out_channels (`int`, defaults to 32): channels of the output, appended features included.
        block_out_channels (`Tuple[int]`, defaults to `(32, 64)`): channels of each level of the stem.
        layers_per_block (`int`, defaults to 1): resnets per level.
        downsample_factor (`int`, defaults to 4): spatial factor between input and output, a power of two (the
            VAE's `downsample_factor`; 1 for the direct predictor).
        ray_samples (`int`, defaults to 64): points sampled along each transmitter -> pixel segment.
        norm_num_groups (`int`, defaults to 8): GroupNorm groups of the stem.
        act_fn (`str`, defaults to `"silu"`): activation of the resnets.
        append_features (`bool`, defaults to `True`): append the area-averaged features to the learned channels.
            With ``out_channels == len(in_features)`` there is no stem: the output is the features alone.
    """

    @register_to_config
    def __init__(
        self,
        in_features: Tuple[str, ...] = FEATURE_NAMES,
        out_channels: int = 32,
        block_out_channels: Tuple[int, ...] = (32, 64),
        layers_per_block: int = 1,
        downsample_factor: int = 4,
        ray_samples: int = 64,
        norm_num_groups: int = 8,
        act_fn: str = "silu",
        append_features: bool = True,
    ):
        super().__init__()
        in_features, block_out_channels = tuple(in_features), tuple(block_out_channels)
        self.learned_channels = _check_encoder_config(
            in_features, out_channels, block_out_channels, layers_per_block, downsample_factor, ray_samples,
            norm_num_groups, append_features,
        )  # fmt: skip
        # The ray positions as a float buffer: it gives a stem-less encoder (no parameters) a device, a dtype and a
        # weights file, which diffusers' pipelines and from_pretrained need.
        self.register_buffer("ray_positions", (torch.arange(ray_samples, dtype=torch.float32) + 0.5) / ray_samples)
        num_downsamples = int(downsample_factor).bit_length() - 1
        self.conv_in = self.down_blocks = self.conv_norm_out = self.conv_act = self.conv_out = None
        if self.learned_channels > 0:
            self.conv_in = nn.Conv2d(len(in_features), block_out_channels[0], kernel_size=3, padding=1)
            self.down_blocks = down_encoder_blocks(
                block_out_channels, layers_per_block, num_downsamples, norm_num_groups, act_fn, downsample_padding=1
            )
            last = block_out_channels[-1]
            self.conv_norm_out = nn.GroupNorm(num_groups=norm_num_groups, num_channels=last, eps=1e-6)
            self.conv_act = nn.SiLU()
            self.conv_out = nn.Conv2d(last, self.learned_channels, kernel_size=3, padding=1)

    def features(self, buildings: torch.Tensor, transmitter: torch.Tensor) -> torch.Tensor:
        """The physics features `(B, len(in_features), H, W)`, float32 (see :func:`city_features`)."""
        return city_features(buildings, transmitter, self.ray_positions, self.config.in_features)

    def forward(
        self, buildings: torch.Tensor, transmitter: torch.Tensor, features: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """
        Args:
            buildings (`torch.Tensor` of shape `(B, 1, H, W)`): building mask in {0, 1}.
            transmitter (`torch.Tensor` of shape `(B, 1, H, W)`): one-hot transmitter image.
            features (`torch.Tensor` of shape `(B, len(in_features), H, W)`, *optional*): the output of
                :meth:`features` for these maps, computed earlier (a training loop that caches them per map skips
                the ray sampling at every step).

        Returns:
            `torch.Tensor` of shape `(B, out_channels, H / f, W / f)` in the encoder's dtype: the learned channels,
            then (``append_features``) the features averaged over each ``f x f`` cell.
        """
        factor = self.config.downsample_factor
        height, width = buildings.shape[-2:]
        if height % factor or width % factor:
            raise CityInputError(
                f"CityEncoder: the map size {height}x{width} is not divisible by its downsample_factor {factor}"
            )
        if features is None:
            features = self.features(buildings, transmitter)
        elif features.shape != (buildings.shape[0], len(self.config.in_features), height, width):
            raise CityInputError(
                f"CityEncoder: expected precomputed features of shape "
                f"{(buildings.shape[0], len(self.config.in_features), height, width)}, got {tuple(features.shape)}"
            )
        features = features.to(self.dtype)  # (B, n, H, W)
        outputs = []
        if self.learned_channels > 0:
            hidden = self.conv_in(features)  # (B, C0, H, W)
            for block in self.down_blocks:
                hidden = block(hidden)  # (B, C_i, H / 2^i, W / 2^i) after each downsampling level
            outputs.append(self.conv_out(self.conv_act(self.conv_norm_out(hidden))))  # (B, learned, H/f, W/f)
        if self.config.append_features:
            outputs.append(F.avg_pool2d(features, factor) if factor > 1 else features)  # (B, n, H/f, W/f)
        return torch.cat(outputs, dim=1)
