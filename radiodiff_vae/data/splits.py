"""Train / validation / test splits of RadioMapSeer's maps.

Both schemes start from the map indices ``0 .. n-1`` shuffled by ``np.random.seed(42); np.random.shuffle`` (as
RadioUNet and RadioDiff do, here with a local ``RandomState`` so that no global seed is touched) and cut the
shuffled order into ranges of *positions*, both ends included; map id = index + 1. With ``n = 700`` maps:

============  ===========  ============  ============  =============================================
scheme        train        validation    test          overlap
============  ===========  ============  ============  =============================================
radiodiff     0 .. 600     501 .. 600    600 .. 699    validation inside train; position 600 in test
disjoint      0 .. 500     501 .. 600    601 .. 699    none (RadioUNet's split)
============  ===========  ============  ============  =============================================

``n`` is 700 whenever every map id is at most 700, so a folder with part of RadioMapSeer keeps the original rule on
the ids it holds; with larger ids (a big synthetic folder) ``n`` is the largest id and the cut points scale with it:
``a = round(5 n / 7)``, ``b = round(6 n / 7)`` (500 and 600 for 700 maps). Every position lands in some split, so
every map present lands in one.
"""

import warnings
from typing import Dict, Iterable, List, Tuple

import numpy as np
from ..errors import DataError, InvalidArgumentError

SPLITS: Tuple[str, ...] = ("train", "val", "test")
SPLIT_SCHEMES: Tuple[str, ...] = ("radiodiff", "disjoint")
# 🤗 datasets names the validation split "validation"; both spellings are accepted everywhere.
SPLIT_ALIASES: Dict[str, str] = {"validation": "val"}
ORIGINAL_NUM_MAPS = 700
# Every map of a folder, whatever its number: for folders that are not RadioMapSeer (make-synthetic, make-raytraced).
ALL_MAPS = "all"
SHUFFLE_SEED = 42


def normalize_split(split: str, allow_all: bool = False) -> str:
    """``"validation"`` -> ``"val"``; raise a ValueError for anything that is not a split name (``"all"`` is one
    where ``allow_all``: every map of a folder)."""
    name = SPLIT_ALIASES.get(split, split)
    if name not in SPLITS and not (allow_all and name == ALL_MAPS):
        expected = SPLITS + ((ALL_MAPS,) if allow_all else ())
        raise InvalidArgumentError(f"split must be one of {expected} (or 'validation'), got {split!r}")
    return name


def is_radiomapseer_numbered(map_ids: Iterable[int]) -> bool:
    """Whether a folder holds RadioMapSeer's maps as distributed, numbered 1 to 700: only then do RadioMapSeer's
    splits (cut from its shuffled order of 700 maps) mean what the papers mean by them."""
    return sorted({int(map_id) for map_id in map_ids}) == list(range(1, ORIGINAL_NUM_MAPS + 1))


def _check_scheme(split_scheme: str) -> str:
    if split_scheme not in SPLIT_SCHEMES:
        raise InvalidArgumentError(f"split_scheme must be one of {SPLIT_SCHEMES}, got {split_scheme!r}")
    return split_scheme


def shuffled_map_indices(num_maps: int = ORIGINAL_NUM_MAPS) -> np.ndarray:
    """Map indices ``0 .. num_maps-1`` in RadioUNet's shuffled order: element ``p`` is the index at position ``p``."""
    indices = np.arange(num_maps, dtype=np.int64)
    np.random.RandomState(SHUFFLE_SEED).shuffle(indices)
    return indices


def split_positions(num_maps: int, split: str, split_scheme: str) -> Tuple[int, int]:
    """First and last position (both included) of ``split`` among ``num_maps`` shuffled maps."""
    split, split_scheme = normalize_split(split), _check_scheme(split_scheme)
    train_end = round(num_maps * 5 / 7)  # 500 for 700 maps
    val_end = round(num_maps * 6 / 7)  # 600 for 700 maps
    ranges = {
        "radiodiff": {"train": (0, val_end), "val": (train_end + 1, val_end), "test": (val_end, num_maps - 1)},
        "disjoint": {"train": (0, train_end), "val": (train_end + 1, val_end), "test": (val_end + 1, num_maps - 1)},
    }
    return ranges[split_scheme][split]


def split_map_ids(map_ids: Iterable[int], split: str, split_scheme: str = "radiodiff") -> List[int]:
    """The map ids among ``map_ids`` that belong to ``split``, in the shuffled order (the original's item order).

    Args:
        map_ids (`Iterable[int]`): the ids present (1-based, RadioMapSeer's file numbers).
        split (`str`): ``"train"``, ``"val"`` (or ``"validation"``), ``"test"``, or ``"all"`` (every id, in order).
        split_scheme (`str`, defaults to ``"radiodiff"``): ``"radiodiff"`` or ``"disjoint"``.

    Returns:
        `List[int]`, possibly empty.
    """
    ids = sorted({int(map_id) for map_id in map_ids})
    if not ids:
        return []
    if ids[0] < 1:
        raise DataError(f"map ids are 1-based (RadioMapSeer numbers its maps from 1), got {ids[0]}")
    if normalize_split(split, allow_all=True) == ALL_MAPS:
        return ids
    num_maps = max(ORIGINAL_NUM_MAPS, ids[-1])
    first, last = split_positions(num_maps, split, split_scheme)
    present = set(ids)
    return [int(index) + 1 for index in shuffled_map_indices(num_maps)[first : last + 1] if int(index) + 1 in present]


def warn_about_radiodiff_overlap(stacklevel: int = 3) -> None:
    """Tell the user that the ``radiodiff`` split scheme's validation and test maps are not held out."""
    warnings.warn(
        "split_scheme='radiodiff' reproduces RadioDiff's split: its validation maps (positions 501-600 of the shuffled "
        "order) are also training maps, and the map at position 600 is in both train and test. Use "
        "split_scheme='disjoint' (RadioUNet's split) for held-out numbers.",
        UserWarning,
        stacklevel=stacklevel,
    )
