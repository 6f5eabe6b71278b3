"""Radio maps with their VAE latents, encoded once: the training data of the construction stage.

:class:`LatentRadioMaps` wraps any dataset of this package's items, encodes every map once with a frozen
:class:`~radiodiff_vae.RadioVAE` (the posterior mean, batched, with a progress bar) and yields the items with their
latent, scaled as a diffusion model sees it: ``(z - shift_factor) * scaling_factor`` (:func:`scale_latents`; the
pipeline undoes it with :func:`unscale_latents` before decoding). The unscaled means are kept, so that a scaling
factor measured on them (:meth:`LatentRadioMaps.measure_scaling_factor`) applies without encoding again.

With ``cache_file`` the means are written to a safetensors file (atomically) together with a fingerprint of the VAE
(config and weights, not the scaling) and of the maps; a later run with the same VAE and maps reads it instead of
encoding, and a file with another fingerprint is encoded again (``on_stale="recompute"``) or refused
(``on_stale="error"``).
"""

import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..atomic import atomic_path
from ..errors import DataError, InvalidArgumentError, StaleLatentCacheError

logger = logging.getLogger(__name__)

CACHE_FORMAT = "radiodiff-vae-latents-v1"
STALE_POLICIES = ("recompute", "error")
# Config keys that change how latents are scaled for a diffusion model, not what the encoder computes.
_SCALING_KEYS = ("scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast")


def scale_latents(z: torch.Tensor, config: Mapping[str, Any]) -> torch.Tensor:
    """VAE latents `(B, C, h, w)` -> what the denoiser sees: ``(z - shift_factor) * scaling_factor``."""
    shift = config.get("shift_factor")
    if shift is not None:
        z = z - shift
    return z * config["scaling_factor"]


def unscale_latents(latents: torch.Tensor, config: Mapping[str, Any]) -> torch.Tensor:
    """The inverse of :func:`scale_latents`: denoiser latents -> VAE latents for ``vae.decode``."""
    z = latents / config["scaling_factor"]
    shift = config.get("shift_factor")
    return z + shift if shift is not None else z


