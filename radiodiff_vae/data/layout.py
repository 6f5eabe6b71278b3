"""RadioMapSeer's folder layout: where each image lives, and reading and writing those 8-bit PNG files.

::

    root/gain/<simulation>/<map>_<tx>.png       path gain, grey = 255 (PG_dB + 147) / 100, buildings 0
    root/png/buildings_complete/<map>.png        255 on buildings, 0 elsewhere
    root/png/antennas/<map>_<tx>.png             255 at the transmitter's pixel, 0 elsewhere

Simulations shipped with RadioMapSeer: DPM, IRT2, IRT4 and carsDPM, carsIRT2, carsIRT4; the synthetic writer uses
``synthetic``. Maps are numbered from 1, transmitters from 0.
"""

import os
import re
from pathlib import Path
from typing import Dict, List, Union

import numpy as np
from PIL import Image

from ..atomic import atomic_path
from ..errors import MapFileError

PathLike = Union[str, os.PathLike]

GAIN_DIR = "gain"
BUILDINGS_DIR = os.path.join("png", "buildings_complete")
ANTENNAS_DIR = os.path.join("png", "antennas")
KNOWN_SIMULATIONS = ("DPM", "IRT2", "IRT4", "carsDPM", "carsIRT2", "carsIRT4")

LAYOUT_DESCRIPTION = (
    "root/gain/<simulation>/<map>_<tx>.png, root/png/buildings_complete/<map>.png and "
    "root/png/antennas/<map>_<tx>.png (RadioMapSeer's layout)"
)

_MAP_FILE = re.compile(r"^(\d+)\.png$")
_MAP_TX_FILE = re.compile(r"^(\d+)_(\d+)\.png$")


def gain_path(root: PathLike, simulation: str, map_id: int, tx: int) -> Path:
    return Path(root) / GAIN_DIR / simulation / f"{map_id}_{tx}.png"


def buildings_path(root: PathLike, map_id: int) -> Path:
    return Path(root) / BUILDINGS_DIR / f"{map_id}.png"


def antenna_path(root: PathLike, map_id: int, tx: int) -> Path:
    return Path(root) / ANTENNAS_DIR / f"{map_id}_{tx}.png"


def list_map_ids(folder: PathLike) -> List[int]:
    """Map ids of the ``<map>.png`` files in ``folder``, sorted."""
    with os.scandir(folder) as entries:
        return sorted(int(match.group(1)) for entry in entries if (match := _MAP_FILE.match(entry.name)))


def list_map_tx(folder: PathLike) -> Dict[int, List[int]]:
    """``{map: sorted transmitters}`` of the ``<map>_<tx>.png`` files in ``folder`` (one directory listing)."""
    found: Dict[int, List[int]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            match = _MAP_TX_FILE.match(entry.name)
            if match:
                found.setdefault(int(match.group(1)), []).append(int(match.group(2)))
    return {map_id: sorted(txs) for map_id, txs in found.items()}


# 8-bit modes PIL converts to grey without losing the pixel meaning; 16-bit and float images would be clipped.
_EIGHT_BIT_MODES = ("L", "P", "RGB", "RGBA", "LA", "1")


def grey_pixels(image: Image.Image, source: object) -> np.ndarray:
    """A PIL image as a `(H, W)` uint8 array; colour is converted to grey, other bit depths are refused.

    Args:
        image (`PIL.Image.Image`): the image.
        source (`object`): what to name in the error (a path, a row index).
    """
    if image.mode not in _EIGHT_BIT_MODES:
        raise MapFileError(
            f"{source}: expected an 8-bit image (RadioMapSeer's encoding, grey = 255 (PG_dB + 147) / 100), "
            f"got PIL mode {image.mode!r}; convert the maps to 8-bit grey first"
        )
    return np.array(image.convert("L") if image.mode != "L" else image, dtype=np.uint8)


# Gain maps are RadioMapSeer's single-channel 8-bit grey (mode L). A colour image is refused rather than made grey:
# a colour-mapped gain map turned into luminance would be read as wrong gains without a word. Building and
# transmitter masks only need "non-zero", so any 8-bit mode is converted.
GAIN_MODE = "L"


def check_gain_mode(mode: str, source: object) -> None:
    """The one rule for gain maps, wherever they are read (datasets, ``evaluate``, ``encode``)."""
    if mode != GAIN_MODE:
        raise MapFileError(
            f"{source} is a mode-{mode} image; expected single-channel 8-bit grey gain maps (mode L) like "
            "RadioMapSeer's gain/*.png; convert it first (PIL: image.convert('L') if it is grey stored as colour)"
        )


def image_size(path: PathLike, gain: bool = False) -> tuple:
    """``(width, height)`` from the file's header only (no pixel is decoded); checks the gain-map mode if ``gain``.

    Raises:
        MapFileError: the file is not an image (or, with ``gain``, not mode L).
    """
    try:
        with Image.open(path) as image:
            mode, size = image.mode, image.size
    except (OSError, SyntaxError, ValueError) as error:
        raise MapFileError(f"{path} cannot be read as an image ({error})") from None
    if gain:
        check_gain_mode(mode, path)
    return size


def read_grey_png(path: PathLike, gain: bool = False) -> np.ndarray:
    """An 8-bit image file as a `(H, W)` uint8 grey array (see :func:`grey_pixels`; a gain map must be mode L).

    Raises:
        MapFileError: the file is not an image, is truncated, or has another mode (the message names the file).
    """
    try:
        with Image.open(path) as image:
            if gain:
                check_gain_mode(image.mode, path)
            return grey_pixels(image, path)
    except MapFileError:
        raise
    except (OSError, SyntaxError, ValueError) as error:  # PIL: "image file is truncated", not an image, ...
        raise MapFileError(f"{path} cannot be read as an image ({error})") from None


def write_grey_png(path: PathLike, pixels: np.ndarray) -> None:
    """Write a `(H, W)` uint8 array as an 8-bit grey PNG, atomically."""
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError(f"write_grey_png expects a (H, W) uint8 array, got {pixels.dtype} of shape {pixels.shape}")
    with atomic_path(path) as temporary:
        Image.fromarray(pixels).save(temporary, format="PNG")
