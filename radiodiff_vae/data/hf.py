"""🤗 datasets: RadioMapSeer-layout folders to ``datasets.Dataset`` and back to torch items.

A converted dataset has one row per (map, transmitter) with the columns

* ``image`` (``Image``): the gain map, 8-bit grey PNG, bytes embedded (RadioMapSeer's encoding);
* ``buildings`` (``Image``): the building mask, 255 on buildings;
* ``transmitter`` (``Image``): 255 at the transmitter's pixel;
* ``map`` (int32), ``tx`` (int32), ``simulation`` (string), ``name`` (string, ``"<map>_<tx>"``).

:func:`load_radio_dataset` takes what a training script's ``--dataset_name`` takes (as diffusers' scripts do): a
folder written by ``save_to_disk``, a RadioMapSeer-layout folder, a local data folder or a Hub name, and returns a
torch ``Dataset`` with this package's items.
"""

import hashlib
import os
from pathlib import Path
from typing import Dict, Iterator, Optional, Union

import numpy as np
from torch.utils.data import Dataset

from ..hub_id import local_path_or_hub_id
from .items import RadioMapItemBuilder, transmitter_pixel
from .layout import GAIN_DIR, antenna_path, buildings_path, check_gain_mode, gain_path, grey_pixels
from .radiomapseer import RadioMapSeer
from .splits import ALL_MAPS, SPLITS, normalize_split, warn_about_radiodiff_overlap
from ..errors import DataError, InvalidArgumentError

PathLike = Union[str, os.PathLike]

# Split names as 🤗 datasets spells them, keyed by this package's names.
HF_SPLIT_NAMES: Dict[str, str] = {"train": "train", "val": "validation", "test": "test"}


def _require_datasets():
    try:
        import datasets
    except ImportError as error:  # pragma: no cover - datasets is a hard dependency of the package
        raise ImportError("🤗 datasets support needs the `datasets` package: pip install datasets") from error
    return datasets


def radio_map_features():
    """The ``datasets.Features`` of a converted radio-map dataset."""
    datasets = _require_datasets()
    return datasets.Features(
        {
            "image": datasets.Image(),
            "buildings": datasets.Image(),
            "transmitter": datasets.Image(),
            "map": datasets.Value("int32"),
            "tx": datasets.Value("int32"),
            "simulation": datasets.Value("string"),
            "name": datasets.Value("string"),
        }
    )


def _rows(root: str, simulation: str, items: list) -> Iterator[dict]:
    # The PNG bytes are embedded as they are, so that the dataset carries RadioMapSeer's exact 8-bit values and
    # stays usable once the folder is gone (save_to_disk, push_to_hub).
    for map_id, tx in items:
        yield {
            "image": {"bytes": gain_path(root, simulation, map_id, tx).read_bytes(), "path": None},
            "buildings": {"bytes": buildings_path(root, map_id).read_bytes(), "path": None},
            "transmitter": {"bytes": antenna_path(root, map_id, tx).read_bytes(), "path": None},
            "map": map_id,
            "tx": tx,
            "simulation": simulation,
            "name": f"{map_id}_{tx}",
        }