@torch.no_grad()
def encode_latents(
    vae: torch.nn.Module,
    pixel_values: torch.Tensor,
    sample_posterior: bool = False,
    seeds: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """Unscaled latents of maps: (B, C, H, W) in [-1, 1] -> (B, latent_channels, H / f, W / f).

    ``sample_posterior=False`` takes the posterior mean. With ``sample_posterior=True`` map ``i`` draws its noise from
    its own generator seeded by ``seeds[i]`` (``DiagonalGaussianDistribution.sample`` with a list of generators), so
    a map's latent does not depend on which batch it landed in.
    """
    posterior = vae.encode(pixel_values.to(vae.device, vae.dtype)).latent_dist
    if not sample_posterior:
        return posterior.mode()
    if seeds is None or len(seeds) != pixel_values.shape[0]:
        raise InvalidArgumentError(
            f"sample_posterior=True needs one seed per map ({pixel_values.shape[0]}), got {seeds}"
        )
    return posterior.sample(generator=[torch.Generator().manual_seed(int(seed)) for seed in seeds])


# ------------------------------------------------------------------------------------------------------------------
# fingerprints
def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def vae_fingerprint(vae: torch.nn.Module) -> str:
    """sha256 of what the encoder computes: the config (without the latent scaling), the dtype and every weight."""
    digest = hashlib.sha256(CACHE_FORMAT.encode())
    config = {key: value for key, value in dict(vae.config).items() if not key.startswith("_")}
    config = {key: value for key, value in config.items() if key not in _SCALING_KEYS}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(str(vae.dtype).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(f"|{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def _update_with_dataset(digest: "hashlib._Hash", dataset: Dataset) -> None:
    from .hf import HFRadioMaps, _fingerprint
    from .radiomapseer import RadioMapSeer
    from .simulation.synthetic import SyntheticRadioMaps

    digest.update(f"|{type(dataset).__name__}|{len(dataset)}|".encode())
    if isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            _update_with_dataset(digest, part)
    elif isinstance(dataset, Subset):
        digest.update(json.dumps([int(index) for index in dataset.indices]).encode())
        _update_with_dataset(digest, dataset.dataset)
    elif isinstance(dataset, RadioMapSeer):
        # Every file's size and modification time (one stat each), as the 🤗 conversion's cache key.
        digest.update(f"{dataset.split}|{dataset.split_scheme}|{dataset.build_item.resolution}|".encode())
        digest.update(_fingerprint(dataset.root, dataset.simulation, dataset.items).encode())
    elif isinstance(dataset, SyntheticRadioMaps):
        digest.update(f"{dataset.map_ids}|{dataset.quantize}|{dataset.build_item.resolution}|".encode())
        for tensor in (dataset._gain, dataset._buildings, dataset._tx_pixels):
            digest.update(_tensor_bytes(tensor))
    elif isinstance(dataset, HFRadioMaps) and getattr(dataset.dataset, "_fingerprint", None):
        digest.update(f"{dataset.dataset._fingerprint}|{dataset.image_column}|{dataset.build_item.resolution}".encode())
    else:  # any other dataset: its content, read once
        for index in range(len(dataset)):
            item = dataset[index]
            digest.update(f"|{item.get('name', index)}|".encode())
            for key in ("pixel_values", "buildings", "transmitter"):
                if isinstance(item.get(key), torch.Tensor):
                    digest.update(_tensor_bytes(item[key]))


def dataset_fingerprint(dataset: Dataset) -> str:
    """sha256 of a dataset's maps: file sizes and times for RadioMapSeer folders, the generated arrays for synthetic
    maps, 🤗 datasets' own fingerprint, else every item's content."""
    digest = hashlib.sha256(b"radio-maps")
    _update_with_dataset(digest, dataset)
    return digest.hexdigest()


def _flips_at_random(dataset: Dataset) -> bool:
    if isinstance(dataset, ConcatDataset):
        return any(_flips_at_random(part) for part in dataset.datasets)
    if isinstance(dataset, Subset):
        return _flips_at_random(dataset.dataset)
    return bool(getattr(getattr(dataset, "build_item", None), "flip", False))


def _flip(tensor: torch.Tensor) -> torch.Tensor:
    return torch.flip(tensor, dims=(-1,))


# ------------------------------------------------------------------------------------------------------------------
class LatentRadioMaps(Dataset):
    """Items of ``maps`` with the VAE latent of each map, encoded once.

    Args:
        maps (`torch.utils.data.Dataset`): items of this package (``"pixel_values"`` `(1, H, W)` in [-1, 1],
            ``"buildings"``, ``"transmitter"``, ``"name"``), without random flips (pass ``flip`` here instead).
        vae (`RadioVAE`): the frozen first stage; used while constructing only. Its ``scaling_factor`` and
            ``shift_factor`` scale the latents that items carry (see :meth:`set_scaling`).
        batch_size (`int`, defaults to 16): maps encoded together.
        cache_file (`str` or `os.PathLike`, *optional*): a ``.safetensors`` file to read the latents from, or to
            write them to (atomically) after encoding.
        on_stale (`str`, defaults to ``"recompute"``): what to do with a cache file of another VAE or other maps (or
            a file that is no cache): ``"recompute"`` encodes again and replaces it (with a warning), ``"error"``
            raises :class:`~radiodiff_vae.errors.StaleLatentCacheError`.
        flip (`bool`, defaults to False): random horizontal flips of whole items (map, city and latent); the latents
            of the flipped maps are encoded too, since the latent of a flipped map is not the flipped latent.
        device (`str` or `torch.device`, *optional*): where to encode (default: the VAE's device).
        num_workers (`int`, defaults to 0): DataLoader workers reading the maps while encoding.
        show_progress (`bool`, defaults to True): a progress bar while encoding.

    Items: ``{"latents": (C, h, w) float32 scaled, "buildings": (1, H, W), "transmitter": (1, H, W),
    "pixel_values": (1, H, W), "name": str, "simulation": str}``.

    Raises:
        InvalidArgumentError: a bad argument, or ``maps`` that flip at random.
        StaleLatentCacheError: ``on_stale="error"`` and a cache file that does not match.
    """

    def __init__(
        self,
        maps: Dataset,
        vae: torch.nn.Module,
        batch_size: int = 16,
        cache_file: Optional[Union[str, os.PathLike]] = None,
        on_stale: str = "recompute",
        flip: bool = False,
        device: Optional[Union[str, torch.device]] = None,
        num_workers: int = 0,
        show_progress: bool = True,
    ):
        if on_stale not in STALE_POLICIES:
            raise InvalidArgumentError(f"on_stale must be one of {STALE_POLICIES}, got {on_stale!r}")
        if int(batch_size) < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
        if len(maps) == 0:
            raise DataError("LatentRadioMaps got a dataset with no maps")
        if _flips_at_random(maps):
            raise InvalidArgumentError(
                "the maps flip at random, so a latent encoded once would not match the map read later: open them "
                "with flip=False and pass flip=True to LatentRadioMaps"
            )
        if cache_file is not None and Path(cache_file).is_dir():
            raise InvalidArgumentError(f"cache_file {cache_file} is a folder; expected a .safetensors file path")
        self.maps = maps
        self.flip = bool(flip)
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = vae.config.get("shift_factor")
        self.fingerprint = self._fingerprint(vae)

        loaded = self._read_cache(on_stale) if self.cache_file is not None else None
        if loaded is None:
            loaded = self._encode(vae, int(batch_size), device, int(num_workers), show_progress)
            if self.cache_file is not None:
                self._write_cache(*loaded)
        self.latents, self.flipped_latents, self.names = loaded  # (N, C, h, w), (N, C, h, w) or None, [str] * N

    # --------------------------------------------------------------------------------------------------------------
    def _fingerprint(self, vae: torch.nn.Module) -> str:
        digest = hashlib.sha256(f"{CACHE_FORMAT}|flip={self.flip}|".encode())
        digest.update(vae_fingerprint(vae).encode())
        digest.update(dataset_fingerprint(self.maps).encode())
        return digest.hexdigest()

    @torch.no_grad()
    def _encode(
        self, vae: torch.nn.Module, batch_size: int, device: Any, num_workers: int, show_progress: bool
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], List[str]]:
        was_training = vae.training
        vae.eval()
        device = torch.device(device) if device is not None else vae.device
        latents, flipped, names = [], [], []
        loader = DataLoader(self.maps, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        try:
            for batch in tqdm(loader, desc="encoding maps", unit="batch", disable=not show_progress):
                pixel_values = batch["pixel_values"].to(device)  # (B, 1, H, W)
                latents.append(encode_latents(vae, pixel_values).float().cpu())  # (B, C, h, w)
                if self.flip:
                    flipped.append(encode_latents(vae, _flip(pixel_values)).float().cpu())
                names.extend(str(name) for name in batch["name"])
        finally:
            vae.train(was_training)
        return torch.cat(latents), torch.cat(flipped) if self.flip else None, names

    def _read_cache(self, on_stale: str) -> Optional[Tuple[torch.Tensor, Optional[torch.Tensor], List[str]]]:
        """The cached latents, or None when there is no file or it is stale and ``on_stale`` allows encoding."""
        if not self.cache_file.exists():
            return None
        try:
            with safe_open(str(self.cache_file), framework="pt") as handle:
                metadata = handle.metadata() or {}
                found = metadata.get("fingerprint")
                if metadata.get("format") == CACHE_FORMAT and found == self.fingerprint:
                    latents = handle.get_tensor("latents")
                    flipped = handle.get_tensor("flipped_latents") if self.flip else None
                    names = json.loads(metadata["names"])
                    if latents.shape[0] == len(self.maps) == len(names):
                        logger.info("read the latents of %d maps from %s", len(names), self.cache_file)
                        return latents, flipped, names
                    problem = f"holds {latents.shape[0]} latents for {len(self.maps)} maps"
                else:
                    problem = (
                        f"was written for another VAE or other maps (fingerprint {str(found)[:12]}, expected "
                        f"{self.fingerprint[:12]})"
                    )
        except Exception as error:  # safetensors raises its own error type for a file that is no safetensors file
            first_line = str(error).splitlines()[0] if str(error) else ""
            problem = f"is not a latent cache ({type(error).__name__}: {first_line})"
        if on_stale == "error":
            raise StaleLatentCacheError(
                f"latent cache {self.cache_file} {problem}; delete it or pass on_stale='recompute' to encode again"
            )
        logger.warning("latent cache %s %s: encoding the maps again and replacing it", self.cache_file, problem)
        return None

    def _write_cache(self, latents: torch.Tensor, flipped: Optional[torch.Tensor], names: List[str]) -> None:
        tensors = {"latents": latents.contiguous()}
        if flipped is not None:
            tensors["flipped_latents"] = flipped.contiguous()
        metadata = {"format": CACHE_FORMAT, "fingerprint": self.fingerprint, "names": json.dumps(names)}
        with atomic_path(self.cache_file) as temporary:
            save_file(tensors, str(temporary), metadata=metadata)

    # --------------------------------------------------------------------------------------------------------------
    def set_scaling(self, scaling_factor: float, shift_factor: Optional[float] = None) -> None:
        """Scale the latents of later items with these values (e.g. after ``vae.register_to_config``)."""
        if not float(scaling_factor) > 0:
            raise InvalidArgumentError(f"scaling_factor must be > 0, got {scaling_factor}")
        self.scaling_factor, self.shift_factor = float(scaling_factor), shift_factor

    def measure_scaling_factor(self) -> float:
        """``1 / std`` of the unscaled latents (minus ``shift_factor``) over every map and element: the value that
        gives the denoiser unit-variance latents, as Stable Diffusion's 0.18215 does."""
        z = self.latents.double()
        if self.shift_factor is not None:
            z = z - self.shift_factor
        return float(1.0 / z.std())

    @property
    def config(self) -> Dict[str, Any]:
        return {"scaling_factor": self.scaling_factor, "shift_factor": self.shift_factor}

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        item = self.maps[index]
        if str(item["name"]) != self.names[index]:
            raise DataError(
                f"item {index} is map {item['name']} but its latent was encoded from map {self.names[index]}: the "
                "maps changed after encoding"
            )
        latents = self.latents[index]
        keys = ("buildings", "transmitter", "pixel_values")
        out = {key: item[key] for key in keys}
        if self.flip and random.random() < 0.5:
            latents = self.flipped_latents[index]
            out = {key: _flip(value) for key, value in out.items()}
        out["latents"] = scale_latents(latents, self.config)  # (C, h, w)
        out["name"] = item["name"]
        out["simulation"] = item.get("simulation", "")
        return out
