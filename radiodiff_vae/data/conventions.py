"""RadioMapSeer's pixel conventions, shared by every loader and by the synthetic generator.

A RadioMapSeer gain map is an 8-bit grey image whose value ``g`` encodes the path gain in dB linearly::

    g / 255 = (PG_dB - low) / (high - low),   (low, high) = RADIOMAPSEER_DB_RANGE = (-147, -47)

so grey 0 is the -147 dB truncation (and every building pixel) and grey 255 is -47 dB, the largest path gain in
the set. Models see ``2 * g / 255 - 1`` in [-1, 1] (``Normalize(mean=0.5, std=0.5)``, as the seed states).
"""

from typing import Tuple, Union

import numpy as np
import torch
from ..errors import InvalidArgumentError

ArrayLike = Union[np.ndarray, torch.Tensor]

# (dB at pixel 0, dB at pixel 1): the gain range RadioMapSeer's maps were truncated and scaled to.
RADIOMAPSEER_DB_RANGE: Tuple[float, float] = (-147.0, -47.0)

# RadioMapSeer's native map size in pixels (1 m per pixel over a 256 m x 256 m area).
RADIOMAPSEER_NATIVE_SIZE: int = 256

# The carrier of RadioMapSeer's simulations, in Hz.
RADIOMAPSEER_FREQUENCY_HZ: float = 5.9e9


def _check_db_range(db_range: Tuple[float, float]) -> Tuple[float, float]:
    low, high = (float(value) for value in db_range)
    if not high > low:
        raise InvalidArgumentError(f"db_range must be (low, high) with high > low, got {tuple(db_range)}")
    return low, high


def db_to_unit(gain_db: ArrayLike, db_range: Tuple[float, float] = RADIOMAPSEER_DB_RANGE) -> ArrayLike:
    """Path gain in dB -> pixel value in [0, 1], clipped at both ends of ``db_range``."""
    low, high = _check_db_range(db_range)
    scaled = (gain_db - low) / (high - low)
    return scaled.clamp(0.0, 1.0) if isinstance(scaled, torch.Tensor) else np.clip(scaled, 0.0, 1.0)


def unit_to_db(unit: ArrayLike, db_range: Tuple[float, float] = RADIOMAPSEER_DB_RANGE) -> ArrayLike:
    """Pixel value in [0, 1] -> path gain in dB (the inverse of :func:`db_to_unit` inside the range)."""
    low, high = _check_db_range(db_range)
    return unit * (high - low) + low


def unit_to_model(unit: ArrayLike) -> ArrayLike:
    """[0, 1] -> [-1, 1], the range the VAE sees (``Normalize(mean=0.5, std=0.5)``)."""
    return unit * 2.0 - 1.0


def model_to_unit(values: ArrayLike) -> ArrayLike:
    """[-1, 1] -> [0, 1], the inverse of :func:`unit_to_model`."""
    return (values + 1.0) * 0.5
