"""The pieces of the construction stage's training (``examples/train_radiodiff.py``): the frozen VAE's folder and the
data it was trained on, the two objectives (latent diffusion, and the direct pixel-space baseline), the city features
computed once per map, and validation (RMSE in dB, PSNR, and an image grid city | truth | constructed | error).

The objectives take the modules that ``accelerator.prepare`` returned, not a pipeline: under DDP the forward must go
through the wrappers or the gradients are not averaged over processes. ``RadioDiffPipeline.denoise`` and
``RadioUNetPipeline.predict`` compute the same thing on the unwrapped modules, for sampling.
"""

import inspect
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from torch.utils.data import Dataset
from torchvision.utils import make_grid

from ..data.batches import collate_maps
from ..data.conventions import RADIOMAPSEER_DB_RANGE, model_to_unit
from ..errors import ModelFileError
from ..hub_id import local_path_or_hub_id
from ..evaluation.scoring import score_maps
from ..models.city_encoder import transmitter_positions
from ..pipelines.direct import DIRECT_TIMESTEP
from ..pipelines.radiodiff import diffusion_target
from .validation import GRID_PANEL_SIZE, log_image_to_trackers, save_png

__all__ = [
    "CityFeatureMaps",
    "ConstructionValidator",
    "diffusion_loss",
    "direct_loss",
    "evaluate_construction_maps",
    "make_construction_grid",
    "read_vae_config",
    "read_vae_training_args",
    "vae_synthetic_seed",
]

# The absolute error in dB of path gain shown at full colour in the grids: fixed, so grids of different steps compare.
ERROR_DB_VMAX = 20.0
_CHECKPOINT_NAME = re.compile(r"^checkpoint-\d+$")


# ------------------------------------------------------------------------------------------------------------------
# the frozen first stage
def _local_vae_folder(name: str, what: str) -> Optional[Path]:
    """The local folder holding the VAE's ``config.json`` (``name`` itself, or its ``vae/`` sub-folder for a training
    checkpoint or a pipeline folder); None for a Hub id.

    Raises:
        InputNotFoundError: ``name`` does not exist and is no Hub id.
        ModelFileError: ``name`` is a local folder without a VAE.
    """
    path = local_path_or_hub_id(name, what)
    if path is None:
        return None
    for folder in (path, path / "vae"):
        if (folder / "config.json").is_file():
            return folder
    raise ModelFileError(
        f"{what} {os.fspath(name)!r} holds no RadioVAE: expected config.json there or in vae/ (a train_vae.py "
        "output folder, one of its checkpoint-N folders, or a RadioDiffPipeline folder)"
    )


