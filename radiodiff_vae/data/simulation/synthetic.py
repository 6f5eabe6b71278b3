"""A synthetic city radio-map generator in RadioMapSeer's conventions.

Every map is a 256 m x 256 m city area: a street grid at a random orientation whose blocks are cut into lots that
hold buildings of varied size, shape (rectangles and L-shapes) and rotation. A transmitter stands in the street,
and the path gain at every outdoor point is

    PG(d) = -FSPL(d) - L_wall * n_walls(d) + S(x),   FSPL(d) = 20 log10(4 pi f max(d, d_min) / c),

free-space loss at the carrier ``f`` (5.9 GHz, RadioMapSeer's), a fixed penetration loss for every building wall
the straight path crosses (the multi-wall model), and a spatially correlated Gaussian shadowing field ``S`` with an
exponential (Gudmundson) correlation. The gain is clipped to RadioMapSeer's dB range and scaled to [0, 1]; building
pixels are 0, as in RadioMapSeer. ``docs/data.md`` states the model with its parameters.

Each map is computed with vectorised torch operations over all its pixels (one map at a time, which keeps the
temporaries in the CPU caches). Random numbers come from numpy generators seeded by ``(seed, map_id)`` for the
city and ``(seed, map_id, tx + 1)`` for each transmitter (and its shadowing), so a map is the same whatever batch,
order or transmitter count produced it. The geometry lives in metres: at another ``resolution`` the same
seed gives the same city and transmitters rasterised with larger (or smaller) pixels; only the shadowing field,
drawn per pixel, differs between resolutions.
"""

import contextlib
import dataclasses
import functools
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ...atomic import atomic_write_json
from ..conventions import (
    RADIOMAPSEER_DB_RANGE,
    RADIOMAPSEER_FREQUENCY_HZ,
    RADIOMAPSEER_NATIVE_SIZE,
    db_to_unit,
)
from ..items import RadioMapItemBuilder
from ..layout import (
    ANTENNAS_DIR,
    BUILDINGS_DIR,
    GAIN_DIR,
    LAYOUT_DESCRIPTION,
    antenna_path,
    buildings_path,
    gain_path,
    list_map_ids,
    list_map_tx,
    write_grey_png,
)
from ...errors import InvalidArgumentError, NotAFolderError, OutputExistsError

SPEED_OF_LIGHT_M_PER_S = 299_792_458.0

# The uniform numbers drawn for every lot of every block, in this order.
(_LOT_PRESENT, _LOT_WIDTH, _LOT_DEPTH, _LOT_ROTATION, _LOT_CUT, _LOT_CUT_U, _LOT_CUT_V, _LOT_SIDE_U, _LOT_SIDE_V) = (
    range(9)
)
_NUM_LOT_DRAWS = 9
# Columns of ``CityLayout.footprints``: the building of one lot, in the lot's frame (metres).
_HALF_WIDTH, _HALF_DEPTH, _COS, _SIN, _CUT_FROM_U, _CUT_FROM_V, _CUT_SIDE_U, _CUT_SIDE_V = range(8)

# A transmitter keeps this distance (metres) from every wall and from the area's edge, so that it stays in the
# street at any resolution down to 64 pixels (4 m pixels).
_TX_CLEARANCE_M = 3.0
_TX_CANDIDATES = 64


