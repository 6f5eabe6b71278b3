"""Image-quality metrics for radio maps, as radio-map papers report them.

Every function takes maps scaled to ``[0, 1]`` (pixel 0 is the weakest path gain of the data, 1 the strongest;
for RadioMapSeer 0 <-> -147 dB and 1 <-> -47 dB) with shape ``(B, C, H, W)`` and returns one value per image,
shape ``(B,)``. A ``mask`` of shape ``(B, 1, H, W)``, ``(B, C, H, W)`` or ``(1, 1, H, W)`` marks the pixels that count
(``True``/``1``); pass ``buildings < 0.5`` to score the non-building pixels only, where the path gain is defined.
An image whose mask selects no pixel scores ``nan`` (and is skipped by :func:`summarize_metrics`).

Errors on the ``[0, 1]`` scale turn into dB of path gain by the width of the dB range the data was scaled from:
``error_dB = error_01 * (db_max - db_min)`` (for RadioMapSeer, 100 dB per unit).
"""

import math
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from .errors import DataError, InvalidArgumentError

__all__ = [
    "METRIC_NAMES",
    "PERCENTILES",
    "mse",
    "psnr",
    "ssim",
    "nmse",
    "rmse",
    "mae",
    "compute_metrics",
    "summarize_metrics",
]

# The metrics every evaluation reports, in table order. ``compute_metrics`` adds ``rmse_db`` and ``mae_db`` when it
# is given the dB range of the data.
METRIC_NAMES: Tuple[str, ...] = ("psnr", "ssim", "nmse", "rmse", "mae")

# Percentiles reported by ``summarize_metrics`` next to mean and std.
PERCENTILES: Tuple[int, ...] = (5, 25, 50, 75, 95)


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError(
            f"metrics expect torch tensors, got pred={type(pred).__name__} and target={type(target).__name__}"
        )
    if pred.ndim != 4 or pred.shape != target.shape:
        raise ValueError(
            f"metrics expect pred and target of the same shape (B, C, H, W), "
            f"got pred {tuple(pred.shape)} and target {tuple(target.shape)}"
        )
    # Scores are sums over many pixels: half precision would round them visibly, so work in at least float32.
    dtype = torch.float64 if torch.float64 in (pred.dtype, target.dtype) else torch.float32
    return pred.to(dtype), target.to(dtype)


def _check_mask(mask: Optional[torch.Tensor], like: torch.Tensor) -> Optional[torch.Tensor]:
    """Return the mask as a float tensor broadcast to ``like`` (B, C, H, W), or None."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask must be a torch tensor, got {type(mask).__name__}")
    batch, channels, height, width = like.shape
    if (
        mask.ndim != 4
        or mask.shape[0] not in (1, batch)
        or mask.shape[1] not in (1, channels)
        or tuple(mask.shape[2:]) != (height, width)
    ):
        raise ValueError(
            f"mask must have shape (B, 1, H, W), (B, C, H, W) or (1, 1, H, W) matching the maps "
            f"{tuple(like.shape)}, got {tuple(mask.shape)}"
        )
    return (mask.to(like.device) > 0.5 if mask.is_floating_point() else mask.to(like.device).bool()).to(
        like.dtype
    ).expand_as(like)


def _masked_mean(values: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of ``values`` (B, C, H, W) over all but the batch axis, restricted to ``mask`` -> (B,)."""
    if mask is None:
        return values.flatten(1).mean(dim=1)
    weights = mask.flatten(1)
    # 0 / 0 gives nan for an image with an empty mask, which is what we want to report.
    return (values.flatten(1) * weights).sum(dim=1) / weights.sum(dim=1)


