"""Turning raw radio-map images into the item dict every dataset of this package yields.

An item is ``{"pixel_values": (1, H, W) in [-1, 1], "buildings": (1, H, W) in {0, 1}, "transmitter": (1, H, W)
with a single 1, "name": "<map>_<tx>", "simulation": str}``. Resizing keeps the transmitter a single pixel (its
position is scaled, not its image), the gain is resampled bilinearly with anti-aliasing, the building mask by
nearest neighbour so that it stays binary.
"""

import random
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidArgumentError, MapFileError
from .conventions import unit_to_model


def transmitter_pixel(antenna: np.ndarray) -> Tuple[int, int]:
    """(row, col) of the brightest pixel of an antenna image `(H, W)`."""
    flat_index = int(np.argmax(antenna))
    return divmod(flat_index, antenna.shape[1])


class RadioMapItemBuilder:
    """Builds items at a chosen resolution, with an optional random horizontal flip.

    Args:
        resolution (`int`, *optional*): output side in pixels; None keeps the images' own size.
        flip (`bool`, defaults to False): flip each item left-right with probability 1/2 (all its images together).
            The draw uses Python's ``random`` module, which torch's DataLoader seeds in every worker.
    """

    def __init__(self, resolution: Optional[int] = None, flip: bool = False):
        if resolution is not None and int(resolution) < 8:
            raise InvalidArgumentError(f"resolution must be >= 8 pixels or None (native size), got {resolution}")
        self.resolution = int(resolution) if resolution is not None else None
        self.flip = bool(flip)

    def __call__(
        self, gain: np.ndarray, buildings: np.ndarray, tx_pixel: Tuple[int, int], name: str, simulation: str
    ) -> Dict[str, object]:
        """
        Args:
            gain (`np.ndarray` of shape `(H, W)`): the gain image, uint8 grey 0-255 or float in [0, 1].
            buildings (`np.ndarray` of shape `(H, W)`): non-zero on buildings.
            tx_pixel (`Tuple[int, int]`): (row, col) of the transmitter in the `(H, W)` images.
            name (`str`): ``"<map>_<tx>"``.
            simulation (`str`): the simulation the gain comes from.
        """
        if gain.shape != buildings.shape or gain.ndim != 2:
            raise MapFileError(
                f"item {name}: gain {gain.shape} and buildings {buildings.shape} must be (H, W) images of one size"
            )
        height, width = gain.shape
        # numpy for the per-pixel arithmetic: on small images torch's intra-op threads cost more than they save
        # (5 ms for one 256 x 256 multiply-add on 2 busy cores, against 0.1 ms in numpy).
        if gain.dtype == np.uint8:
            unit = gain.astype(np.float32) / np.float32(255.0)  # (H, W) in [0, 1]
        else:
            unit = np.asarray(gain, dtype=np.float32)
            if not np.isfinite(unit).all():
                raise MapFileError(
                    f"item {name} ({simulation}): the gain map holds {int((~np.isfinite(unit)).sum())} NaN or inf "
                    "value(s); expected values in [0, 1]"
                )
        mask = (buildings > 0).astype(np.float32)  # (H, W)
        row, col = tx_pixel
        if self.resolution is not None and (height, width) != (self.resolution, self.resolution):
            size = (self.resolution, self.resolution)
            resized = F.interpolate(
                torch.from_numpy(unit)[None, None], size=size, mode="bilinear", align_corners=False, antialias=True
            )
            unit = resized[0, 0].clamp(0.0, 1.0).numpy()
            mask = F.interpolate(torch.from_numpy(mask)[None, None], size=size, mode="nearest-exact")[0, 0].numpy()
            # The transmitter's pixel centre, scaled to the new grid.
            row = min(int((row + 0.5) * self.resolution / height), self.resolution - 1)
            col = min(int((col + 0.5) * self.resolution / width), self.resolution - 1)
        transmitter = np.zeros_like(unit)
        transmitter[row, col] = 1.0
        images = [unit_to_model(unit), mask, transmitter]
        if self.flip and random.random() < 0.5:
            images = [np.flip(image, axis=-1) for image in images]
        pixel_values, mask, transmitter = (torch.from_numpy(np.ascontiguousarray(image))[None] for image in images)
        return {
            "pixel_values": pixel_values,
            "buildings": mask,
            "transmitter": transmitter,
            "name": name,
            "simulation": simulation,
        }