@dataclass(frozen=True)
class SyntheticCityConfig:
    """Parameters of the synthetic city and of its propagation model.

    Args:
        area_size_m (`float`, defaults to 256.0): side of the square area in metres (RadioMapSeer: 256 m at 1 m/px).
        block_pitch_m (`Tuple[float, float]`, defaults to `(40.0, 90.0)`): range of the street-grid spacing
            (block plus street), drawn per map and per axis.
        street_width_m (`Tuple[float, float]`, defaults to `(8.0, 20.0)`): range of the street width, per map.
        building_probability (`Tuple[float, float]`, defaults to `(0.6, 0.95)`): range of the chance that a lot holds
            a building, drawn per map (sparse suburbs to dense centres).
        building_fill (`Tuple[float, float]`, defaults to `(0.55, 0.95)`): range of a building's width (and depth)
            as a fraction of its lot.
        max_rotation_deg (`float`, defaults to 20.0): largest rotation of a building inside its lot.
        l_shape_probability (`float`, defaults to 0.3): chance that a building loses one corner (an L-shape).
        frequency_hz (`float`, defaults to 5.9e9): carrier frequency of the free-space loss.
        wall_loss_db (`float`, defaults to 12.0): penetration loss of one building wall.
        shadowing_std_db (`float`, defaults to 4.0): standard deviation of the shadowing field (0 disables it).
        shadowing_correlation_m (`float`, defaults to 20.0): decorrelation distance of the shadowing field.
        min_distance_m (`float`, defaults to 1.0): distances below this are clamped (the far-field limit).
        db_range (`Tuple[float, float]`, defaults to `(-147.0, -47.0)`): gain in dB mapped to pixel 0 and 1.
    """

    area_size_m: float = float(RADIOMAPSEER_NATIVE_SIZE)
    block_pitch_m: Tuple[float, float] = (40.0, 90.0)
    street_width_m: Tuple[float, float] = (8.0, 20.0)
    building_probability: Tuple[float, float] = (0.6, 0.95)
    building_fill: Tuple[float, float] = (0.55, 0.95)
    max_rotation_deg: float = 20.0
    l_shape_probability: float = 0.3
    frequency_hz: float = RADIOMAPSEER_FREQUENCY_HZ
    wall_loss_db: float = 12.0
    shadowing_std_db: float = 4.0
    shadowing_correlation_m: float = 20.0
    min_distance_m: float = 1.0
    db_range: Tuple[float, float] = RADIOMAPSEER_DB_RANGE

    def __post_init__(self):
        for name in ("block_pitch_m", "street_width_m", "building_probability", "building_fill", "db_range"):
            low, high = getattr(self, name)
            if not low <= high:
                raise InvalidArgumentError(
                    f"SyntheticCityConfig.{name} must be (low, high) with low <= high, got {(low, high)}"
                )
        if self.street_width_m[1] >= self.block_pitch_m[0]:
            raise InvalidArgumentError(
                f"SyntheticCityConfig.street_width_m {self.street_width_m} must stay below the smallest block pitch "
                f"{self.block_pitch_m[0]} m, or blocks vanish"
            )
        positive = ("area_size_m", "frequency_hz", "shadowing_correlation_m", "min_distance_m")
        for name in positive:
            if not getattr(self, name) > 0:
                raise InvalidArgumentError(f"SyntheticCityConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("wall_loss_db", "shadowing_std_db", "max_rotation_deg"):
            if getattr(self, name) < 0:
                raise InvalidArgumentError(f"SyntheticCityConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.building_probability[0] < 0 or self.building_probability[1] > 1:
            raise InvalidArgumentError(
                f"SyntheticCityConfig.building_probability must lie in [0, 1], got {self.building_probability}"
            )
        if self.building_fill[0] <= 0 or self.building_fill[1] > 1:
            raise InvalidArgumentError(
                f"SyntheticCityConfig.building_fill must lie in (0, 1], got {self.building_fill}"
            )
        if not 0 <= self.l_shape_probability <= 1:
            raise InvalidArgumentError(
                f"SyntheticCityConfig.l_shape_probability must lie in [0, 1], got {self.l_shape_probability}"
            )
        if self.area_size_m <= 2 * _TX_CLEARANCE_M:
            raise InvalidArgumentError(
                f"SyntheticCityConfig.area_size_m must exceed {2 * _TX_CLEARANCE_M} m, got {self.area_size_m}"
            )

    @property
    def blocks_per_axis(self) -> int:
        """Blocks per axis of the rotated street grid, enough to cover the area at any orientation and offset."""
        reach = self.area_size_m / math.sqrt(2.0) + self.block_pitch_m[1]
        return 2 * math.ceil(reach / self.block_pitch_m[0]) + 1


@dataclass
class CityLayout:
    """A batch of B cities; :func:`buildings_at` evaluates their buildings at any point.

    The street grid is turned by ``angle`` about the area's centre and shifted by ``offset``; each block of
    ``pitch`` (street included) holds 1 or 2 lots per grid axis, and each lot at most one building.

    Args:
        angle (`torch.Tensor` of shape `(B,)`): street-grid orientation in radians.
        offset (`torch.Tensor` of shape `(B, 2)`): shift of the grid along its two axes, metres.
        pitch (`torch.Tensor` of shape `(B, 2)`): block pitch along the two grid axes, metres.
        street_width (`torch.Tensor` of shape `(B,)`): street width, metres.
        lots_per_block (`torch.Tensor` of shape `(B, nb, nb, 2)`): lots along each grid axis (1 or 2), float.
        footprints (`torch.Tensor` of shape `(B, nb, nb, 2, 2, 8)`): per lot, in the lot's frame: building half
            width and half depth (0 for an empty lot), cosine and sine of its rotation, where the L-cut starts
            along each axis (inf without a cut) and which corner it removes (+1 or -1 per axis).
    """

    angle: torch.Tensor
    offset: torch.Tensor
    pitch: torch.Tensor
    street_width: torch.Tensor
    lots_per_block: torch.Tensor
    footprints: torch.Tensor

    def __len__(self) -> int:
        return self.angle.shape[0]


def _map_rng(seed: int, map_id: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(map_id), 0])


def _tx_rng(seed: int, map_id: int, tx: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(map_id), int(tx) + 1])


def _shadowing_rng(seed: int, map_id: int, tx: int) -> np.random.Generator:
    # A stream of its own, so that the field does not reuse the numbers that placed the transmitter.
    return np.random.default_rng([int(seed), int(map_id), int(tx) + 1, 1])


