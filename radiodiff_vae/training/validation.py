"""Validation of a training run: reconstruction metrics and image grids of fixed maps, and the latent scaling
factor (RadioDiff's ``scale_by_std``) measured at the end.

Maps are read by index (no DataLoader), so validation draws nothing from the global random state, and they are
spread over the dataset: datasets list their items map by map (all transmitters of one city, then the next), so the
first N items would be one or a few cities.
"""

import math
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..atomic import atomic_path
from ..baseline import baseline_for_model
from ..data.batches import spread_indices, spread_subset  # noqa: F401 (spread_subset: re-exported)
from ..evaluation import score_batch
from .seeding import step_generator
from .visualization import make_reconstruction_grid

# Validation grids enlarge small maps (nearest neighbour) to at least this many pixels per panel.
GRID_PANEL_SIZE = 192
# The noise stream of the scaling-factor measurement: a step index no training step reaches.
SCALING_FACTOR_STREAM = 2**31 - 1
# Keys of evaluate_reconstructions' metrics that describe the resize baseline rather than the model.
BASELINE_KEYS = ("baseline_psnr", "baseline_ssim", "psnr_gap_db", "ssim_gap")


def _batches(dataset: Dataset, indices: Sequence[int], collate: Callable, batch_size: int):
    for start in range(0, len(indices), batch_size):
        yield collate([dataset[index] for index in indices[start : start + batch_size]])


@torch.no_grad()
def evaluate_reconstructions(
    vae: torch.nn.Module,
    dataset: Dataset,
    collate: Callable,
    batch_size: int,
    device: torch.device,
    num_images: int = 0,
) -> Tuple[Dict[str, float], Optional[np.ndarray]]:
    """Mean PSNR / SSIM / NMSE / RMSE / MAE of the posterior-mean reconstructions of every map of ``dataset``.

    Args:
        vae: the (unwrapped) autoencoder; put in eval mode for the call and restored.
        dataset: items with ``pixel_values`` `(1, H, W)` in [-1, 1]; ``collate`` stacks them into a batch dict.
        num_images: rows of the image grid (its first maps); 0 for none.

    Returns:
        The metrics (on maps mapped to [0, 1]) and the grid, an RGB uint8 array (or None). Beside the model's own
        metrics: ``baseline_psnr`` / ``baseline_ssim`` of the resize baseline with as many values as the latent
        (``radiodiff_vae.baseline``) on the same maps, and the gaps ``psnr_gap_db`` / ``ssim_gap`` (model minus
        baseline), so a run shows whether its latent beats a thumbnail.
    """
    was_training = vae.training
    vae.eval()
    per_image: Dict[str, List[torch.Tensor]] = {}
    baseline_scores: Dict[str, List[torch.Tensor]] = {"psnr": [], "ssim": []}
    grid_inputs: List[torch.Tensor] = []
    grid_outputs: List[torch.Tensor] = []
    try:
        for batch in _batches(dataset, range(len(dataset)), collate, batch_size):
            maps = batch["pixel_values"].to(device)  # (B, 1, H, W) in [-1, 1]
            scores = score_batch(vae, maps, baseline_for_model(vae, *maps.shape[-2:]))
            for name, values in scores.model.items():
                per_image.setdefault(name, []).append(values.float().cpu())
            for name in baseline_scores:
                baseline_scores[name].append(scores.baseline[name].float().cpu())
            taken = sum(len(chunk) for chunk in grid_inputs)
            if taken < num_images:
                grid_inputs.append(scores.target[: num_images - taken].cpu())  # (b, 1, H, W) in [0, 1]
                grid_outputs.append(scores.reconstruction[: num_images - taken].cpu())
    finally:
        vae.train(was_training)
    metrics = {name: torch.cat(values).mean().item() for name, values in per_image.items()}
    for name, values in baseline_scores.items():
        metrics[f"baseline_{name}"] = torch.cat(values).mean().item()
    metrics["psnr_gap_db"] = metrics["psnr"] - metrics["baseline_psnr"]
    metrics["ssim_gap"] = metrics["ssim"] - metrics["baseline_ssim"]
    grid = None
    if grid_inputs:
        grid = make_reconstruction_grid(torch.cat(grid_inputs), torch.cat(grid_outputs), min_panel_size=GRID_PANEL_SIZE)
    return metrics, grid