def _masked_sum(values: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    if mask is None:
        return values.flatten(1).sum(dim=1)
    return (values * mask).flatten(1).sum(dim=1)


def mse(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error per image: (B, C, H, W) x 2 -> (B,)."""
    pred, target = _check_pair(pred, target)
    return _masked_mean((pred - target) ** 2, _check_mask(mask, pred))


def rmse(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Root mean squared error per image, in the units of the maps: (B, C, H, W) x 2 -> (B,)."""
    return mse(pred, target, mask).sqrt()


def mae(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean absolute error per image, in the units of the maps: (B, C, H, W) x 2 -> (B,)."""
    pred, target = _check_pair(pred, target)
    return _masked_mean((pred - target).abs(), _check_mask(mask, pred))


def nmse(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Normalised MSE per image, ``||pred - target||^2 / ||target||^2`` (RadioUNet's definition): -> (B,).

    A target with no energy gives ``0`` when the prediction matches it exactly and ``inf`` otherwise.
    """
    pred, target = _check_pair(pred, target)
    weights = _check_mask(mask, pred)
    error = _masked_sum((pred - target) ** 2, weights)
    energy = _masked_sum(target**2, weights)
    ratio = error / energy
    # 0 / 0 (an all-zero target reconstructed exactly) is a perfect score, not an undefined one.
    return torch.where((error == 0) & (energy == 0), torch.zeros_like(ratio), ratio)


def psnr(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    data_range: float = 1.0,
) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB, ``10 log10(data_range^2 / MSE)``: -> (B,).

    A perfect reconstruction scores ``inf``.
    """
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    return 10.0 * torch.log10(data_range**2 / mse(pred, target, mask))


def _gaussian_window(window_size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, shape (window_size,)."""
    offsets = torch.arange(window_size, dtype=dtype, device=device) - (window_size - 1) / 2
    taps = torch.exp(-(offsets**2) / (2 * sigma**2))
    return taps / taps.sum()


def _gaussian_filter(images: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian blur of each channel: (N, C, H, W) -> (N, C, H - k + 1, W - k + 1)."""
    channels = images.shape[1]
    size = taps.numel()
    rows = taps.view(1, 1, 1, size).expand(channels, 1, 1, size)
    cols = taps.view(1, 1, size, 1).expand(channels, 1, size, 1)
    return F.conv2d(F.conv2d(images, rows, groups=channels), cols, groups=channels)


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004, Gaussian window 11, sigma 1.5): -> (B,).

    Local statistics use the Gaussian-weighted (population) moments, and the SSIM map is averaged over the windows
    that lie entirely inside the image, which equals scikit-image's ``structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1)``. With a mask, a window counts when its centre pixel is
    in the mask. Multi-channel maps average the channels.
    """
    pred, target = _check_pair(pred, target)
    weights = _check_mask(mask, pred)
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be a positive odd number, got {window_size}")
    height, width = pred.shape[-2:]
    if height < window_size or width < window_size:
        raise DataError(f"ssim needs maps of at least {window_size}x{window_size} pixels, got {height}x{width}")

    taps = _gaussian_window(window_size, sigma, pred.dtype, pred.device)
    channels = pred.shape[1]
    # One grouped convolution over the five moments at once: x, y, x^2, y^2, xy.
    stacked = torch.cat([pred, target, pred * pred, target * target, pred * target], dim=1)
    moments = _gaussian_filter(stacked, taps)
    mu_x, mu_y, mean_xx, mean_yy, mean_xy = moments.split(channels, dim=1)
    var_x = mean_xx - mu_x**2
    var_y = mean_yy - mu_y**2
    cov_xy = mean_xy - mu_x * mu_y

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))

    if weights is not None:
        # A valid window's centre is offset by the window radius from the image corner.
        radius = window_size // 2
        weights = weights[..., radius : height - radius, radius : width - radius]
    return _masked_mean(ssim_map, weights)


def compute_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    db_range: Optional[Tuple[float, float]] = None,
) -> Dict[str, torch.Tensor]:
    """All metrics of a batch of maps in ``[0, 1]``: (B, C, H, W) x 2 -> ``{name: (B,)}``.

    Keys are :data:`METRIC_NAMES` (``psnr``, ``ssim``, ``nmse``, ``rmse``, ``mae``); with ``db_range=(db_min,
    db_max)`` also ``rmse_db`` and ``mae_db``, the errors in dB of path gain.
    """
    pred, target = _check_pair(pred, target)
    per_image_mse = mse(pred, target, mask)
    results = {
        "psnr": 10.0 * torch.log10(1.0 / per_image_mse),
        "ssim": ssim(pred, target, mask),
        "nmse": nmse(pred, target, mask),
        "rmse": per_image_mse.sqrt(),
        "mae": mae(pred, target, mask),
    }
    if db_range is not None:
        db_min, db_max = _check_db_range(db_range)
        results["rmse_db"] = results["rmse"] * (db_max - db_min)
        results["mae_db"] = results["mae"] * (db_max - db_min)
    return results


def _check_db_range(db_range: Sequence[float]) -> Tuple[float, float]:
    if len(db_range) != 2 or not float(db_range[1]) > float(db_range[0]):
        raise InvalidArgumentError(f"db_range must be (db_min, db_max) with db_min < db_max, got {tuple(db_range)}")
    return float(db_range[0]), float(db_range[1])


def summarize_metrics(
    per_image: Mapping[str, Union[torch.Tensor, Sequence[float]]],
    percentiles: Sequence[int] = PERCENTILES,
) -> Dict[str, Dict[str, float]]:
    """Average per-image scores: ``{name: (N,)}`` -> ``{name: {"mean", "std", "min", "max", "p5", ..., "count"}}``.

    ``nan`` scores (an empty mask) are left out and counted in ``"num_nan"``; ``inf`` scores (a perfect PSNR) are
    kept, so a mean can be ``inf``. ``std`` is the population standard deviation (0 for one image).
    """
    summary: Dict[str, Dict[str, float]] = {}
    for name, values in per_image.items():
        values = torch.as_tensor(values, dtype=torch.float64).flatten().cpu()
        finite_or_inf = values[~values.isnan()]
        stats: Dict[str, float] = {"count": int(finite_or_inf.numel()), "num_nan": int(values.isnan().sum())}
        if finite_or_inf.numel() == 0:
            stats.update({key: math.nan for key in ("mean", "std", "min", "max")})
            stats.update({f"p{q}": math.nan for q in percentiles})
        else:
            stats["mean"] = float(finite_or_inf.mean())
            stats["std"] = float(finite_or_inf.std(correction=0)) if finite_or_inf.numel() > 1 else 0.0
            stats["min"] = float(finite_or_inf.min())
            stats["max"] = float(finite_or_inf.max())
            quantiles = torch.quantile(
                finite_or_inf, torch.tensor([q / 100 for q in percentiles], dtype=torch.float64)
            )
            stats.update({f"p{q}": float(value) for q, value in zip(percentiles, quantiles)})
        summary[name] = stats
    return summary