def sample_city_layouts(map_ids: Sequence[int], seed: int, config: SyntheticCityConfig) -> CityLayout:
    """Draw the cities of ``map_ids``, each from its own generator seeded by ``(seed, map_id)``."""
    nb = config.blocks_per_axis
    scalars, draws, lot_counts = [], [], []
    for map_id in map_ids:
        rng = _map_rng(seed, map_id)
        pitch = rng.uniform(*config.block_pitch_m, size=2)
        angle = rng.uniform(0.0, math.pi / 2)  # the grid looks the same after a quarter turn
        offset = rng.uniform(0.0, 1.0, size=2) * pitch
        street = rng.uniform(*config.street_width_m)
        density = rng.uniform(*config.building_probability)
        scalars.append([angle, *offset, *pitch, street, density])
        draws.append(rng.uniform(0.0, 1.0, size=(nb, nb, 2, 2, _NUM_LOT_DRAWS)))
        lot_counts.append(rng.integers(1, 3, size=(nb, nb, 2)))
    scalars = torch.tensor(scalars, dtype=torch.float32)  # (B, 7)
    draws = torch.from_numpy(np.stack(draws)).float()  # (B, nb, nb, 2, 2, 9)
    lots_per_block = torch.from_numpy(np.stack(lot_counts)).float()  # (B, nb, nb, 2)

    pitch, street, density = scalars[:, 3:5], scalars[:, 5], scalars[:, 6]
    # Half the size of each lot, per grid axis: (B, nb, nb, 1, 1) each, broadcast over the 2 x 2 lot slots.
    span = pitch - street[:, None]  # (B, 2), the built part of a block
    half_lot = span[:, None, None, :] / lots_per_block / 2.0  # (B, nb, nb, 2)
    half_lot_u, half_lot_v = half_lot[..., 0, None, None], half_lot[..., 1, None, None]

    present = draws[..., _LOT_PRESENT] < density.view(-1, 1, 1, 1, 1)
    fill_low, fill_high = config.building_fill
    half_width = half_lot_u * (fill_low + (fill_high - fill_low) * draws[..., _LOT_WIDTH])
    half_depth = half_lot_v * (fill_low + (fill_high - fill_low) * draws[..., _LOT_DEPTH])
    rotation = (2.0 * draws[..., _LOT_ROTATION] - 1.0) * math.radians(config.max_rotation_deg)
    cos_r, sin_r = torch.cos(rotation), torch.sin(rotation)
    # Shrink the footprint so that, once rotated, it still fits its lot.
    fit = torch.minimum(
        half_lot_u / (half_width * cos_r.abs() + half_depth * sin_r.abs()),
        half_lot_v / (half_width * sin_r.abs() + half_depth * cos_r.abs()),
    ).clamp(max=1.0)
    half_width = torch.where(present, half_width * fit, 0.0)
    half_depth = torch.where(present, half_depth * fit, 0.0)
    # An L-shape removes one corner rectangle spanning 35-65 % of each side: from a notch to an even L.
    has_cut = draws[..., _LOT_CUT] < config.l_shape_probability
    cut_from_u = torch.where(has_cut, half_width * (1.0 - 2.0 * (0.35 + 0.3 * draws[..., _LOT_CUT_U])), math.inf)
    cut_from_v = torch.where(has_cut, half_depth * (1.0 - 2.0 * (0.35 + 0.3 * draws[..., _LOT_CUT_V])), math.inf)
    side_u = torch.where(draws[..., _LOT_SIDE_U] < 0.5, -1.0, 1.0)
    side_v = torch.where(draws[..., _LOT_SIDE_V] < 0.5, -1.0, 1.0)
    footprints = torch.stack([half_width, half_depth, cos_r, sin_r, cut_from_u, cut_from_v, side_u, side_v], dim=-1)
    return CityLayout(
        angle=scalars[:, 0],
        offset=scalars[:, 1:3],
        pitch=pitch,
        street_width=street,
        lots_per_block=lots_per_block,
        footprints=footprints,
    )