def read_vae_config(name: str, what: str = "--pretrained_vae") -> Optional[Dict[str, Any]]:
    """The ``config.json`` of a local VAE (folder, ``checkpoint-N`` or pipeline folder), None for a Hub id: enough to
    check map sizes before any weight is read."""
    folder = _local_vae_folder(name, what)
    if folder is None:
        return None
    try:
        with open(folder / "config.json", encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{what}: cannot read {folder / 'config.json'}: {error}") from None
    if not isinstance(config, dict) or "num_downsamples" not in config or "latent_channels" not in config:
        raise ModelFileError(f"{what}: {folder / 'config.json'} is not a RadioVAE config (no num_downsamples)")
    return config


def read_vae_training_args(name: str) -> Optional[Dict[str, Any]]:
    """The ``training_args.json`` that ``examples/train_vae.py`` wrote beside a local VAE (in its output folder, the
    parent of a ``checkpoint-N``), or None (a Hub id, a converted model)."""
    folder = _local_vae_folder(name, "--pretrained_vae")
    if folder is None:
        return None
    candidates = [folder, folder.parent]
    if _CHECKPOINT_NAME.match(folder.name) or _CHECKPOINT_NAME.match(folder.parent.name):
        candidates.append(folder.parent.parent)  # checkpoint-N/vae -> the run's output folder
    for candidate in candidates:
        path = candidate / "training_args.json"
        if path.is_file():
            try:
                with open(path, encoding="utf-8") as handle:
                    content = json.load(handle)
            except (OSError, json.JSONDecodeError):
                return None
            return content if isinstance(content, dict) else None
    return None


def vae_synthetic_seed(training_args: Optional[Mapping[str, Any]]) -> Optional[int]:
    """The seed of the synthetic cities a VAE was trained on (``--synthetic_seed``, older ``--data_seed``, else its
    ``--seed``), or None when it did not train on synthetic maps or the arguments are unknown."""
    if not training_args or training_args.get("data_dir") or training_args.get("dataset_name"):
        return None
    for key in ("synthetic_seed", "data_seed", "seed"):
        if training_args.get(key) is not None:
            return int(training_args[key])
    return None


# ------------------------------------------------------------------------------------------------------------------
# the city features of every training map, once
class CityFeatureMaps(Dataset):
    """Items of ``maps`` with the city encoder's physics features (``"city_features"`` `(n, H, W)` float32), computed
    once for every map: the ray sampling of the ``walls`` feature costs more than a small UNet's training step on a
    CPU, and it depends on the map alone.

    Args:
        maps (`Dataset`): items with ``"buildings"`` and ``"transmitter"`` `(1, H, W)`, read in a fixed order (no random
            flips: a flipped map would not match its features).
        city_encoder (`CityEncoder`): its :meth:`features` (the same function the pipeline runs at inference).
        batch_size (`int`, defaults to 64): maps per call.
        device (`torch.device`, *optional*): where to compute them (kept on the host afterwards).
    """

    def __init__(self, maps: Dataset, city_encoder: Any, batch_size: int = 64, device: Any = None):
        self.maps = maps
        chunks = []
        with torch.no_grad():
            for start in range(0, len(maps), batch_size):
                items = [maps[index] for index in range(start, min(start + batch_size, len(maps)))]
                batch = collate_maps(items, keys=("buildings", "transmitter"))
                buildings, transmitter = (batch[key].to(device) for key in ("buildings", "transmitter"))
                chunks.append(city_encoder.features(buildings, transmitter).float().cpu())  # (b, n, H, W)
        self.features = torch.cat(chunks)  # (N, n, H, W)

    @staticmethod
    def size_bytes(num_maps: int, num_features: int, height: int, width: int) -> int:
        return num_maps * num_features * height * width * 4

    def __len__(self) -> int:
        return len(self.maps)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        item = dict(self.maps[index])
        item["city_features"] = self.features[index]
        return item


def _condition(city_encoder: torch.nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    features = batch.get("city_features")
    if features is None:
        return city_encoder(batch["buildings"], batch["transmitter"])
    return city_encoder(batch["buildings"], batch["transmitter"], features=features)


# ------------------------------------------------------------------------------------------------------------------
# the objectives
def diffusion_loss(
    unet: torch.nn.Module,
    city_encoder: torch.nn.Module,
    scheduler: Any,
    batch: Mapping[str, Any],
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """The denoising loss of one micro-batch: noise the clean scaled latents at uniform random timesteps and regress
    the scheduler's target (noise, velocity or clean latent, :func:`diffusion_target`).

    Args:
        unet, city_encoder: the (prepared) models; the UNet takes ``[noisy latent, city features]``.
        scheduler: the pipeline's scheduler (``add_noise``, ``prediction_type``, ``num_train_timesteps``).
        batch: ``"latents"`` `(B, C, h, w)` scaled, ``"buildings"`` and ``"transmitter"`` `(B, 1, H, W)`, and
            optionally ``"city_features"`` `(B, n, H, W)` (:class:`CityFeatureMaps`).
        generator: the noise and timesteps are drawn from it (a resumed run draws the same ones).

    Returns:
        The mean squared error, a 0-dim float32 tensor.
    """
    latents = batch["latents"]  # (B, C, h, w)
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    timesteps = torch.randint(
        0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator, device=latents.device
    )  # (B,)
    noisy = scheduler.add_noise(latents, noise, timesteps)  # (B, C, h, w)
    condition = _condition(city_encoder, batch)  # (B, C_city, h, w)
    prediction = unet(torch.cat([noisy, condition.to(noisy.dtype)], dim=1), timesteps).sample  # (B, C, h, w)
    target = diffusion_target(scheduler, latents, noise, timesteps)
    return F.mse_loss(prediction.float(), target.float())


def direct_loss(unet: torch.nn.Module, city_encoder: torch.nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    """The direct baseline's loss: mean squared error of the map predicted in pixel space `(B, 1, H, W)` against
    ``pixel_values`` (model scale [-1, 1]); ``batch`` as :func:`diffusion_loss`'s with ``pixel_values`` for latents."""
    features = _condition(city_encoder, batch)  # (B, C_city, H, W)
    prediction = unet(features, DIRECT_TIMESTEP).sample  # (B, 1, H, W)
    return F.mse_loss(prediction.float(), batch["pixel_values"].float())


# ------------------------------------------------------------------------------------------------------------------
# validation
def _city_panels(buildings: torch.Tensor, transmitter: torch.Tensor) -> torch.Tensor:
    """RGB city panels `(B, 3, H, W)`: white streets, grey buildings, a red cross on the transmitter."""
    batch, _, height, width = buildings.shape
    grey = 1.0 - 0.55 * buildings.float().clamp(0, 1)  # (B, 1, H, W)
    panels = grey.expand(-1, 3, -1, -1).clone()
    arm = max(1, round(max(height, width) / 32))
    red = torch.tensor([0.85, 0.05, 0.05])
    for index, (row, col) in enumerate(transmitter_positions(transmitter).tolist()):
        rows = slice(max(0, row - arm), row + arm + 1)
        cols = slice(max(0, col - arm), col + arm + 1)
        panels[index, :, rows, col] = red.view(3, 1)
        panels[index, :, row, cols] = red.view(3, 1)
    return panels


def make_construction_grid(
    buildings: torch.Tensor,
    transmitter: torch.Tensor,
    truth: torch.Tensor,
    constructed: torch.Tensor,
    error_db_vmax: float = ERROR_DB_VMAX,
    db_range: Tuple[float, float] = RADIOMAPSEER_DB_RANGE,
    min_panel_size: int = GRID_PANEL_SIZE,
) -> np.ndarray:
    """An RGB grid, one row per map, columns city | truth | constructed | absolute error in dB of path gain.

    Args:
        buildings, transmitter (`torch.Tensor` of shape `(B, 1, H, W)`): the city (mask {0, 1}, one-hot).
        truth, constructed (`torch.Tensor` of shape `(B, 1, H, W)`): maps on the [0, 1] scale (viridis).
        error_db_vmax (`float`, defaults to 20): the error shown at full colour (inferno), fixed across steps.
        db_range (`Tuple[float, float]`): the dB values of map values 0 and 1 (RadioMapSeer's).
        min_panel_size (`int`): panels are enlarged by a whole factor (nearest neighbour) to at least this size.

    Returns:
        `np.ndarray` of shape `(B * s * H + (B + 1) * 2, 4 * s * W + 5 * 2, 3)`, uint8.
    """
    viridis = colormaps["viridis"]
    truth = truth.detach().cpu().float().clamp(0, 1)[:, 0]  # (B, H, W)
    constructed = constructed.detach().cpu().float().clamp(0, 1)[:, 0]
    error = (constructed - truth).abs() * (db_range[1] - db_range[0]) / error_db_vmax  # 1 = error_db_vmax
    columns = [
        _city_panels(buildings.detach().cpu(), transmitter.detach().cpu()),
        torch.from_numpy(viridis(truth.numpy())[..., :3]).permute(0, 3, 1, 2).float(),
        torch.from_numpy(viridis(constructed.numpy())[..., :3]).permute(0, 3, 1, 2).float(),
        torch.from_numpy(colormaps["inferno"](error.clamp(0, 1).numpy())[..., :3]).permute(0, 3, 1, 2).float(),
    ]
    panels = torch.stack(columns, dim=1).flatten(0, 1)  # (4 B, 3, H, W): the four panels of map 0, then map 1, ...
    scale = max(1, -(-min_panel_size // max(panels.shape[-2:])))
    panels = panels.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    grid = make_grid(panels, nrow=len(columns), padding=2, pad_value=1.0)  # (3, H_grid, W_grid)
    return (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


@torch.no_grad()
def evaluate_construction_maps(
    pipeline: Any,
    dataset: Dataset,
    batch_size: int,
    num_inference_steps: Optional[int] = None,
    seed: int = 0,
    num_images: int = 0,
) -> Tuple[Dict[str, float], Optional[np.ndarray]]:
    """Constructs the map of every city of ``dataset`` with ``pipeline`` (a :class:`RadioDiffPipeline` at
    ``num_inference_steps``, its initial noise from a generator seeded with ``seed``; or a
    :class:`RadioUNetPipeline`) and scores it against the true map on the [0, 1] scale.

    Returns:
        The means of ``nmse``, ``rmse``, ``psnr``, ``ssim``, ``mae`` and ``rmse_db`` / ``mae_db`` (dB of path gain),
        and the grid of the first ``num_images`` maps (:func:`make_construction_grid`, None for 0).
    """
    takes_steps = "num_inference_steps" in inspect.signature(pipeline.__call__).parameters
    options: Dict[str, Any] = {}
    if takes_steps:
        options = {"num_inference_steps": num_inference_steps, "generator": torch.Generator().manual_seed(seed)}
    per_map: Dict[str, List[torch.Tensor]] = {}
    shown: List[Tuple[torch.Tensor, ...]] = []
    keys = ("buildings", "transmitter", "pixel_values")
    for start in range(0, len(dataset), batch_size):
        batch = collate_maps([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))], keys=keys)
        constructed = pipeline(batch["buildings"], batch["transmitter"], output_type="pt", **options).images
        constructed = constructed.float().cpu()  # (B, 1, H, W) in [0, 1]
        truth = model_to_unit(batch["pixel_values"]).clamp(0, 1)  # (B, 1, H, W)
        for name, values in score_maps(constructed, truth, db_range=RADIOMAPSEER_DB_RANGE).items():
            per_map.setdefault(name, []).append(values.double())
        if sum(len(part[0]) for part in shown) < num_images:
            room = num_images - sum(len(part[0]) for part in shown)
            parts = (batch["buildings"], batch["transmitter"], truth, constructed)
            shown.append(tuple(tensor[:room] for tensor in parts))
    metrics = {name: float(torch.cat(values).mean()) for name, values in per_map.items()}
    grid = None
    if shown:
        grid = make_construction_grid(*(torch.cat(parts) for parts in zip(*shown)))
    return metrics, grid


class ConstructionValidator:
    """Scores fixed validation maps during a run and at its end (main process), with the EMA weights when there
    are, logs the means and the grid to the trackers and saves the grid as ``output_dir/<prefix>/step-<N>.png``.

    Args:
        accelerator: the run's accelerator (trackers).
        pipeline: the pipeline around the run's unwrapped models (it sees their current weights).
        dataset: the validation maps (spread already).
        batch_size, num_images: maps per call, rows of the grid.
        output_dir, description: where grids go; how the maps relate to the training maps (for the log line).
        num_inference_steps (`int`, *optional*): sampling steps (latent pipeline; None: its default).
        seed (`int`): seed of the initial noise, the same at every validation.
        ema (`EMAModel`, *optional*) and parameters: the EMA weights are swapped into ``parameters`` while scoring.
        prefix (`str`): tracker namespace.
    """

    def __init__(
        self, accelerator, pipeline, dataset, batch_size, num_images, output_dir, description,
        num_inference_steps=None, seed=0, ema=None, parameters: Sequence[torch.nn.Parameter] = (),
        prefix="validation",
    ) -> None:  # fmt: skip
        self.accelerator, self.pipeline, self.dataset = accelerator, pipeline, dataset
        self.batch_size, self.num_images, self.output_dir = batch_size, num_images, output_dir
        self.description, self.num_inference_steps, self.seed = description, num_inference_steps, seed
        self.ema, self.parameters, self.prefix = ema, list(parameters), prefix
        pipeline.set_progress_bar_config(disable=True)  # a bar per validation batch would break the run's own bar

    def __call__(self, step: int, logger=None) -> Tuple[Dict[str, float], Optional[np.ndarray]]:
        modules = [self.pipeline.unet, self.pipeline.city_encoder]
        modes = [module.training for module in modules]
        if self.ema is not None:
            self.ema.store(self.parameters)
            self.ema.copy_to(self.parameters)
        try:
            for module in modules:
                module.eval()
            metrics, grid = evaluate_construction_maps(
                self.pipeline, self.dataset, self.batch_size, self.num_inference_steps, self.seed, self.num_images
            )
        finally:
            for module, mode in zip(modules, modes):
                module.train(mode)
            if self.ema is not None:
                self.ema.restore(self.parameters)
        self.accelerator.log({f"{self.prefix}/{name}": value for name, value in metrics.items()}, step=step)
        if grid is not None:
            save_png(grid, os.path.join(self.output_dir, self.prefix, f"step-{step}.png"))
            log_image_to_trackers(self.accelerator, f"{self.prefix}/city_truth_constructed_error", grid, step)
        if logger is not None:
            shown = ("rmse_db", "psnr", "ssim", "nmse")
            scores = ", ".join(f"{key} {metrics[key]:.4f}" for key in shown if math.isfinite(metrics.get(key, 0.0)))
            logger.info(f"step {step}, {len(self.dataset)} {self.description}: {scores}")
        return metrics, grid