@torch.no_grad()
def measure_scaling_factor(
    vae: torch.nn.Module,
    dataset: Dataset,
    collate: Callable,
    num_maps: int,
    batch_size: int,
    device: torch.device,
    seed: int,
) -> float:
    """``1 / std`` of posterior samples of ``num_maps`` training maps spread over ``dataset`` (``scale_by_std``).

    Raises:
        ValueError: the latents' standard deviation is not a positive finite number.
    """
    was_training = vae.training
    vae.eval()
    generator = step_generator(device, seed, SCALING_FACTOR_STREAM)
    latents = []
    try:
        for batch in _batches(dataset, spread_indices(len(dataset), num_maps), collate, batch_size):
            posterior = vae.encode(batch["pixel_values"].to(device)).latent_dist
            latents.append(posterior.sample(generator=generator).float().flatten().cpu())
    finally:
        vae.train(was_training)
    std = torch.cat(latents).std().item()
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"cannot set scaling_factor: the latents' standard deviation is {std}")
    return 1.0 / std


def save_png(image: np.ndarray, path: str) -> None:
    """A `(H, W)` or `(H, W, 3)` uint8 image as a PNG, written atomically."""
    with atomic_path(path) as temporary:
        Image.fromarray(image).save(temporary, format="PNG")


def log_image_to_trackers(accelerator, name: str, image: np.ndarray, step: int) -> None:
    """Sends an RGB ``(H, W, 3)`` uint8 image to every tracker that logs images, through its own ``log_images``
    (TensorBoard, W&B, Aim, ClearML, ...); trackers without one are skipped."""
    for tracker in accelerator.trackers:
        if not hasattr(tracker, "log_images"):
            continue
        if tracker.name == "tensorboard":
            # SummaryWriter.add_images takes a batch array and its layout; the others take a list of images.
            tracker.log_images({name: image[None]}, step, dataformats="NHWC")
        else:
            tracker.log_images({name: [image]}, step)


class Validator:
    """Scores fixed maps during a run and at its end (main process only), with the EMA weights when there are.

    Args:
        accelerator: the run's accelerator (trackers, device).
        vae: the unwrapped autoencoder.
        dataset: the maps to score (already spread, :func:`spread_subset`).
        collate: stacks items into ``{"pixel_values": (B, 1, H, W)}``.
        batch_size: maps per forward.
        num_images: rows of the image grid.
        output_dir: grids go to ``output_dir/<prefix>/step-<N>.png``.
        description: how the maps relate to the training maps, for the log line (e.g. "validation maps that
            overlap the training maps").
        ema: a diffusers ``EMAModel`` or None.
        prefix: tracker namespace (``validation``, ``test``).
    """

    def __init__(
        self, accelerator, vae, dataset, collate, batch_size, num_images, output_dir, description, ema=None,
        prefix="validation",
    ) -> None:  # fmt: skip
        self.accelerator, self.vae, self.dataset, self.collate = accelerator, vae, dataset, collate
        self.batch_size, self.num_images, self.output_dir = batch_size, num_images, output_dir
        self.description, self.ema, self.prefix = description, ema, prefix

    def __call__(self, step: int, logger=None) -> Tuple[Dict[str, float], Optional[np.ndarray]]:
        if self.ema is not None:
            self.ema.store(self.vae.parameters())
            self.ema.copy_to(self.vae.parameters())
        try:
            metrics, grid = evaluate_reconstructions(
                self.vae, self.dataset, self.collate, self.batch_size, self.accelerator.device, self.num_images
            )
        finally:
            if self.ema is not None:
                self.ema.restore(self.vae.parameters())
        self.accelerator.log({f"{self.prefix}/{name}": value for name, value in metrics.items()}, step=step)
        if grid is not None:
            save_png(grid, os.path.join(self.output_dir, self.prefix, f"step-{step}.png"))
            log_image_to_trackers(self.accelerator, f"{self.prefix}/input_reconstruction_error", grid, step)
        if logger is not None:
            scores = ", ".join(f"{key} {value:.4f}" for key, value in sorted(metrics.items()))
            logger.info(f"step {step}, {len(self.dataset)} {self.description}: {scores}")
        return metrics, grid