def buildings_at(layout: CityLayout, points: torch.Tensor, config: SyntheticCityConfig) -> torch.Tensor:
    """Whether each point lies inside a building.

    Args:
        layout (`CityLayout`): a batch of B cities.
        points (`torch.Tensor` of shape `(B, N, 2)`): (x, y) in metres, origin at the area's corner.
        config (`SyntheticCityConfig`): the parameters the layout was drawn with.

    Returns:
        `torch.Tensor` of shape `(B, N)`, bool.
    """
    batch, num_points, _ = points.shape
    if batch != len(layout):
        raise ValueError(f"points hold {batch} cities but the layout has {len(layout)}")
    nb = config.blocks_per_axis
    half_area = config.area_size_m / 2.0
    x = points[..., 0] - half_area  # (B, N), centred so that the grid turns about the area's centre
    y = points[..., 1] - half_area
    cos_a, sin_a = torch.cos(layout.angle)[:, None], torch.sin(layout.angle)[:, None]
    u = x * cos_a + y * sin_a + layout.offset[:, 0:1]  # grid coordinates, (B, N)
    v = -x * sin_a + y * cos_a + layout.offset[:, 1:2]
    pitch_u, pitch_v = layout.pitch[:, 0:1], layout.pitch[:, 1:2]
    street = layout.street_width[:, None]

    block_u, block_v = torch.floor(u / pitch_u), torch.floor(v / pitch_v)
    # Position inside the block's built part; half a street runs along each edge of every block.
    inner_u = u - block_u * pitch_u - street / 2.0
    inner_v = v - block_v * pitch_v - street / 2.0
    span_u, span_v = pitch_u - street, pitch_v - street
    in_block = (inner_u >= 0) & (inner_u < span_u) & (inner_v >= 0) & (inner_v < span_v)

    index_u = (block_u.long() + nb // 2).clamp(0, nb - 1)
    index_v = (block_v.long() + nb // 2).clamp(0, nb - 1)
    block = (torch.arange(batch)[:, None] * nb + index_u) * nb + index_v  # (B, N), flat block index
    lots = layout.lots_per_block.view(-1, 2).index_select(0, block.view(-1)).view(batch, num_points, 2)
    lot_size_u, lot_size_v = span_u / lots[..., 0], span_v / lots[..., 1]
    lot_u = torch.minimum(torch.floor(inner_u / lot_size_u).clamp(min=0), lots[..., 0] - 1)
    lot_v = torch.minimum(torch.floor(inner_v / lot_size_v).clamp(min=0), lots[..., 1] - 1)
    lot = block * 4 + lot_u.long() * 2 + lot_v.long()
    footprint = layout.footprints.view(-1, 8).index_select(0, lot.view(-1)).view(batch, num_points, 8)

    du = inner_u - (lot_u + 0.5) * lot_size_u  # offset from the lot's centre, grid axes
    dv = inner_v - (lot_v + 0.5) * lot_size_v
    cos_r, sin_r = footprint[..., _COS], footprint[..., _SIN]
    p = du * cos_r + dv * sin_r  # offset in the building's own axes
    q = dv * cos_r - du * sin_r
    inside = (p.abs() < footprint[..., _HALF_WIDTH]) & (q.abs() < footprint[..., _HALF_DEPTH])
    cut = (footprint[..., _CUT_SIDE_U] * p > footprint[..., _CUT_FROM_U]) & (
        footprint[..., _CUT_SIDE_V] * q > footprint[..., _CUT_FROM_V]
    )
    return in_block & inside & ~cut


@functools.lru_cache(maxsize=4)
def pixel_centres(resolution: int, area_size_m: float) -> torch.Tensor:
    """(x, y) in metres of every pixel centre, row-major: shape `(resolution * resolution, 2)`.

    Column index grows with x and row index with y, so pixel ``(row, col)`` covers
    ``[col, col + 1) * pixel`` by ``[row, row + 1) * pixel``. The tensor is cached: do not modify it.
    """
    pixel = area_size_m / resolution
    coords = (torch.arange(resolution, dtype=torch.float32) + 0.5) * pixel
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([cols.reshape(-1), rows.reshape(-1)], dim=-1)


def rasterize_buildings(layout: CityLayout, resolution: int, config: SyntheticCityConfig) -> torch.Tensor:
    """Building masks of a batch of cities, sampled at pixel centres: `(B, resolution, resolution)` bool."""
    centres = pixel_centres(resolution, config.area_size_m)
    points = centres[None].expand(len(layout), -1, -1)
    return buildings_at(layout, points, config).view(len(layout), resolution, resolution)


def sample_transmitters(
    layout: CityLayout, map_ids: Sequence[int], num_tx: int, seed: int, config: SyntheticCityConfig
) -> torch.Tensor:
    """Transmitter positions in the streets, each drawn by its own generator seeded by ``(seed, map_id, tx + 1)``.

    A position is kept when it and eight points around it at ``_TX_CLEARANCE_M`` are all outdoors.

    Returns:
        `torch.Tensor` of shape `(B, num_tx, 2)`: (x, y) in metres.
    """
    batch = len(layout)
    low, high = _TX_CLEARANCE_M, config.area_size_m - _TX_CLEARANCE_M
    angles = torch.arange(8, dtype=torch.float32) * (math.pi / 4)
    ring = torch.cat([torch.zeros(1, 2), _TX_CLEARANCE_M * torch.stack([torch.cos(angles), torch.sin(angles)], -1)])

    rngs = [[_tx_rng(seed, map_id, tx) for tx in range(num_tx)] for map_id in map_ids]
    positions = torch.full((batch, num_tx, 2), float("nan"))
    # A dense city can reject all candidates of a round; the next round draws more from the same generators,
    # so the result stays a function of (seed, map_id, tx) alone.
    for _ in range(100):
        missing = torch.isnan(positions[..., 0])
        if not missing.any():
            return positions
        draws = [[rng.uniform(low, high, size=(_TX_CANDIDATES, 2)) for rng in map_rngs] for map_rngs in rngs]
        candidates = torch.from_numpy(np.stack(draws)).float()  # (B, T, C, 2)
        probes = candidates[:, :, :, None, :] + ring  # (B, T, C, 9, 2)
        blocked = buildings_at(layout, probes.reshape(batch, -1, 2), config)
        clear = ~blocked.view(batch, num_tx, _TX_CANDIDATES, ring.shape[0]).any(-1)  # (B, T, C)
        first = torch.argmax(clear.int(), dim=-1)  # first clear candidate (0 when none is clear)
        chosen = torch.gather(candidates, 2, first[..., None, None].expand(-1, -1, 1, 2))[:, :, 0]
        found = clear.any(-1) & missing
        positions[found] = chosen[found]
    raise InvalidArgumentError(
        "could not place a transmitter in the streets after 6400 tries: the configured city leaves no open space "
        f"(building_probability={config.building_probability}, street_width_m={config.street_width_m})"
    )


def _count_walls(
    buildings: torch.Tensor,
    tx_positions: torch.Tensor,
    offsets: torch.Tensor,
    distances: torch.Tensor,
    pixel_size: float,
) -> torch.Tensor:
    """Number of building walls on the straight path from the transmitter to every pixel centre.

    The mask is resampled on a polar grid around the transmitter (one sample per pixel length along each ray,
    rays one pixel apart at the farthest corner), building entries are summed cumulatively along every ray, and
    each pixel reads the sum of its nearest ray half a pixel before its centre. An outdoor pixel has left every
    building its path entered, so walls = 2 x entries.

    Args:
        buildings (`torch.Tensor` of shape `(B, H, W)`, bool): building masks.
        tx_positions (`torch.Tensor` of shape `(B, 2)`): transmitter (x, y) in metres.
        offsets (`torch.Tensor` of shape `(B, H * W, 2)`): pixel centre minus transmitter, metres.
        distances (`torch.Tensor` of shape `(B, H * W)`): their lengths.
        pixel_size (`float`): metres per pixel.

    Returns:
        `torch.Tensor` of shape `(B, H, W)`, int32.
    """
    batch, height, width = buildings.shape
    extent = torch.tensor([width, height], dtype=torch.float32) * pixel_size
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]) * extent
    walls = torch.empty(batch, height * width, dtype=torch.int32)
    # One map at a time keeps the polar grid (up to ~0.8 M samples at 256 x 256) in the CPU caches.
    for index in range(batch):
        tx = tx_positions[index]
        reach = (corners - tx).norm(dim=-1).max().item()  # the longest ray this transmitter needs
        num_radii = int(math.ceil(reach / pixel_size)) + 1
        num_angles = int(math.ceil(2.0 * math.pi * reach / pixel_size))
        angles = torch.arange(num_angles, dtype=torch.float32) * (2.0 * math.pi / num_angles)
        # Sample positions in grid_sample's [-1, 1] coordinates (align_corners=False: -1 and 1 are the outer
        # edges of the border pixels); samples beyond the map read zeros, i.e. open space.
        directions = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1) * (2.0 / extent)  # (A, 2)
        radii = torch.arange(num_radii, dtype=torch.float32) * pixel_size
        grid = directions[:, None, :] * radii[None, :, None]  # (A, R, 2)
        grid += tx / extent * 2.0 - 1.0
        mask = buildings[index].to(torch.float32)[None, None]  # (1, 1, H, W)
        on_ray = F.grid_sample(mask, grid[None], mode="nearest", padding_mode="zeros", align_corners=False)[0, 0]
        # An entry: a building sample whose predecessor on the ray (or the ray's start) is open space.
        entries = torch.diff(on_ray, dim=-1, prepend=on_ray.new_zeros(num_angles, 1)) > 0.5
        entries_so_far = torch.cumsum(entries, dim=-1, dtype=torch.int32).view(-1)  # (A * R,)

        offset = offsets[index]
        angle = torch.atan2(offset[:, 1], offset[:, 0])
        angle_index = torch.round(angle * (num_angles / (2.0 * math.pi))).long() % num_angles
        # Half a pixel before the centre, so that the pixel's own surroundings do not count as walls in its way.
        radius_index = torch.floor(distances[index] / pixel_size - 0.5).long().clamp(0, num_radii - 1)
        walls[index] = 2 * entries_so_far[angle_index * num_radii + radius_index]
    return walls.view(batch, height, width)


