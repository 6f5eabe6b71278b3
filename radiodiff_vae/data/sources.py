"""The three places radio maps come from, as command lines name them: a RadioMapSeer-layout folder (``--data_dir``),
a 🤗 dataset (``--dataset_name``), or the built-in synthetic generator (neither).

The training script (``examples/train_vae.py``) and the ``evaluate`` / ``encode`` commands turn their flags into a
:class:`DataSource` and open its splits with :meth:`DataSource.open`, so that the same flags give the same maps
everywhere.

Example::

    from radiodiff_vae.data.sources import DataSource

    source = DataSource(data_dir="munich_maps", simulations="sionna", resolution=256)
    maps = source.open(source.default_split())  # "all" for a folder that is not RadioMapSeer's 700 maps
    print(source.describe(source.default_split()), len(maps))
"""

import os
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from torch.utils.data import ConcatDataset, Dataset

from .splits import ALL_MAPS, normalize_split
from ..errors import InputNotFoundError, InvalidArgumentError

__all__ = ["DataSource"]


@dataclass(frozen=True)
class DataSource:
    """Where maps come from and how they are read; checked when made, before any map is read.

    Args:
        data_dir (`str`, *optional*): a folder in RadioMapSeer's layout (RadioMapSeer, ``make-synthetic``,
            ``make-raytraced``), read by :class:`~radiodiff_vae.data.RadioMapSeer`.
        dataset_name (`str`, *optional*): a 🤗 dataset (Hub id or ``save_to_disk`` folder), read by
            :func:`~radiodiff_vae.data.load_radio_dataset`. Neither: synthetic maps.
        simulations (`str` or `Sequence[str]`, defaults to ``"IRT4"``): the folder(s) under ``gain/``; several are
            read one after the other (``data_dir`` only).
        split_scheme (`str`, *optional*): RadioMapSeer's split rule, ``"radiodiff"`` or ``"disjoint"`` (None: the
            loader's, ``"radiodiff"``).
        num_tx (`int`, *optional*): transmitters ``0 .. num_tx-1`` of every map (``data_dir`` only; None: all).
        resolution (`int`, *optional*): map side in pixels (None: native; synthetic maps: 256).
        synthetic_maps (`int`, defaults to 8): synthetic cities, numbered from ``first_map_id``.
        synthetic_tx (`int`, defaults to 4): transmitters per synthetic city.
        seed (`int`, defaults to 0): seed of the synthetic generator.
        first_map_id (`int`, defaults to 1): number of the first synthetic city.
        num_workers (`int`, defaults to 0): processes generating synthetic maps.
        show_progress (`bool`, defaults to True): a progress bar while synthetic maps are generated.

    Raises:
        FileNotFoundError: ``data_dir`` is not a folder.
        ValueError: a value out of range, or one that does not apply to the source (``num_tx`` without
            ``data_dir``, several simulations of a 🤗 dataset).
    """

    data_dir: Optional[str] = None
    dataset_name: Optional[str] = None
    simulations: Union[str, Tuple[str, ...]] = ("IRT4",)
    split_scheme: Optional[str] = None
    num_tx: Optional[int] = None
    resolution: Optional[int] = None
    synthetic_maps: int = 8
    synthetic_tx: int = 4
    seed: int = 0
    first_map_id: int = 1
    num_workers: int = 0
    show_progress: bool = True

    def __post_init__(self) -> None:
        simulations = (self.simulations,) if isinstance(self.simulations, str) else tuple(self.simulations)
        object.__setattr__(self, "simulations", simulations)
        if not simulations:
            raise InvalidArgumentError("simulations must name at least one folder under gain/, got none")
        if self.data_dir is not None and self.dataset_name is not None:
            raise InvalidArgumentError(
                f"give data_dir or dataset_name, not both; got {self.data_dir} and {self.dataset_name}"
            )
        if self.resolution is not None and self.resolution < 1:
            raise InvalidArgumentError(f"resolution must be a positive number of pixels, got {self.resolution}")
        if self.data_dir is not None and not os.path.isdir(self.data_dir):
            raise InputNotFoundError(f"--data_dir {self.data_dir} is not a folder")
        if self.num_tx is not None and self.data_dir is None:
            given = f"--dataset_name {self.dataset_name}" if self.dataset_name else "synthetic maps"
            raise InvalidArgumentError(f"num_tx applies to RadioMapSeer (--data_dir) only, got it with {given}")
        if self.dataset_name is not None and len(simulations) > 1:
            raise InvalidArgumentError(f"a 🤗 dataset is read one simulation at a time, got {list(simulations)}")
        if self.data_dir is None and self.dataset_name is None:
            if min(self.synthetic_maps, self.synthetic_tx, self.first_map_id) < 1:
                raise InvalidArgumentError(
                    "synthetic maps need at least 1 city, 1 transmitter and a first city number >= 1, got "
                    f"{self.synthetic_maps} cities, {self.synthetic_tx} transmitters, first city {self.first_map_id}"
                )

    @property
    def kind(self) -> str:
        """``"folder"``, ``"dataset"`` or ``"synthetic"``."""
        if self.data_dir is not None:
            return "folder"
        return "dataset" if self.dataset_name is not None else "synthetic"

    def default_split(self, split: str = "test") -> str:
        """``split`` (``"test"`` unless told), except for a folder that is not RadioMapSeer as distributed (maps
        numbered 1 to 700, :func:`~radiodiff_vae.data.splits.is_radiomapseer_numbered`): ``"all"`` there, since
        RadioMapSeer's splits cut a folder by its maps' positions in the shuffled order of 700 and would leave a
        small folder's maps spread over three splits. Reads folder listings only."""
        if self.kind != "folder":
            return split
        from .layout import list_map_ids
        from .radiomapseer import check_radiomapseer_folder
        from .splits import is_radiomapseer_numbered

        _, buildings_dir, _ = check_radiomapseer_folder(self.data_dir, self.simulations[0])
        return split if is_radiomapseer_numbered(list_map_ids(buildings_dir)) else ALL_MAPS

    def open(self, split: Optional[str] = "train", flip: bool = False, skip_missing: bool = False) -> Dataset:
        """The maps of ``split``, a torch ``Dataset`` of the package's items (``radiodiff_vae.data``).

        Args:
            split (`str`, *optional*, defaults to ``"train"``): ``"train"``, ``"val"`` / ``"validation"``,
                ``"test"``, or ``"all"`` (every map of a ``data_dir`` folder). Synthetic maps ignore it: their cities
                are ``first_map_id`` onwards.
            flip (`bool`, defaults to False): random horizontal flips (training).
            skip_missing (`bool`, defaults to False): read the (map, transmitter) pairs whose files are present
                instead of requiring every transmitter of every map (``data_dir`` only, e.g. a second trace of some
                of the transmitters; :class:`~radiodiff_vae.data.RadioMapSeer`).
        """
        scheme = {"split_scheme": self.split_scheme} if self.split_scheme is not None else {}
        if self.kind == "folder":
            from .radiomapseer import RadioMapSeer

            parts = [
                RadioMapSeer(
                    self.data_dir, simulation, split, num_tx=self.num_tx, resolution=self.resolution, flip=flip,
                    skip_missing=skip_missing, **scheme,
                )  # fmt: skip
                for simulation in self.simulations
            ]
            return parts[0] if len(parts) == 1 else ConcatDataset(parts)
        if self.kind == "dataset":
            from .hf import load_radio_dataset

            if split is not None and normalize_split(split, allow_all=True) == ALL_MAPS:
                raise InvalidArgumentError(
                    f"split 'all' reads every map of a --data_dir folder; {self.dataset_name} has its own splits"
                )
            return load_radio_dataset(
                self.dataset_name, split=split, resolution=self.resolution, flip=flip, simulation=self.simulations[0],
                **scheme,
            )  # fmt: skip
        from .simulation.synthetic import SyntheticRadioMaps

        return SyntheticRadioMaps(
            self.synthetic_maps, self.synthetic_tx, seed=self.seed, resolution=self.resolution,
            first_map_id=self.first_map_id, flip=flip, show_progress=self.show_progress, num_workers=self.num_workers,
        )  # fmt: skip

    def describe(self, split: Optional[str] = None) -> str:
        """One line naming the maps of ``split``, for logs and report headers."""
        simulations = "+".join(self.simulations)
        if self.kind == "folder":
            if split is not None and normalize_split(split, allow_all=True) == ALL_MAPS:
                return f"{self.data_dir} ({simulations}, every map of the folder: --split all)"
            scheme = f", {self.split_scheme} split" if self.split_scheme else ""
            return f"RadioMapSeer {self.data_dir} ({simulations}, {split}{scheme})"
        if self.kind == "dataset":
            return f"dataset {self.dataset_name} ({split})"
        last = self.first_map_id + self.synthetic_maps - 1
        return f"synthetic (cities {self.first_map_id}-{last} x {self.synthetic_tx} tx, seed {self.seed})"
