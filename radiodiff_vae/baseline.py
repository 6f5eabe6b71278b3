"""The trivial codec every learned radio-map codec must beat: resizing with the same number of values.

A VAE whose latent of a ``H x W`` map is ``C x h x w`` stores ``C * h * w`` numbers per map. The resize baseline
stores as many: it area-averages the map down to ``s x s`` pixels, with ``s * s`` the square nearest to
``C * h * w``, and brings it back with bicubic interpolation. A learned codec that does not beat it has not learned
to use its latent. ``radiodiff-vae evaluate`` scores it beside every model, on the same maps and pixels, and training
logs the gap (``validation/psnr_gap_db``).

Maps that are not square (or a latent that is not) cannot keep the aspect ratio with a square; then each side is
divided by the model's downsampling factor and multiplied by ``sqrt(C)``, which keeps ``C`` channels' worth of
values in one channel. :class:`ResizeBaseline` says which rule was used.

The second baseline, :class:`LogDistanceFit`, is the classic one of radio-map *construction* (a city map in, a
radio map out): path gain in dB as a straight line in the log of the distance to the transmitter, ``a + b log10 d``,
fitted by least squares on training maps. ``radiodiff-vae evaluate-construction`` scores it beside the construction
pipeline; a model that does not beat it has learned nothing from the buildings.
"""

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F

from .data.conventions import RADIOMAPSEER_DB_RANGE, db_to_unit, model_to_unit, unit_to_db
from .errors import DataError, InvalidArgumentError

__all__ = [
    "LogDistanceFit",
    "LogDistanceNormalEquations",
    "ResizeBaseline",
    "baseline_for_model",
    "downsample_factor_of",
    "log10_distance",
    "resize_baseline",
    "resize_reconstruct",
]

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
        raise InvalidArgumentError(
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
        raise InvalidArgumentError(
            f"resize_reconstruct expected maps of shape (B, C, H, W), got shape {tuple(maps.shape)}"
        )
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


# ----------------------------------------------------------------------------------------------------------------
# the log-distance fit (construction)
LOG_DISTANCE_METHOD = "log_distance"
# Distances below one pixel are clamped to one: only the transmitter's own pixel is closer, and log10(0) is -inf.
MIN_DISTANCE_PIXELS = 1.0


def _checked_positions(transmitter: torch.Tensor) -> torch.Tensor:
    """(row, col) ``(B, 2)`` of each transmitter of a one-hot ``(B, 1, H, W)`` (``CityEncoder``'s rule: the brightest
    pixel), after checking that every map has one."""
    from .models.city_encoder import transmitter_positions

    if not isinstance(transmitter, torch.Tensor) or transmitter.ndim != 4 or transmitter.shape[1] != 1:
        shape = tuple(transmitter.shape) if isinstance(transmitter, torch.Tensor) else type(transmitter).__name__
        raise InvalidArgumentError(f"transmitter must be a (B, 1, H, W) one-hot tensor, got {shape}")
    empty = (transmitter.flatten(1).amax(dim=1) <= 0).nonzero().flatten().tolist()
    if empty:
        raise DataError(f"transmitter maps {empty[:5]} of the batch hold no transmitter (no positive pixel)")
    return transmitter_positions(transmitter)


def log10_distance(
    transmitter: torch.Tensor, pixel_size: Tuple[float, float] = (1.0, 1.0), min_distance: float = MIN_DISTANCE_PIXELS
) -> torch.Tensor:
    """``log10`` of every pixel's distance to its map's transmitter: ``(B, 1, H, W)`` one-hot -> ``(B, 1, H, W)``
    float64.

    Distances run between pixel centres, in units of ``pixel_size = (height, width)`` of one pixel (1, 1: pixels of
    this grid), and are clamped below at ``min_distance`` (the transmitter's own pixel is at ``min_distance``).
    """
    batch, _, height, width = transmitter.shape
    positions = _checked_positions(transmitter).to(torch.float64)  # (B, 2)
    rows = torch.arange(height, dtype=torch.float64, device=transmitter.device)
    cols = torch.arange(width, dtype=torch.float64, device=transmitter.device)
    d_row = (rows[None, :] - positions[:, :1]) * float(pixel_size[0])  # (B, H)
    d_col = (cols[None, :] - positions[:, 1:]) * float(pixel_size[1])  # (B, W)
    distance = (d_row[:, :, None] ** 2 + d_col[:, None, :] ** 2).sqrt()  # (B, H, W)
    return distance.clamp_min(min_distance).log10().unsqueeze(1)  # (B, 1, H, W)


def _check_batch(pixel_values: torch.Tensor, buildings: torch.Tensor, transmitter: torch.Tensor) -> None:
    shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else None for t in (pixel_values, buildings, transmitter)]
    if None in shapes or len(shapes[0]) != 4 or shapes[0][1] != 1 or len(set(shapes)) != 1:
        raise InvalidArgumentError(
            "the log-distance fit expects pixel_values, buildings and transmitter tensors of one shape (B, 1, H, W), "
            f"got {shapes[0]}, {shapes[1]} and {shapes[2]}"
        )


