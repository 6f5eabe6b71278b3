"""The maps of a training run and their batches: training / validation / test datasets from one
:class:`~radiodiff_vae.data.sources.DataSource`, and the collate function of the run's DataLoaders.

Shared by the training scripts (``examples/train_vae.py``; the construction stage's script collates the city maps
too)::

    from functools import partial

    from radiodiff_vae.data.batches import build_datasets, collate_maps

    data = build_datasets(source, num_validation_maps=16)
    loader = DataLoader(data.train, batch_size=8, shuffle=True, collate_fn=collate_maps)
    # pixel_values (B, 1, H, W); with the city as well:
    city_collate = partial(collate_maps, keys=("pixel_values", "buildings", "transmitter"))
"""

import logging
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..errors import DataError, MapFileError
from .sources import DataSource

logger = logging.getLogger(__name__)

__all__ = ["RunData", "build_datasets", "collate_maps", "spread_indices", "spread_subset"]


@dataclass
class RunData:
    """The run's maps: training, validation (spread over the validation split) and, for RadioMapSeer, maps outside
    training (RadioUNet's disjoint test split); with one-line descriptions for logs and the model card."""

    train: Dataset
    validation: Dataset
    source: str  # e.g. "RadioMapSeer /data (IRT4, split scheme radiodiff)"
    label: str  # a short dataset name for the card's model-index
    validation_kind: str  # how the validation maps relate to the training maps
    test: Optional[Dataset] = None  # maps no training split of either scheme holds, or None


def spread_indices(length: int, count: int) -> List[int]:
    """``min(count, length)`` indices evenly strided over ``range(length)``, first and last included."""
    if length < 1 or count < 1:
        return []
    if count >= length:
        return list(range(length))
    return [int(index) for index in np.linspace(0, length - 1, count).round().astype(np.int64)]


def spread_subset(dataset: Dataset, count: int) -> Dataset:
    """``dataset`` itself if it has at most ``count`` items, else a :func:`spread_indices` subset of it (datasets
    list their items map by map, all transmitters of one city and then the next: the first N items would be one or
    a few cities)."""
    return dataset if len(dataset) <= count else Subset(dataset, spread_indices(len(dataset), count))


def build_datasets(
    source: DataSource,
    num_validation_maps: int,
    validation_split: str = "validation",
    max_train_samples: Optional[int] = None,
    random_flip: bool = False,
) -> RunData:
    """Opens the training maps of ``source``, ``num_validation_maps`` validation maps spread over its validation
    split and, for RadioMapSeer, as many maps outside every training split (RadioUNet's disjoint test split).

    Args:
        source (`DataSource`): where the maps come from. Synthetic maps: the training cities are
            ``source.first_map_id ..``; the validation cities are the ``num_validation_maps`` numbered after them,
            one transmitter each (never trained on).
        num_validation_maps (`int`): validation (and test) maps scored.
        validation_split (`str`, defaults to ``"validation"``): the split of a 🤗 dataset used for validation
            (RadioMapSeer folders validate on their ``"val"`` split).
        max_train_samples (`int`, *optional*): keep the first N training maps (debugging).
        random_flip (`bool`, defaults to False): random horizontal flips of the training maps.

    Raises:
        DataError: no training or no validation map.
    """
    from .radiomapseer import RadioMapSeer

    train = source.open("train", flip=random_flip)
    test = None
    simulation = source.simulations[0]
    scheme = source.split_scheme or "radiodiff"
    if source.kind == "synthetic":
        validation = replace(
            source, synthetic_maps=num_validation_maps, synthetic_tx=1,
            first_map_id=source.first_map_id + source.synthetic_maps, num_workers=0,
        ).open()  # fmt: skip
        description = f"synthetic maps ({source.synthetic_maps} cities x {source.synthetic_tx} transmitters)"
        label, kind = "synthetic", "held-out validation maps (cities not in training)"
    elif source.kind == "folder":
        validation = source.open("val")
        description = f"RadioMapSeer {source.data_dir} ({simulation}, split scheme {scheme})"
        label, kind = f"RadioMapSeer-{simulation}", "maps of the 'val' split"
    else:
        validation = source.open(validation_split)
        description = f"dataset {source.dataset_name} (train / {validation_split})"
        label = source.dataset_name
        kind = f"maps of the {validation_split!r} split"
    if isinstance(validation, RadioMapSeer):
        overlap = scheme == "radiodiff"  # the original code's split: validation lies inside train
        kind = "validation maps that overlap the training maps" if overlap else "held-out validation maps"
        kind += f" (split scheme {scheme})"
        # Positions 601.. of the shuffled maps: in no training split of either scheme (RadioUNet's test split).
        try:
            test = RadioMapSeer(
                validation.root, validation.simulation, "test", "disjoint", resolution=source.resolution,
                num_tx=validation.num_tx,
            )  # fmt: skip
        except (ValueError, FileNotFoundError) as error:
            # A partial folder can hold no test map (ValueError), or test maps without their gain or transmitter
            # files (FileNotFoundError): validate without them.
            logger.warning(f"no maps outside training to score at the end: {error}")
    if max_train_samples is not None and max_train_samples < len(train):
        train = Subset(train, range(max_train_samples))
    validation = spread_subset(validation, num_validation_maps)
    test = spread_subset(test, num_validation_maps) if test is not None and len(test) else None
    if len(train) == 0 or len(validation) == 0:
        raise DataError(
            f"{description}: {len(train)} training and {len(validation)} validation maps; need at least one of each"
        )
    return RunData(train, validation, description, label, kind, test)


def collate_maps(items: List[Dict[str, Any]], keys: Sequence[str] = ("pixel_values",)) -> Dict[str, Any]:
    """Stacks the tensors ``keys`` of ``items`` (``pixel_values`` `(B, 1, H, W)` in [-1, 1] by default; add
    ``"buildings"`` and ``"transmitter"`` for the city) and lists their ``name``. The items are at the run's size
    already: every dataset of the package resizes its maps as it reads them or makes them at that size.

    The values are checked here, on the host, so that the training step's forward needs no device sync (the model's
    ``check_values=False``). A module-level function (with ``functools.partial`` for other ``keys``): DataLoader
    workers can pickle it.

    Raises:
        MapFileError: a map holds NaN or inf values (the message names the maps).
    """
    batch: Dict[str, Any] = {}
    names = [str(item["name"]) for item in items]
    for key in keys:
        values = torch.stack([item[key] for item in items]).float()  # (B, 1, H, W)
        finite = torch.isfinite(values).flatten(1).all(dim=1)  # (B,)
        if not bool(finite.all()):
            bad = [name for name, ok in zip(names, finite.tolist()) if not ok]
            what = "map(s)" if key == "pixel_values" else f"{key} of map(s)"
            raise MapFileError(f"{what} {', '.join(bad)}: expected finite values in [-1, 1], got NaN or inf")
        batch[key] = values
    batch["name"] = names
    return batch
