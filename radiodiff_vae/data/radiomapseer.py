"""The RadioMapSeer dataset (or any folder in its layout), as a torch ``Dataset``."""

import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from torch.utils.data import Dataset

from ..errors import DataError, InputNotFoundError, InvalidArgumentError, MapFileError
from .items import RadioMapItemBuilder, transmitter_pixel
from .layout import (
    ANTENNAS_DIR,
    BUILDINGS_DIR,
    GAIN_DIR,
    LAYOUT_DESCRIPTION,
    antenna_path,
    buildings_path,
    gain_path,
    image_size,
    list_map_ids,
    list_map_tx,
    read_grey_png,
)
from .splits import ALL_MAPS, SPLIT_SCHEMES, normalize_split, split_map_ids, warn_about_radiodiff_overlap

PathLike = Union[str, os.PathLike]


def check_radiomapseer_folder(root: PathLike, simulation: str) -> Tuple[Path, Path, Path]:
    """Checks that ``root`` is in RadioMapSeer's layout with a ``gain/<simulation>`` folder, from folder listings
    only (cheap enough to run before any work). Returns the gain, buildings and antennas folders.

    Raises:
        FileNotFoundError: ``root`` is not a folder, or a folder of the layout is missing (the message names it and
            the simulations found).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputNotFoundError(f"RadioMapSeer root {root} is not a directory; expected {LAYOUT_DESCRIPTION}")
    gain_root = root / GAIN_DIR
    gain_dir = gain_root / simulation
    if not gain_dir.is_dir():
        found = sorted(entry.name for entry in gain_root.iterdir() if entry.is_dir()) if gain_root.is_dir() else []
        raise InputNotFoundError(
            f"no simulation folder {gain_dir} (simulations found under {gain_root}: {found or 'none'}); "
            f"expected {LAYOUT_DESCRIPTION}"
        )
    for folder in (root / BUILDINGS_DIR, root / ANTENNAS_DIR):
        if not folder.is_dir():
            raise InputNotFoundError(f"missing folder {folder}; expected {LAYOUT_DESCRIPTION}")
    return gain_dir, root / BUILDINGS_DIR, root / ANTENNAS_DIR


class RadioMapSeer(Dataset):
    """Radio maps of a folder in RadioMapSeer's layout (``docs/data.md``), one item per (map, transmitter).

    Every file an item needs is checked at construction: a missing one raises a ``FileNotFoundError`` naming it,
    never an error in the middle of an epoch.

    Args:
        root (`str` or `os.PathLike`): the folder holding ``gain/``, ``png/buildings_complete/`` and ``png/antennas/``.
        simulation (`str`, defaults to ``"IRT4"``): the folder under ``gain/``: ``DPM``, ``IRT2``, ``IRT4``,
            ``carsDPM``, ``carsIRT2``, ``carsIRT4``, ``synthetic`` or any other present.
        split (`str`, defaults to ``"train"``): ``"train"``, ``"val"`` (or ``"validation"``), ``"test"``, or ``"all"``:
            every map of the folder (for folders that are not RadioMapSeer, e.g. from ``make-raytraced``).
        split_scheme (`str`, defaults to ``"radiodiff"``): ``"radiodiff"`` reproduces RadioDiff's split (and warns
            that its validation and test maps are not held out); ``"disjoint"`` is RadioUNet's split, no overlap.
        num_tx (`int`, *optional*): transmitters ``0 .. num_tx-1`` of every map, all required. None takes as many
            as the split's best-covered map has (RadioMapSeer: 80, IRT4: 2) and requires them of every map;
            ``self.num_tx`` then holds the number found.
        resolution (`int`, *optional*): output side in pixels; None keeps the native size (256), 320 gives the
            report's input size.
        flip (`bool`, defaults to False): random horizontal flip of each item (gain, buildings and transmitter).
        warn_overlap (`bool`, defaults to True): warn about the ``radiodiff`` scheme's overlaps.
        skip_missing (`bool`, defaults to False): take the (map, transmitter) pairs of the split whose gain and
            transmitter files are present (transmitters below ``num_tx`` when given), instead of requiring every
            transmitter of every map; maps with none are left out of ``self.map_ids``. For a folder that holds some
            of the maps, e.g. a second trace of a subset of the transmitters (``evaluate --reference_simulation``).

    Items are dicts: ``"pixel_values"`` `(1, H, W)` in [-1, 1], ``"buildings"`` `(1, H, W)` in {0, 1},
    ``"transmitter"`` `(1, H, W)` (1 at the transmitter), ``"name"`` (``"<map>_<tx>"``), ``"simulation"``.
    """

    def __init__(
        self,
        root: PathLike,
        simulation: str = "IRT4",
        split: str = "train",
        split_scheme: str = "radiodiff",
        num_tx: Optional[int] = None,
        resolution: Optional[int] = None,
        flip: bool = False,
        warn_overlap: bool = True,
        skip_missing: bool = False,
    ):
        self.root = Path(root)
        self.simulation = simulation
        self.split = normalize_split(split, allow_all=True)
        if split_scheme not in SPLIT_SCHEMES:
            raise InvalidArgumentError(f"split_scheme must be one of {SPLIT_SCHEMES}, got {split_scheme!r}")
        self.split_scheme = split_scheme
        if num_tx is not None and num_tx < 1:
            raise InvalidArgumentError(f"num_tx must be >= 1 or None (every transmitter found), got {num_tx}")
        self.num_tx = num_tx
        self.skip_missing = skip_missing
        self.build_item = RadioMapItemBuilder(resolution=resolution, flip=flip)

        gain_dir, buildings_dir, antennas_dir = check_radiomapseer_folder(self.root, self.simulation)
        present_maps = list_map_ids(buildings_dir)
        if not present_maps:
            raise InputNotFoundError(f"no <map>.png file in {buildings_dir}; expected {LAYOUT_DESCRIPTION}")
        self.map_ids: List[int] = split_map_ids(present_maps, self.split, split_scheme)
        if not self.map_ids:
            raise DataError(
                f"split {self.split!r} of split_scheme {split_scheme!r} holds none of the {len(present_maps)} maps in "
                f"{buildings_dir} (ids {present_maps[0]}..{present_maps[-1]}); maps are assigned by their position in "
                "the shuffled order of docs/data.md, so a small folder can leave a split empty"
            )
        if split_scheme == "radiodiff" and warn_overlap and self.split != ALL_MAPS:
            warn_about_radiodiff_overlap()
        self.items: List[Tuple[int, int]] = self._find_items(gain_dir, antennas_dir)

    def _find_items(self, gain_dir: Path, antennas_dir: Path) -> List[Tuple[int, int]]:
        """Every (map, tx) of the split, after checking that its three files exist (two directory listings)."""
        gains, antennas = list_map_tx(gain_dir), list_map_tx(antennas_dir)
        if self.skip_missing:
            return self._find_present_items(gains, antennas)
        num_tx = self.num_tx
        if num_tx is None:
            # Every map of a RadioMapSeer simulation has the same transmitters (80, or 2 for IRT4): take as many as
            # the best-covered map of the split has, so that a map missing one of them is reported, not skipped.
            num_tx = max((max(gains[map_id]) + 1 for map_id in self.map_ids if map_id in gains), default=0)
            if num_tx == 0:
                raise InputNotFoundError(
                    f"no gain map of the split's maps in {gain_dir} (expected files such as "
                    f"{gain_path(self.root, self.simulation, self.map_ids[0], 0)}); expected {LAYOUT_DESCRIPTION}"
                )
        self.num_tx = num_tx
        items = []
        for map_id in self.map_ids:
            missing_gain = sorted(set(range(num_tx)) - set(gains.get(map_id, [])))
            if missing_gain:
                raise InputNotFoundError(
                    f"missing gain map {gain_path(self.root, self.simulation, map_id, missing_gain[0])} "
                    f"({len(missing_gain)} of the {num_tx} transmitters of map {map_id} are missing); "
                    f"expected {LAYOUT_DESCRIPTION}"
                )
            missing_antenna = sorted(set(range(num_tx)) - set(antennas.get(map_id, [])))
            if missing_antenna:
                raise InputNotFoundError(
                    f"missing transmitter image {antenna_path(self.root, map_id, missing_antenna[0])}; "
                    f"expected {LAYOUT_DESCRIPTION}"
                )
            items.extend((map_id, tx) for tx in range(num_tx))
        self._check_sizes(items)
        return items

    def _find_present_items(self, gains: Dict[int, List[int]], antennas: Dict[int, List[int]]) -> List[Tuple[int, int]]:
        """Every (map, tx) of the split whose gain and transmitter files both exist (``skip_missing``)."""
        limit = self.num_tx if self.num_tx is not None else float("inf")
        items = [
            (map_id, tx)
            for map_id in self.map_ids
            for tx in sorted(set(gains.get(map_id, [])) & set(antennas.get(map_id, [])))
            if tx < limit
        ]
        if not items:
            raise InputNotFoundError(
                f"no gain map with its transmitter image for any of the {len(self.map_ids)} maps of split "
                f"{self.split!r} in {self.root / GAIN_DIR / self.simulation}; expected {LAYOUT_DESCRIPTION}"
            )
        self.map_ids = sorted({map_id for map_id, _ in items})
        self.num_tx = max(tx for _, tx in items) + 1
        self._check_sizes(items)
        return items

    @property
    def names(self) -> List[str]:
        """The items' names, ``"<map>_<tx>"``, in order, without reading any image."""
        return [f"{map_id}_{tx}" for map_id, tx in self.items]

    def _check_sizes(self, items: List[Tuple[int, int]]) -> None:
        """Reads every image header (no pixels: ~0.1 ms a file), so that a map of another size, a colour gain map or
        a file that is no image stops the run here, named, and not in the middle of an epoch."""
        expected, first = None, None
        files = [(buildings_path(self.root, map_id), False) for map_id in self.map_ids]
        files += [(gain_path(self.root, self.simulation, map_id, tx), True) for map_id, tx in items]
        for file, is_gain in files:
            size = image_size(file, gain=is_gain)
            if expected is None:
                expected, first = size, file
            elif size != expected:
                raise MapFileError(
                    f"{file} is {size[0]}x{size[1]} pixels but {first} is {expected[0]}x{expected[1]}; every map of "
                    "a dataset needs one size (resize or remove it)"
                )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Dict[str, object]:
        map_id, tx = self.items[index]
        gain = read_grey_png(gain_path(self.root, self.simulation, map_id, tx), gain=True)
        buildings = read_grey_png(buildings_path(self.root, map_id))
        if gain.shape != buildings.shape:
            raise MapFileError(
                f"{gain_path(self.root, self.simulation, map_id, tx)} is {gain.shape[1]}x{gain.shape[0]} pixels, its "
                f"buildings map {buildings.shape[1]}x{buildings.shape[0]}; every map of a dataset needs one size"
            )
        tx_pixel = transmitter_pixel(read_grey_png(antenna_path(self.root, map_id, tx)))
        return self.build_item(gain, buildings, tx_pixel, f"{map_id}_{tx}", self.simulation)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, simulation={self.simulation!r}, split={self.split!r}, "
            f"split_scheme={self.split_scheme!r}, maps={len(self.map_ids)}, items={len(self)})"
        )