@dataclass(frozen=True)
class LogDistanceFit:
    """Path gain ``a + b log10 d`` dB (``d`` the distance to the transmitter), fitted on training maps.

    ``d`` is measured between pixel centres in **pixels of the maps the fit was made on** (``height x width``),
    clamped below at 1 pixel, so ``a`` is the gain at one pixel from the transmitter (and on it) and ``b`` the change
    per decade of distance (about -20 dB in free space, steeper through a city). Maps of another size are taken to
    cover the same area, as every source of this package does when it resizes (``--resolution``): their distances are
    converted to the fit's pixels. Building pixels are predicted as ``building_unit``, what the training maps hold
    there on the ``[0, 1]`` scale (0 for RadioMapSeer, the synthetic generator and ``make-raytraced``, which all set
    buildings to the -147 dB floor; a little above 0 where a resize blurred the gain into the mask's pixels).

    Fitted by :class:`LogDistanceNormalEquations` (or :meth:`from_dataset`) on the non-building pixels of the training
    maps, by least squares in dB, truncated pixels (the data's floor) included: the fit sees the maps as they are.

    Args:
        a (`float`): gain in dB at 1 pixel from the transmitter.
        b (`float`): dB per decade of distance.
        building_unit (`float`): prediction at building pixels, on the ``[0, 1]`` scale.
        height, width (`int`): size in pixels of the maps the fit was made on (the unit of ``d``).
        db_range (`Tuple[float, float]`): (dB at 0, dB at 1) of the maps; predictions are clipped to it.
        num_maps (`int`): training maps.
        num_pixels (`int`): non-building training pixels the line was fitted on.
        rmse_db (`float`): root mean squared residual of the fit on those pixels, in dB (before clipping).
    """

    a: float
    b: float
    building_unit: float
    height: int
    width: int
    db_range: Tuple[float, float] = RADIOMAPSEER_DB_RANGE
    num_maps: int = 0
    num_pixels: int = 0
    rmse_db: float = math.nan

    def describe(self) -> str:
        """One line, e.g. ``"path gain = -60.1 + -24.3 log10(d / 1 px) dB (d in pixels of 64x64 maps, ...)"``."""
        return (
            f"path gain = {self.a:.2f} {'-' if self.b < 0 else '+'} {abs(self.b):.2f} log10(d) dB, d the distance to "
            f"the transmitter in pixels of {self.height}x{self.width} maps (at least 1), least squares on "
            f"{self.num_pixels} non-building pixels of {self.num_maps} training maps (residual {self.rmse_db:.2f} dB)"
        )

    def predict_db(self, transmitter: torch.Tensor) -> torch.Tensor:
        """Path gain in dB everywhere, buildings ignored: one-hot ``(B, 1, H, W)`` -> ``(B, 1, H, W)`` float64."""
        height, width = transmitter.shape[-2:]
        pixel_size = (self.height / height, self.width / width)  # one pixel here, in pixels of the fit's maps
        return self.a + self.b * log10_distance(transmitter, pixel_size)

    @torch.no_grad()
    def predict(self, buildings: torch.Tensor, transmitter: torch.Tensor) -> torch.Tensor:
        """Radio maps on the ``[0, 1]`` scale: ``(B, 1, H, W)`` building mask {0, 1} and transmitter one-hot ->
        ``(B, 1, H, W)`` float32, clipped to the data's dB range, ``building_unit`` at building pixels."""
        same_shape = tuple(getattr(buildings, "shape", ())) == tuple(getattr(transmitter, "shape", ()))
        if not isinstance(buildings, torch.Tensor) or not same_shape:
            raise InvalidArgumentError(
                "LogDistanceFit.predict expects buildings and transmitter of one shape (B, 1, H, W), got "
                f"{tuple(getattr(buildings, 'shape', ()))} and {tuple(getattr(transmitter, 'shape', ()))}"
            )
        unit = db_to_unit(self.predict_db(transmitter), self.db_range).to(torch.float32)
        return torch.where(buildings >= 0.5, torch.full_like(unit, self.building_unit), unit)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready fields, with ``"method": "log_distance"``; :meth:`from_dict` reads them back."""
        return {"method": LOG_DISTANCE_METHOD, **asdict(self), "db_range": list(self.db_range)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "LogDistanceFit":
        """The fit :meth:`to_dict` saved. Raises InvalidArgumentError for missing or unknown keys."""
        values = dict(values)
        method = values.pop("method", LOG_DISTANCE_METHOD)
        names = {field.name for field in fields(cls)}
        required = {field.name for field in fields(cls) if field.name in ("a", "b", "building_unit", "height", "width")}
        missing, unknown = sorted(required - set(values)), sorted(set(values) - names)
        if method != LOG_DISTANCE_METHOD or missing or unknown:
            raise InvalidArgumentError(
                f"a log-distance fit needs method 'log_distance' and keys {sorted(names)}; got method {method!r}, "
                f"missing {missing}, unknown {unknown}"
            )
        if "db_range" in values:
            values["db_range"] = tuple(float(value) for value in values["db_range"])
        return cls(**values)

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        batch_size: int = 32,
        max_maps: Optional[int] = None,
        db_range: Tuple[float, float] = RADIOMAPSEER_DB_RANGE,
        num_workers: int = 0,
        progress: bool = True,
    ) -> "LogDistanceFit":
        """Fit on the maps of a dataset of this package's items, batch by batch (memory does not grow with the maps).

        Args:
            dataset: a torch ``Dataset`` of items with ``pixel_values``, ``buildings`` and ``transmitter``.
            batch_size (`int`, defaults to 32): maps per batch.
            max_maps (`int`, *optional*): fit on this many maps spread evenly over the dataset (None: all). Items
                come map by map, so the first ``max_maps`` would be a few cities only.
            db_range (`Tuple[float, float]`): (dB at 0, dB at 1) of the maps.
            num_workers (`int`, defaults to 0): DataLoader workers.
            progress (`bool`, defaults to True): a progress bar over batches.
        """
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        from .data.batches import spread_subset

        if len(dataset) == 0:
            raise DataError("the log-distance fit needs training maps, got an empty dataset")
        if max_maps is not None:
            if max_maps < 1:
                raise InvalidArgumentError(f"max_maps must be at least 1, got {max_maps}")
            dataset = spread_subset(dataset, max_maps)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        equations = LogDistanceNormalEquations(db_range)
        for batch in tqdm(loader, desc="log-distance fit", unit="batch", disable=not progress, leave=False):
            equations.update(batch["pixel_values"], batch["buildings"], batch["transmitter"])
        return equations.solve()


class LogDistanceNormalEquations:
    """The least-squares problem of :class:`LogDistanceFit`, accumulated batch by batch.

    The line ``y = a + b x`` (``y`` the gain in dB, ``x = log10 d``) needs only five sums over the fitted pixels
    (``n``, ``Σx``, ``Σx²``, ``Σy``, ``Σxy``; ``Σy²`` gives the residual), kept in float64, so thousands of maps fit in
    the memory of one batch.

    Args:
        db_range (`Tuple[float, float]`): (dB at 0, dB at 1) of the maps.
    """

    def __init__(self, db_range: Tuple[float, float] = RADIOMAPSEER_DB_RANGE):
        self.db_range = (float(db_range[0]), float(db_range[1]))
        if not self.db_range[1] > self.db_range[0]:
            raise InvalidArgumentError(f"db_range must be (dB at 0, dB at 1) with dB at 0 < dB at 1, got {db_range}")
        self.sums = torch.zeros(6, dtype=torch.float64)  # n, Σx, Σx², Σy, Σxy, Σy²
        self.building_sum = 0.0
        self.building_count = 0
        self.num_maps = 0
        self.size: Optional[Tuple[int, int]] = None

    @torch.no_grad()
    def update(self, pixel_values: torch.Tensor, buildings: torch.Tensor, transmitter: torch.Tensor) -> None:
        """Add one batch: ``(B, 1, H, W)`` maps in ``[-1, 1]``, building masks {0, 1} and transmitters one-hot."""
        _check_batch(pixel_values, buildings, transmitter)
        size = tuple(pixel_values.shape[-2:])
        if self.size is None:
            self.size = size
        elif size != self.size:
            raise DataError(f"the log-distance fit takes maps of one size; got {size} after {self.size}")
        unit = model_to_unit(pixel_values.to(torch.float64).clamp(-1, 1))  # (B, 1, H, W) in [0, 1]
        outdoor = buildings < 0.5  # (B, 1, H, W)
        x = log10_distance(transmitter.cpu())[outdoor.cpu()]  # (n,)
        y = unit_to_db(unit, self.db_range).cpu()[outdoor.cpu()]  # (n,)
        self.sums += torch.stack(
            [torch.tensor(float(x.numel()), dtype=torch.float64), x.sum(), (x * x).sum(), y.sum(), (x * y).sum(),
             (y * y).sum()]
        )  # fmt: skip
        self.building_sum += float(unit[~outdoor].sum())
        self.building_count += int((~outdoor).sum())
        self.num_maps += int(pixel_values.shape[0])

    def solve(self) -> LogDistanceFit:
        """The least-squares line. Raises DataError when the pixels seen do not determine one (fewer than two
        distinct distances, e.g. no map or only buildings)."""
        n, sum_x, sum_xx, sum_y, sum_xy, sum_yy = self.sums.tolist()
        spread = n * sum_xx - sum_x * sum_x  # n² var(x)
        if self.size is None or n < 2 or spread <= 1e-12 * max(n * sum_xx, 1.0):
            raise DataError(
                f"the log-distance fit needs non-building pixels at two distances at least, got {int(n)} pixels from "
                f"{self.num_maps} maps"
            )
        b = (n * sum_xy - sum_x * sum_y) / spread
        a = (sum_y - b * sum_x) / n
        # At the optimum the residual is orthogonal to the regressors: Σr² = Σy² - aΣy - bΣxy.
        residual = max(sum_yy - a * sum_y - b * sum_xy, 0.0)
        building_unit = self.building_sum / self.building_count if self.building_count else 0.0
        return LogDistanceFit(
            a=a,
            b=b,
            building_unit=building_unit,
            height=int(self.size[0]),
            width=int(self.size[1]),
            db_range=self.db_range,
            num_maps=self.num_maps,
            num_pixels=int(n),
            rmse_db=math.sqrt(residual / n),
        )
