"""A folder of 8-bit grey PNG radio maps (any names, one size) as a map-style dataset: what ``radiodiff-vae encode
--input_dir`` reads."""

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from .conventions import unit_to_model
from .layout import image_size, read_grey_png
from ..errors import DataError, InputNotFoundError, NotAFolderError


def list_png_maps(folder: str) -> List[Path]:
    """The ``*.png`` files of ``folder`` (not recursive), sorted by name."""
    path = Path(folder)
    if not path.exists():
        raise InputNotFoundError(f"--input_dir {folder} does not exist")
    if not path.is_dir():
        raise NotAFolderError(f"--input_dir {folder} is not a folder")
    files = sorted(entry for entry in path.iterdir() if entry.suffix.lower() == ".png" and entry.is_file())
    if not files:
        raise DataError(f"--input_dir {folder} holds no .png files")
    return files


class PngMapFolder:
    """A folder of 8-bit grey PNG maps as a map-style dataset of ``{"pixel_values": (1, H, W) in [-1, 1], "name"}``.

    Every file's header is checked when the folder is opened (mode ``L``, one common size), so a bad file stops the
    job before any model work.
    """

    def __init__(self, folder: str) -> None:
        self.files = list_png_maps(folder)
        self.size: Optional[Tuple[int, int]] = None
        for file in self.files:
            size = image_size(file, gain=True)  # the gain-map rule of the datasets: mode L, refused otherwise
            if self.size is None:
                self.size = size
            elif size != self.size:
                raise DataError(
                    f"{file} is {size[0]}x{size[1]} pixels but {self.files[0].name} is {self.size[0]}x{self.size[1]}; "
                    "all maps of a folder must have one size"
                )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        grey = read_grey_png(self.files[index], gain=True).astype(np.float32)  # (H, W) in 0..255
        pixel_values = torch.from_numpy(unit_to_model(grey / 255.0)).unsqueeze(0)  # (1, H, W) in [-1, 1]
        return {"pixel_values": pixel_values, "name": self.files[index].name, "simulation": ""}