def shadowing_field(noise: torch.Tensor, pixel_size: float, correlation_m: float) -> torch.Tensor:
    """Zero-mean, unit-variance Gaussian field with correlation ``exp(-distance / correlation_m)``.

    White noise is filtered in the Fourier domain by the square root of the exponential correlation's 2D power
    spectrum, ``S(k) ~ (1 + (2 pi correlation_m |k|)^2)^(-3/2)``, normalised so that the field has unit variance.

    Args:
        noise (`torch.Tensor` of shape `(B, H, W)`): standard normal white noise.
        pixel_size (`float`): metres per pixel.
        correlation_m (`float`): decorrelation distance in metres.

    Returns:
        `torch.Tensor` of shape `(B, H, W)`.
    """
    height, width = noise.shape[-2:]
    freq_y = np.fft.fftfreq(height, d=pixel_size)
    freq_x = np.fft.fftfreq(width, d=pixel_size)
    radial = np.sqrt(freq_y[:, None] ** 2 + freq_x[None, :] ** 2)
    amplitude = (1.0 + (2.0 * math.pi * correlation_m * radial) ** 2) ** -0.75  # sqrt of S(k)
    # With orthonormal transforms, the output variance is the mean of |amplitude|^2 over the full spectrum.
    amplitude = (amplitude / np.sqrt(np.mean(amplitude**2))).astype(np.float32)
    # numpy's FFT, not torch's: on CPU it measured 6x (256 px) to 900x (32 px) faster here.
    spectrum = np.fft.rfft2(noise.numpy(), norm="ortho") * amplitude[:, : width // 2 + 1]
    field = np.fft.irfft2(spectrum, s=(height, width), norm="ortho")
    return torch.from_numpy(np.ascontiguousarray(field, dtype=np.float32))


def path_gain_db(
    buildings: torch.Tensor,
    tx_positions: torch.Tensor,
    config: SyntheticCityConfig,
    shadowing: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Path gain in dB at every pixel centre: free space, minus wall losses, plus shadowing (no clipping).

    Args:
        buildings (`torch.Tensor` of shape `(B, H, W)`, bool): building masks covering ``config.area_size_m``.
        tx_positions (`torch.Tensor` of shape `(B, 2)`): transmitter (x, y) in metres.
        config (`SyntheticCityConfig`): frequency, wall loss, distance clamp.
        shadowing (`torch.Tensor` of shape `(B, H, W)`, *optional*): shadowing in dB, added as is.

    Returns:
        `torch.Tensor` of shape `(B, H, W)`, float32. Building pixels get the value the model gives them too;
        :func:`radio_maps_from_gain` zeroes them.
    """
    if buildings.ndim != 3 or buildings.shape[-1] != buildings.shape[-2]:
        raise ValueError(f"buildings must have shape (B, H, H), got {tuple(buildings.shape)}")
    if tx_positions.shape != (buildings.shape[0], 2):
        raise ValueError(f"tx_positions must have shape ({buildings.shape[0]}, 2), got {tuple(tx_positions.shape)}")
    batch, size, _ = buildings.shape
    pixel_size = config.area_size_m / size
    tx_positions = tx_positions.float()
    offsets = pixel_centres(size, config.area_size_m)[None] - tx_positions[:, None]  # (B, H*W, 2)
    distances = offsets.norm(dim=-1)  # (B, H*W)
    wavelength = SPEED_OF_LIGHT_M_PER_S / config.frequency_hz
    free_space_loss = 20.0 * torch.log10(distances.clamp(min=config.min_distance_m) * (4.0 * math.pi / wavelength))
    walls = _count_walls(buildings.bool(), tx_positions, offsets, distances, pixel_size)
    free_space_loss = free_space_loss.view(batch, size, size)
    gain = -free_space_loss - config.wall_loss_db * walls
    if shadowing is not None:
        gain = gain + shadowing
    return gain


def transmitter_pixels(tx_positions: torch.Tensor, resolution: int, area_size_m: float) -> torch.Tensor:
    """(row, col) of the pixel holding each transmitter: same leading shape as ``tx_positions``, last dim 2."""
    pixel = area_size_m / resolution
    col = torch.floor(tx_positions[..., 0] / pixel).long().clamp(0, resolution - 1)
    row = torch.floor(tx_positions[..., 1] / pixel).long().clamp(0, resolution - 1)
    return torch.stack([row, col], dim=-1)


@contextlib.contextmanager
def _single_torch_thread() -> Iterator[None]:
    """Run torch ops on one thread, then restore the previous count.

    The generator's tensors are small (one map at a time); on 2 shared CPU cores under load, torch's second
    thread spun waiting for a core and made generation 5-10 times slower (benchmarks/benchmark_data.py).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def generate_radio_maps(
    map_ids: Sequence[int],
    num_tx: int,
    seed: int = 0,
    resolution: int = RADIOMAPSEER_NATIVE_SIZE,
    config: Optional[SyntheticCityConfig] = None,
) -> Dict[str, torch.Tensor]:
    """Generate the radio maps of ``num_tx`` transmitters in each city of ``map_ids``.

    Args:
        map_ids (`Sequence[int]`): map numbers; each seeds its own city.
        num_tx (`int`): transmitters per map.
        seed (`int`, defaults to 0): the base seed.
        resolution (`int`, defaults to 256): pixels per side; the area stays ``config.area_size_m`` wide.
        config (`SyntheticCityConfig`, *optional*): city and propagation parameters (defaults when None).

    Returns:
        A dict with ``"gain"`` `(M, T, H, W)` float32 in [0, 1] (RadioMapSeer's scale, buildings 0),
        ``"buildings"`` `(M, H, W)` bool, ``"tx_positions"`` `(M, T, 2)` metres (x, y) and ``"tx_pixels"``
        `(M, T, 2)` (row, col).
    """
    config = config or SyntheticCityConfig()
    if num_tx < 1:
        raise InvalidArgumentError(f"num_tx must be >= 1, got {num_tx}")
    if resolution < 8:
        raise InvalidArgumentError(f"resolution must be >= 8 pixels, got {resolution}")
    with _single_torch_thread():
        return _generate_radio_maps([int(map_id) for map_id in map_ids], num_tx, seed, resolution, config)


def _generate_radio_maps(
    map_ids: List[int], num_tx: int, seed: int, resolution: int, config: SyntheticCityConfig
) -> Dict[str, torch.Tensor]:
    pixel_size = config.area_size_m / resolution
    gains, buildings, tx_positions = [], [], []
    # One map at a time: the per-pixel temporaries of a whole batch would not stay in the CPU caches, and
    # generating map by map measured 3-5 times faster than one batched call on 256 x 256 maps.
    for map_id in map_ids:
        layout = sample_city_layouts([map_id], seed, config)
        mask = rasterize_buildings(layout, resolution, config)  # (1, H, W)
        positions = sample_transmitters(layout, [map_id], num_tx, seed, config)[0]  # (T, 2)
        shadowing = None
        if config.shadowing_std_db > 0:
            draws = [_shadowing_rng(seed, map_id, tx) for tx in range(num_tx)]
            noise = np.stack([rng.standard_normal((resolution, resolution), np.float32) for rng in draws])
            field = shadowing_field(torch.from_numpy(noise), pixel_size, config.shadowing_correlation_m)
            shadowing = config.shadowing_std_db * field  # (T, H, W)
        item_masks = mask.expand(num_tx, -1, -1)
        gain_db = path_gain_db(item_masks, positions, config, shadowing)  # (T, H, W)
        gains.append(db_to_unit(gain_db, config.db_range).masked_fill(item_masks, 0.0))
        buildings.append(mask[0])
        tx_positions.append(positions)
    tx_positions = torch.stack(tx_positions)
    return {
        "gain": torch.stack(gains),
        "buildings": torch.stack(buildings),
        "tx_positions": tx_positions,
        "tx_pixels": transmitter_pixels(tx_positions, resolution, config.area_size_m),
    }


def to_grey(unit: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> 8-bit grey ``round(255 x)``, RadioMapSeer's file encoding (uint8, same shape)."""
    return torch.round(unit.clamp(0.0, 1.0) * 255.0).to(torch.uint8)


class SyntheticRadioMaps(Dataset):
    """Synthetic radio maps held in memory, with RadioMapSeer's item layout.

    Item ``i`` is transmitter ``i % num_tx`` of map ``first_map_id + i // num_tx``. All maps are generated at
    construction (in batches, with a progress bar); the gain maps are kept as 8-bit grey like RadioMapSeer's
    PNG files (``quantize=True``), so that an item equals the one read back from a folder written by
    :func:`radiodiff_vae.data.write_synthetic_folder`.

    Args:
        num_maps (`int`): number of cities.
        num_tx (`int`): transmitters per city.
        seed (`int`, defaults to 0): base seed; map ``m`` and transmitter ``t`` depend on ``(seed, m, t)`` only.
        resolution (`int`, *optional*): pixels per side (default 256, RadioMapSeer's 1 m pixels). Smaller values
            generate the same 256 m area directly with larger pixels.
        config (`SyntheticCityConfig`, *optional*): city and propagation parameters.
        first_map_id (`int`, defaults to 1): number of the first map (RadioMapSeer numbers maps from 1).
        quantize (`bool`, defaults to True): round gains to 8 bits (k / 255) as RadioMapSeer's files do.
        flip (`bool`, defaults to False): random horizontal flip of each item, as :class:`RadioMapSeer` does.
        batch_size (`int`, defaults to 16): maps generated per progress-bar step.
        show_progress (`bool`, defaults to True): show a tqdm bar while generating.
        num_workers (`int`, defaults to 0): processes that generate batches in parallel (0: this process). The
            maps are the same whatever the number: each depends on ``(seed, map, transmitter)`` only.

    Items are dicts: ``"pixel_values"`` `(1, H, W)` in [-1, 1], ``"buildings"`` `(1, H, W)` in {0, 1},
    ``"transmitter"`` `(1, H, W)` (1 at the transmitter), ``"name"`` (``"{map}_{tx}"``), ``"simulation"``
    (``"synthetic"``).
    """

    simulation = "synthetic"

    def __init__(
        self,
        num_maps: int,
        num_tx: int,
        seed: int = 0,
        resolution: Optional[int] = None,
        config: Optional[SyntheticCityConfig] = None,
        first_map_id: int = 1,
        quantize: bool = True,
        flip: bool = False,
        batch_size: int = 16,
        show_progress: bool = True,
        num_workers: int = 0,
    ):
        if num_maps < 1:
            raise InvalidArgumentError(f"num_maps must be >= 1, got {num_maps}")
        if num_tx < 1:
            raise InvalidArgumentError(f"num_tx must be >= 1, got {num_tx}")
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise InvalidArgumentError(f"num_workers must be >= 0, got {num_workers}")
        if resolution is not None and resolution < 8:
            raise InvalidArgumentError(f"resolution must be >= 8 pixels or None (256), got {resolution}")
        if first_map_id < 1:
            raise InvalidArgumentError(
                f"first_map_id must be >= 1 (RadioMapSeer numbers maps from 1), got {first_map_id}"
            )
        self.num_maps = int(num_maps)
        self.num_tx = int(num_tx)
        self.seed = int(seed)
        self.resolution = int(resolution) if resolution is not None else RADIOMAPSEER_NATIVE_SIZE
        self.config = config or SyntheticCityConfig()
        self.map_ids: List[int] = list(range(int(first_map_id), int(first_map_id) + self.num_maps))
        self.quantize = quantize
        self.build_item = RadioMapItemBuilder(resolution=None, flip=flip)

        gains, buildings, tx_pixels = [], [], []
        batches = [self.map_ids[start : start + batch_size] for start in range(0, self.num_maps, batch_size)]
        generate = functools.partial(
            generate_radio_maps, num_tx=self.num_tx, seed=self.seed, resolution=self.resolution, config=self.config
        )
        with contextlib.ExitStack() as stack:
            if num_workers > 0 and len(batches) > 1:
                # spawn: a forked child of a process that already ran OpenMP work can hang in its first parallel op
                context = multiprocessing.get_context("spawn")
                pool = stack.enter_context(ProcessPoolExecutor(min(num_workers, len(batches)), mp_context=context))
                results = pool.map(generate, batches)
            else:
                results = map(generate, batches)
            progress = tqdm(
                results, total=len(batches), desc="synthetic radio maps", unit="batch", disable=not show_progress
            )
            for batch in progress:
                gains.append(to_grey(batch["gain"]) if quantize else batch["gain"])
                buildings.append(batch["buildings"])
                tx_pixels.append(batch["tx_pixels"])
        self._gain = torch.cat(gains)  # (M, T, H, W), uint8 or float32
        self._buildings = torch.cat(buildings)  # (M, H, W) bool
        self._tx_pixels = torch.cat(tx_pixels)  # (M, T, 2)

    def __len__(self) -> int:
        return self.num_maps * self.num_tx

    def gain_map(self, index: int) -> torch.Tensor:
        """The gain map of item ``index`` on RadioMapSeer's [0, 1] scale: `(H, W)` float32."""
        map_index, tx = divmod(self._check_index(index), self.num_tx)
        gain = self._gain[map_index, tx]
        return gain.float() / 255.0 if self.quantize else gain.clone()

    def _check_index(self, index: int) -> int:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} synthetic radio maps")
        return index

    def __getitem__(self, index: int) -> Dict[str, object]:
        map_index, tx = divmod(self._check_index(index), self.num_tx)
        return self.build_item(
            self._gain[map_index, tx].numpy(),
            self._buildings[map_index].numpy(),
            tuple(self._tx_pixels[map_index, tx].tolist()),
            f"{self.map_ids[map_index]}_{tx}",
            self.simulation,
        )


SIMULATION_NAME = SyntheticRadioMaps.simulation
METADATA_FILE = "synthetic.json"


def _remove_other_maps(out_dir: Path, map_ids: set, num_tx: int) -> None:
    """Delete the map files of a synthetic folder that are not maps ``map_ids`` x transmitters ``0..num_tx-1``."""
    for map_id in set(list_map_ids(out_dir / BUILDINGS_DIR)) - map_ids:
        buildings_path(out_dir, map_id).unlink()
    for folder in (out_dir / GAIN_DIR / SIMULATION_NAME, out_dir / ANTENNAS_DIR):
        for map_id, txs in list_map_tx(folder).items():
            for tx in txs:
                if map_id not in map_ids or tx >= num_tx:
                    (folder / f"{map_id}_{tx}.png").unlink()


def write_synthetic_folder(
    out_dir: Union[str, os.PathLike],
    num_maps: int,
    num_tx: int,
    seed: int = 0,
    resolution: int = RADIOMAPSEER_NATIVE_SIZE,
    config: Optional[SyntheticCityConfig] = None,
    first_map_id: int = 1,
    overwrite: bool = False,
    batch_size: int = 16,
    show_progress: bool = True,
) -> Path:
    """Write synthetic radio maps as a folder in RadioMapSeer's layout, which :class:`RadioMapSeer` reads back.

    Gain maps go to ``out_dir/gain/synthetic/<map>_<tx>.png``, building masks to
    ``out_dir/png/buildings_complete/<map>.png`` and transmitter images to ``out_dir/png/antennas/<map>_<tx>.png``;
    ``out_dir/synthetic.json`` records the seed and every parameter. Each file is written atomically.

    Args:
        out_dir (`str` or `os.PathLike`): the folder to write (created if missing).
        num_maps (`int`): number of cities, numbered from ``first_map_id``.
        num_tx (`int`): transmitters per city.
        seed (`int`, defaults to 0): base seed (the same items as ``SyntheticRadioMaps`` with this seed).
        resolution (`int`, defaults to 256): pixels per side (RadioMapSeer: 256).
        config (`SyntheticCityConfig`, *optional*): city and propagation parameters.
        first_map_id (`int`, defaults to 1): number of the first map.
        overwrite (`bool`, defaults to False): replace an earlier synthetic folder (one with ``synthetic.json``);
            its maps that this run does not write are deleted once the new ones are in place. Folders with radio-map
            files but no ``synthetic.json`` (RadioMapSeer itself) are never written into.
        batch_size (`int`, defaults to 16): maps generated together.
        show_progress (`bool`, defaults to True): show a tqdm bar.

    Returns:
        `Path`: ``out_dir``.
    """
    if num_maps < 1 or num_tx < 1:
        raise InvalidArgumentError(f"num_maps and num_tx must be >= 1, got num_maps={num_maps}, num_tx={num_tx}")
    if first_map_id < 1:
        raise InvalidArgumentError(f"first_map_id must be >= 1 (RadioMapSeer numbers maps from 1), got {first_map_id}")
    config = config or SyntheticCityConfig()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotAFolderError(f"--out {out_dir} exists and is not a directory")
    # The three folders this writer fills. Any radio-map file already there (a previous run, or a real
    # RadioMapSeer root whose building and antenna images share these names) is protected unless asked otherwise.
    folders = (out_dir / GAIN_DIR / SIMULATION_NAME, out_dir / BUILDINGS_DIR, out_dir / ANTENNAS_DIR)
    occupied = [folder for folder in folders if folder.is_dir() and any(folder.glob("*.png"))]
    if occupied and not overwrite:
        raise OutputExistsError(
            f"{occupied[0]} already holds radio-map files; choose another folder or pass overwrite=True (--overwrite)"
        )
    if occupied and not (out_dir / METADATA_FILE).is_file():
        raise OutputExistsError(
            f"{occupied[0]} holds radio-map files but {out_dir} has no {METADATA_FILE}: it was not written by this "
            "generator (it may be RadioMapSeer itself), so its files are not overwritten; choose another folder"
        )

    map_ids = list(range(first_map_id, first_map_id + num_maps))
    with tqdm(total=num_maps, desc=f"writing {out_dir}", unit="map", disable=not show_progress) as progress:
        for start in range(0, num_maps, batch_size):
            batch_ids = map_ids[start : start + batch_size]
            batch = generate_radio_maps(batch_ids, num_tx, seed, resolution, config)
            grey = to_grey(batch["gain"]).numpy()  # (M, T, H, W)
            for index, map_id in enumerate(batch_ids):
                building_image = batch["buildings"][index].numpy().astype(np.uint8) * 255
                write_grey_png(buildings_path(out_dir, map_id), building_image)
                for tx in range(num_tx):
                    antenna = np.zeros((resolution, resolution), dtype=np.uint8)
                    row, col = batch["tx_pixels"][index, tx].tolist()
                    antenna[row, col] = 255
                    write_grey_png(antenna_path(out_dir, map_id, tx), antenna)
                    write_grey_png(gain_path(out_dir, SIMULATION_NAME, map_id, tx), grey[index, tx])
                progress.update(1)

    if occupied:
        # Files of an earlier, larger run would otherwise join this one's maps; they go only after every new file
        # is in place, so a failure above leaves the old folder readable.
        _remove_other_maps(out_dir, set(map_ids), num_tx)
    atomic_write_json(
        out_dir / METADATA_FILE,
        {
            "generator": "radiodiff_vae.data.simulation.synthetic",
            "layout": LAYOUT_DESCRIPTION,
            "simulation": SIMULATION_NAME,
            "seed": int(seed),
            "resolution": int(resolution),
            "first_map_id": int(first_map_id),
            "num_maps": int(num_maps),
            "num_tx": int(num_tx),
            "config": dataclasses.asdict(config),
        },
    )
    return out_dir