def _fingerprint(root: Path, simulation: str, items: list) -> str:
    """A cache key that changes with the items and with every file's size and modification time."""
    digest = hashlib.sha256(f"radio-maps-v1|{root.resolve()}|{simulation}".encode())
    for map_id, tx in items:
        paths = (gain_path(root, simulation, map_id, tx), buildings_path(root, map_id), antenna_path(root, map_id, tx))
        for path in paths:
            stat = path.stat()
            digest.update(f"|{map_id}_{tx}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def radiomapseer_to_hf(
    root: PathLike,
    simulation: str = "IRT4",
    split: Optional[str] = None,
    split_scheme: str = "radiodiff",
    num_tx: Optional[int] = None,
    cache_dir: Optional[PathLike] = None,
):
    """Convert a RadioMapSeer-layout folder into a ``datasets.Dataset`` (or a ``DatasetDict`` of all splits).

    Args:
        root (`str` or `os.PathLike`): the folder (see :class:`RadioMapSeer`); every file is checked first.
        simulation (`str`, defaults to ``"IRT4"``): the folder under ``gain/``.
        split (`str`, *optional*): ``"train"``, ``"val"``/``"validation"`` or ``"test"`` gives that split as a
            ``Dataset``; None gives a ``DatasetDict`` with ``train``, ``validation`` and ``test``.
        split_scheme (`str`, defaults to ``"radiodiff"``): as :class:`RadioMapSeer`; ``"disjoint"`` for splits
            without overlap (see :mod:`radiodiff_vae.data.splits`).
        num_tx (`int`, *optional*): transmitters per map (None: every one found).
        cache_dir (`str` or `os.PathLike`, *optional*): where 🤗 datasets writes its Arrow cache.

    Returns:
        `datasets.Dataset` or `datasets.DatasetDict`, with the columns listed in this module's docstring.
    """
    datasets = _require_datasets()
    splits = [normalize_split(split)] if split is not None else list(SPLITS)
    # RadioMapSeer checks the layout and every file of every split before a single row is written.
    folders = {
        name: RadioMapSeer(root, simulation, name, split_scheme, num_tx=num_tx, warn_overlap=False) for name in splits
    }
    if split_scheme == "radiodiff":
        warn_about_radiodiff_overlap()
    converted = {}
    for name, folder in folders.items():
        converted[HF_SPLIT_NAMES[name]] = datasets.Dataset.from_generator(
            _rows,
            features=radio_map_features(),
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            gen_kwargs={"root": str(folder.root), "simulation": simulation, "items": folder.items},
            split=HF_SPLIT_NAMES[name],
            fingerprint=_fingerprint(folder.root, simulation, folder.items),
        )
    return converted[HF_SPLIT_NAMES[splits[0]]] if split is not None else datasets.DatasetDict(converted)


class HFRadioMaps(Dataset):
    """Items of this package from a ``datasets.Dataset`` of radio maps.

    Args:
        dataset (`datasets.Dataset`): rows with an image column of gain maps (8-bit grey, mode L, RadioMapSeer's
            encoding; any other mode, colour included, raises a ValueError naming the row) and, optionally,
            ``buildings`` and ``transmitter`` images and ``name`` and ``simulation`` strings.
        image_column (`str`, defaults to ``"image"``): the column of gain maps.
        resolution (`int`, *optional*): output side in pixels; None keeps the images' size.
        flip (`bool`, defaults to False): random horizontal flip of each item.

    Without a ``buildings`` column the mask is all 0 (unknown); without a ``transmitter`` column the transmitter is
    taken at the brightest gain pixel (where free-space gain peaks); without ``name`` the row index is used.
    """

    def __init__(
        self, dataset, image_column: str = "image", resolution: Optional[int] = None, flip: bool = False
    ):
        if image_column not in dataset.column_names:
            raise DataError(
                f"image_column {image_column!r} is not a column of the dataset; its columns are {dataset.column_names}"
            )
        self.dataset = dataset
        self.image_column = image_column
        self.build_item = RadioMapItemBuilder(resolution=resolution, flip=flip)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Dict[str, object]:
        row = self.dataset[int(index)]
        source = f"row {index}, column {self.image_column!r}"
        gain = grey_pixels(row[self.image_column], source)
        check_gain_mode(row[self.image_column].mode, source)  # the rule of every gain-map reader
        buildings = row.get("buildings")
        buildings = grey_pixels(buildings, f"row {index}, column 'buildings'") if buildings is not None else None
        antenna = row.get("transmitter")
        antenna = grey_pixels(antenna, f"row {index}, column 'transmitter'") if antenna is not None else gain
        name = str(row["name"]) if row.get("name") is not None else str(index)
        simulation = str(row["simulation"]) if row.get("simulation") is not None else "unknown"
        if buildings is None:
            buildings = np.zeros_like(gain)
        return self.build_item(gain, buildings, transmitter_pixel(antenna), name, simulation)


