"""What an evaluation reads: the maps to score, checked against the model before any work.

The model itself loads with diffusers' ``from_pretrained`` (``RadioVAE.from_pretrained(folder or Hub id)``); this
module picks the maps (a seeded subset, a pairing with an independent trace) and checks that they fit the model.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset, Subset

from ..baseline import downsample_factor_of
from ..errors import DataError, InvalidArgumentError
from ..models.checks import check_size_divisible

__all__ = ["ReferencePairs", "batch_strings", "check_maps_fit_model", "item_names", "subsample"]


def check_maps_fit_model(model: torch.nn.Module, channels: int, height: int, width: int, source: str) -> None:
    """Raise before any work when maps of shape ``(channels, height, width)`` from ``source`` cannot enter ``model``
    (its ``config.in_channels`` and its downsampling factor).

    Raises:
        InvalidArgumentError: another channel count, or a size the model's factor does not divide.
    """
    expected = int(model.config.in_channels)
    if channels != expected:
        raise InvalidArgumentError(
            f"the model takes {expected}-channel maps but {source} has {channels}-channel maps "
            f"(shape {(channels, height, width)})"
        )
    check_size_divisible(height, width, downsample_factor_of(model), f"the map size of {source}")


def subsample(dataset: Dataset, num_samples: Optional[int], seed: int) -> Tuple[Dataset, List[int]]:
    """The maps to score: all of ``dataset``, or a seeded random subset of ``num_samples`` of them.

    Returns:
        The dataset to read and the index in ``dataset`` of each of its items, ascending (so progress and the
        per-map file follow the dataset's order).

    Raises:
        DataError: the dataset is empty.
        InvalidArgumentError: ``num_samples`` below 1.
    """
    total = len(dataset)
    if total == 0:
        raise DataError("the dataset to evaluate is empty")
    if num_samples is None or num_samples >= total:
        return dataset, list(range(total))
    if num_samples < 1:
        raise InvalidArgumentError(f"num_samples must be at least 1, got {num_samples}")
    chosen = sorted(torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:num_samples].tolist())
    return Subset(dataset, chosen), chosen


def batch_strings(values: Any, count: int, default: str = "") -> List[str]:
    """A collated batch's ``"name"`` or ``"simulation"`` entry as ``count`` strings (``default`` where absent)."""
    if values is None:
        return [default] * count
    if isinstance(values, str):
        return [values] * count
    return [str(value) for value in values]


def item_names(dataset: Dataset) -> List[str]:
    """The ``"name"`` of every item of ``dataset``, from its ``names`` when it has them (``RadioMapSeer``: no image
    read), else item by item."""
    names: Optional[Sequence[Any]] = getattr(dataset, "names", None)
    if names is not None:
        return [str(name) for name in names]
    return [str(dataset[index].get("name")) for index in range(len(dataset))]


class ReferencePairs(Dataset):
    """The items of ``dataset`` that ``reference`` also holds, with ``"reference"`` added: the same map from
    ``reference`` (an independent trace).

    ``evaluate_vae`` then scores the reconstruction of each item against its reference and reports the input's own
    score against it (``metrics["noise_floor"]``): a ray tracer's map carries Monte Carlo noise, and two traces of
    one transmitter differ by that floor. Items are matched by ``"name"``; a reference may hold a subset of the maps
    (e.g. a second trace of some of the transmitters), and then only the maps both hold are items here.

    Args:
        dataset: yields ``"pixel_values"`` `(C, H, W)` (trace A) and ``"name"``.
        reference: yields the same for trace B (e.g. ``gain/<simulation>_repeat1``); names must be unique.

    Attributes:
        num_data_maps (`int`): how many maps ``dataset`` holds, paired or not.

    Raises:
        DataError: the reference names a map twice, or holds none of the data's maps.
    """

    def __init__(self, dataset: Dataset, reference: Dataset):
        names, reference_names = item_names(dataset), item_names(reference)
        position = {name: index for index, name in enumerate(reference_names)}
        if len(position) != len(reference_names):
            twice = sorted({name for name in reference_names if reference_names.count(name) > 1})
            raise DataError(f"the reference must name each map once, got {twice[:3]} more than once")
        self.pairs = [(index, position[name]) for index, name in enumerate(names) if name in position]
        if not self.pairs:
            raise DataError(
                f"the reference holds none of the {len(names)} maps of the data (e.g. {names[:1]}; reference maps "
                f"e.g. {reference_names[:1]}); they must be the same maps, named alike"
            )
        self.dataset, self.reference, self.num_data_maps = dataset, reference, len(names)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        data_index, reference_index = self.pairs[index]
        item, reference = dict(self.dataset[data_index]), self.reference[reference_index]
        if item.get("name") != reference.get("name"):
            raise DataError(f"item {index} is map {item.get('name')} but its reference is {reference.get('name')}")
        item["reference"] = reference["pixel_values"]
        return item