def _is_saved_dataset(path: Path) -> bool:
    return any((path / marker).is_file() for marker in ("dataset_dict.json", "state.json", "dataset_info.json"))


def load_radio_dataset(
    name_or_path: PathLike,
    split: Optional[str] = "train",
    resolution: Optional[int] = None,
    flip: bool = False,
    image_column: str = "image",
    simulation: str = "IRT4",
    split_scheme: str = "radiodiff",
    cache_dir: Optional[PathLike] = None,
) -> Dataset:
    """Load radio maps by path or Hub name as a torch ``Dataset`` of this package's items.

    ``name_or_path`` may be

    * a folder written by ``save_to_disk`` (``datasets.load_from_disk``);
    * a RadioMapSeer-layout folder (it has ``gain/``): read directly by :class:`RadioMapSeer` with ``simulation``
      and ``split_scheme``;
    * any other local folder or a Hub dataset name (``datasets.load_dataset``).

    Args:
        name_or_path (`str` or `os.PathLike`): see above.
        split (`str`, *optional*, defaults to ``"train"``): the split; ``"val"`` and ``"validation"`` both work.
            None takes the source whole: a dataset saved without splits, or every map of a RadioMapSeer-layout
            folder (as ``"all"``, which such folders also take); a dataset with splits then raises a ValueError.
        resolution (`int`, *optional*): output side in pixels.
        flip (`bool`, defaults to False): random horizontal flip.
        image_column (`str`, defaults to ``"image"``): the column of gain maps (🤗 datasets only).
        simulation (`str`, defaults to ``"IRT4"``): folder under ``gain/`` (RadioMapSeer folders only).
        split_scheme (`str`, defaults to ``"radiodiff"``): split rule, as :class:`RadioMapSeer` (RadioMapSeer
            folders only).
        cache_dir (`str` or `os.PathLike`, *optional*): 🤗 datasets cache (Hub datasets only).

    Returns:
        `torch.utils.data.Dataset`: :class:`RadioMapSeer` or :class:`HFRadioMaps`.
    """
    datasets = _require_datasets()
    path = Path(name_or_path)
    if path.is_dir() and (path / GAIN_DIR).is_dir():
        return RadioMapSeer(path, simulation, split or ALL_MAPS, split_scheme, resolution=resolution, flip=flip)
    if path.is_dir() and _is_saved_dataset(path):
        loaded = datasets.load_from_disk(str(path))
    else:
        local_path_or_hub_id(str(name_or_path), "dataset folder")  # a mistyped local path fails before the Hub
        hf_split = HF_SPLIT_NAMES[normalize_split(split)] if split is not None else None
        loaded = datasets.load_dataset(str(name_or_path), split=hf_split, cache_dir=cache_dir)

    if isinstance(loaded, datasets.DatasetDict):
        if split is None:
            raise InvalidArgumentError(f"{name_or_path} holds the splits {list(loaded)}; pass split= one of them")
        wanted = HF_SPLIT_NAMES[normalize_split(split)]
        candidates = [wanted, normalize_split(split)]  # "validation" or "val"
        found = next((name for name in candidates if name in loaded), None)
        if found is None:
            raise InvalidArgumentError(f"{name_or_path} has no split {split!r}; its splits are {list(loaded)}")
        loaded = loaded[found]
    elif split is not None and loaded.split is not None and str(loaded.split) not in (
        HF_SPLIT_NAMES[normalize_split(split)],
        normalize_split(split),
    ):
        raise InvalidArgumentError(f"{name_or_path} holds only the split {str(loaded.split)!r}, not {split!r}")
    return HFRadioMaps(loaded, image_column=image_column, resolution=resolution, flip=flip)
