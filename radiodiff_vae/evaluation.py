"""The evaluation job: a trained VAE and a dataset of radio maps -> metrics, a markdown table and a figure.

``radiodiff-vae evaluate`` calls :func:`evaluate_vae` and then writes the result with :func:`save_evaluation`; it
and the training script's validation (``training.validation``) score every batch with :func:`score_batch`. Maps are
scored on the ``[0, 1]`` scale of the data (``data.conventions.model_to_unit`` of the model's ``[-1, 1]``), the
reconstruction clamped to that range, as radio-map papers do.

Example::

    from radiodiff_vae import RadioVAE
    from radiodiff_vae.data import SyntheticRadioMaps
    from radiodiff_vae.evaluation import evaluate_vae, save_evaluation

    result = evaluate_vae(RadioVAE.from_pretrained("my-vae"), SyntheticRadioMaps(8, 4), batch_size=8)
    print(result.table)
    save_evaluation(result, "eval-out")  # metrics.json, metrics.md, per_image.csv, examples.png
"""

import contextlib
import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from .atomic import atomic_open
from .baseline import ResizeBaseline, baseline_for_model, downsample_factor_of, resize_reconstruct
from .data.conventions import RADIOMAPSEER_DB_RANGE, model_to_unit, unit_to_db
from .hub_id import local_path_or_hub_id
from .metrics import compute_metrics, summarize_metrics
from .models.checks import check_size_divisible

__all__ = [
    "BatchScores",
    "EvaluationResult",
    "ReferencePairs",
    "evaluate_vae",
    "format_markdown_table",
    "load_vae",
    "plot_examples",
    "reconstruct",
    "save_evaluation",
    "score_batch",
]

# Files written by ``save_evaluation`` inside the output folder.
METRICS_FILE = "metrics.json"
TABLE_FILE = "metrics.md"
PER_IMAGE_FILE = "per_image.csv"
FIGURE_FILE = "examples.png"
OUTPUT_FILES = (METRICS_FILE, TABLE_FILE, PER_IMAGE_FILE, FIGURE_FILE)


# ----------------------------------------------------------------------------------------------------------------
# model
def load_vae(
    name_or_path: Union[str, os.PathLike],
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
    subfolder: Optional[str] = None,
) -> torch.nn.Module:
    """Load a saved VAE from a local ``save_pretrained`` folder or a Hub id, in eval mode on ``device``.

    A training checkpoint folder that holds the model under ``vae/`` is found without naming the subfolder. A folder
    whose ``config.json`` names ``AutoencoderKL`` loads as ``diffusers.AutoencoderKL``, so the same tools compare the
    two classes. Raises ``FileNotFoundError`` for a missing folder or an unreachable Hub id.
    """
    from .models.autoencoder_radio import RadioVAE

    path = Path(name_or_path)
    model_class: Any = RadioVAE
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"model must be a folder written by save_pretrained, got the file {path}")
        if subfolder is None and not (path / "config.json").is_file() and (path / "vae" / "config.json").is_file():
            subfolder = "vae"
        config_path = path / (subfolder or "") / "config.json"
        if config_path.is_file():
            with contextlib.suppress(ValueError, OSError, AttributeError):  # RadioVAE's loader names the problem
                if json.loads(config_path.read_text(encoding="utf-8")).get("_class_name") == "AutoencoderKL":
                    from diffusers import AutoencoderKL

                    model_class = AutoencoderKL
        model = model_class.from_pretrained(str(path), subfolder=subfolder, torch_dtype=dtype)
    else:
        text = str(name_or_path)
        local_path_or_hub_id(text, "model folder")  # a mistyped local path fails here, before any Hub lookup
        try:
            model = RadioVAE.from_pretrained(text, subfolder=subfolder, torch_dtype=dtype)
        except OSError as error:
            # diffusers' messages run over several lines; the first one names the cause.
            cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise FileNotFoundError(
                f"model {text!r} is neither a local folder nor a loadable Hub repository ({cause})"
            ) from error
    # The dtype was set by from_pretrained (diffusers keeps its float32-only modules there); only move here.
    return model.to(device).eval()


def _model_dtype(vae: torch.nn.Module) -> torch.dtype:
    return next(vae.parameters()).dtype


def _model_device(vae: torch.nn.Module) -> torch.device:
    return next(vae.parameters()).device


def check_maps_fit_model(vae: torch.nn.Module, channels: int, height: int, width: int, source: str) -> None:
    """Raise ``ValueError`` when maps of shape ``(channels, height, width)`` from ``source`` cannot enter ``vae``."""
    expected = int(vae.config.in_channels)
    if channels != expected:
        raise ValueError(
            f"the model takes {expected}-channel maps but {source} has {channels}-channel maps "
            f"(shape {(channels, height, width)})"
        )
    check_size_divisible(height, width, downsample_factor_of(vae), f"the map size of {source}")


@torch.no_grad()
def encode_latents(
    vae: torch.nn.Module,
    pixel_values: torch.Tensor,
    sample_posterior: bool = False,
    seeds: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """Unscaled latents of maps: (B, C, H, W) in [-1, 1] -> (B, latent_channels, H / f, W / f).

    ``sample_posterior=False`` takes the posterior mean. With ``sample_posterior=True`` each image draws its noise from
    its own generator seeded by ``seeds[i]``, so an image's latent does not depend on which batch it landed in.
    """
    posterior = vae.encode(pixel_values.to(_model_device(vae), _model_dtype(vae))).latent_dist
    if not sample_posterior:
        return posterior.mode()
    if seeds is None or len(seeds) != pixel_values.shape[0]:
        raise ValueError(f"sample_posterior=True needs one seed per image ({pixel_values.shape[0]}), got {seeds}")
    noise = torch.stack(
        [
            torch.randn(posterior.mean.shape[1:], generator=torch.Generator().manual_seed(int(seed)))
            for seed in seeds
        ]
    ).to(posterior.mean.device, posterior.mean.dtype)
    return posterior.mean + posterior.std * noise


@torch.no_grad()
def reconstruct(
    vae: torch.nn.Module,
    pixel_values: torch.Tensor,
    sample_posterior: bool = False,
    seeds: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """Encode and decode maps: (B, C, H, W) in [-1, 1] -> (B, C, H, W) float32 on the input's device."""
    latents = encode_latents(vae, pixel_values, sample_posterior, seeds)
    return vae.decode(latents).sample.to(pixel_values.device, torch.float32)


@dataclass
class BatchScores:
    """What :func:`score_batch` measured on one batch of ``B`` maps.

    Args:
        reconstruction (`torch.Tensor` of shape `(B, C, H, W)`): the model's reconstruction on ``[0, 1]``, clamped.
        target (`torch.Tensor` of shape `(B, C, H, W)`): what was scored against on ``[0, 1]``: the input, or the
            reference when one was given.
        model (`Dict[str, torch.Tensor]`): ``{metric: (B,)}`` of the reconstruction (``metrics.compute_metrics``).
        baseline (`Dict[str, torch.Tensor]`): the same for the resize baseline with as many values as the latent.
        noise_floor (`Dict[str, torch.Tensor]`): with a reference, the same for the input itself (the Monte Carlo
            noise floor of two traces); empty otherwise.
    """

    reconstruction: torch.Tensor
    target: torch.Tensor
    model: Dict[str, torch.Tensor]
    baseline: Dict[str, torch.Tensor]
    noise_floor: Dict[str, torch.Tensor] = field(default_factory=dict)


@torch.no_grad()
def score_batch(
    vae: torch.nn.Module,
    pixel_values: torch.Tensor,
    baseline: ResizeBaseline,
    reference: Optional[torch.Tensor] = None,
    mask: Optional[torch.Tensor] = None,
    db_range: Optional[Tuple[float, float]] = None,
    sample_posterior: bool = False,
    seeds: Optional[Sequence[int]] = None,
) -> BatchScores:
    """Reconstruct one batch of maps and score it, with the resize baseline beside it: the scoring of both
    :func:`evaluate_vae` and the training script's validation (``training.validation``).

    Maps are scored on the data's ``[0, 1]`` scale (``data.conventions.model_to_unit`` of the model's ``[-1, 1]``),
    every output clamped to that range, as radio-map papers do.

    Args:
        vae: a ``RadioVAE`` or ``diffusers.AutoencoderKL``, in the mode the caller wants (eval for scores).
        pixel_values (`torch.Tensor` of shape `(B, C, H, W)`): maps in ``[-1, 1]``, on any device.
        baseline (`ResizeBaseline`): the resize baseline of this map size (``baseline.baseline_for_model``).
        reference (`torch.Tensor` of shape `(B, C, H, W)`, *optional*): score against these maps instead of the
            input (an independent trace of the same transmitters); the input is then scored too (``noise_floor``).
        mask (`torch.Tensor` of shape `(B, 1, H, W)`, *optional*): True where pixels count.
        db_range (`Tuple[float, float]`, *optional*): (dB at 0, dB at 1); adds ``rmse_db`` and ``mae_db``.
        sample_posterior (`bool`, defaults to False): decode a posterior draw instead of the posterior mean.
        seeds (`Sequence[int]`, *optional*): one seed per map, needed with ``sample_posterior``.

    Returns:
        :class:`BatchScores`, every tensor on the input's device.
    """
    pixel_values = pixel_values.float()
    reconstruction = reconstruct(vae, pixel_values, sample_posterior, seeds)  # (B, C, H, W) in about [-1, 1]
    target = model_to_unit((pixel_values if reference is None else reference.float()).clamp(-1, 1))

    def score(output: torch.Tensor) -> Dict[str, torch.Tensor]:
        return compute_metrics(model_to_unit(output.clamp(-1, 1)), target, mask=mask, db_range=db_range)

    return BatchScores(
        reconstruction=model_to_unit(reconstruction.clamp(-1, 1)),
        target=target,
        model=score(reconstruction),
        baseline=score(resize_reconstruct(pixel_values, baseline)),
        noise_floor=score(pixel_values) if reference is not None else {},
    )


# ----------------------------------------------------------------------------------------------------------------
# the evaluation job
@dataclass
class EvaluationResult:
    """What :func:`evaluate_vae` measured.

    Args:
        metrics: the content of ``metrics.json``: for every metric name a summary (``mean``, ``std``, ``min``,
            ``max``, ``p5`` ... ``p95``, ``count``), plus ``per_simulation`` (the same per simulation) and ``settings``.
        per_image: ``{metric: (N,) float64}``, one score per evaluated map, in ``names`` order.
        names: map names, e.g. ``"12_3"``.
        simulations: the simulation of each map, e.g. ``"IRT4"``.
        indices: each map's index in the dataset that was passed in.
        table: ``metrics.md``, a markdown table of the summaries.
        baseline_per_image: ``{metric: (N,) float64}`` of the resize baseline (``radiodiff_vae.baseline``) with as
            many values per map as the model's latent, on the same maps and pixels; summarised with the gap in
            ``metrics["baseline"]``.
        figure: the matplotlib figure of the best, median and worst maps (None when not drawn).
    """

    metrics: Dict[str, Any]
    per_image: Dict[str, torch.Tensor]
    names: List[str]
    simulations: List[str]
    indices: List[int]
    table: str
    baseline_per_image: Dict[str, torch.Tensor] = field(default_factory=dict)
    figure: Any = field(default=None, repr=False)


def _subsample(dataset: Dataset, num_samples: Optional[int], seed: int) -> Tuple[Dataset, List[int]]:
    total = len(dataset)
    if total == 0:
        raise ValueError("the dataset to evaluate is empty")
    if num_samples is None or num_samples >= total:
        return dataset, list(range(total))
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    # A seeded random subset (sorted, so the progress and per-image files follow the dataset order).
    chosen = sorted(torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:num_samples].tolist())
    return Subset(dataset, chosen), chosen


def _as_list(values: Any, batch_size: int, default: str) -> List[str]:
    if values is None:
        return [default] * batch_size
    if isinstance(values, str):
        return [values] * batch_size
    return [str(value) for value in values]


def evaluate_vae(
    vae: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 8,
    num_samples: Optional[int] = None,
    seed: int = 0,
    sample_posterior: bool = False,
    non_building_only: bool = False,
    db_range: Optional[Tuple[float, float]] = RADIOMAPSEER_DB_RANGE,
    num_workers: int = 0,
    draw_figure: bool = True,
    progress: bool = True,
    settings: Optional[Mapping[str, Any]] = None,
) -> EvaluationResult:
    """Reconstruct every map of ``dataset`` with ``vae`` and score it.

    Args:
        vae: a ``RadioVAE`` (or ``diffusers.AutoencoderKL``) already on its device and dtype; put in eval mode here.
        dataset: yields dicts with ``"pixel_values"`` (C, H, W) in [-1, 1], and optionally ``"buildings"`` (1, H, W),
            ``"name"``, ``"simulation"`` and ``"reference"`` (C, H, W), the map to score against instead of the input
            (:class:`ReferencePairs`).
        batch_size: maps per forward pass.
        num_samples: score a seeded random subset of this many maps (None: all).
        seed: seeds the subset and, with ``sample_posterior``, the posterior draws (map ``i`` uses ``seed + i``).
        sample_posterior: decode a posterior draw instead of the posterior mean.
        non_building_only: score only pixels outside buildings (needs ``"buildings"`` in the items).
        db_range: the (dB at 0, dB at 1) the maps were scaled from; adds ``rmse_db`` and ``mae_db``. None: no dB.
        num_workers: DataLoader workers.
        draw_figure: draw the best / median / worst figure (by PSNR).
        progress: show a tqdm progress bar.
        settings: extra entries recorded under ``metrics["settings"]`` (model name, data source, ...).

    Returns:
        An :class:`EvaluationResult`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    subset, indices = _subsample(dataset, num_samples, seed)
    first = subset[0]
    if "pixel_values" not in first:
        raise ValueError(f"dataset items must hold 'pixel_values', got keys {sorted(first)}")
    if non_building_only and "buildings" not in first:
        raise ValueError("non_building_only needs a 'buildings' mask in the dataset items, which this dataset lacks")
    check_maps_fit_model(vae, *first["pixel_values"].shape, source="the dataset")
    # Validation during training passes the training model: evaluate in eval mode, then hand it back as it came.
    was_training = vae.training
    vae.eval()
    try:
        return _evaluate(
            vae,
            dataset,
            subset,
            indices,
            baseline=baseline_for_model(vae, *first["pixel_values"].shape[-2:]),
            batch_size=batch_size,
            seed=seed,
            sample_posterior=sample_posterior,
            non_building_only=non_building_only,
            db_range=db_range,
            num_workers=num_workers,
            draw_figure=draw_figure,
            progress=progress,
            settings=settings,
        )
    finally:
        vae.train(was_training)


def _evaluate(
    vae: torch.nn.Module,
    dataset: Dataset,
    subset: Dataset,
    indices: List[int],
    *,
    baseline: ResizeBaseline,
    batch_size: int,
    seed: int,
    sample_posterior: bool,
    non_building_only: bool,
    db_range: Optional[Tuple[float, float]],
    num_workers: int,
    draw_figure: bool,
    progress: bool,
    settings: Optional[Mapping[str, Any]],
) -> EvaluationResult:
    """The body of :func:`evaluate_vae`, once its inputs are checked and the model is in eval mode."""
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    per_image: Dict[str, List[torch.Tensor]] = {}
    baseline_per_image: Dict[str, List[torch.Tensor]] = {}
    floor_per_image: Dict[str, List[torch.Tensor]] = {}
    names: List[str] = []
    simulations: List[str] = []
    position = 0
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress):
        pixel_values = batch["pixel_values"].float()
        count = pixel_values.shape[0]
        batch_indices = indices[position : position + count]
        # Items of ReferencePairs carry an independent trace of the same map: outputs are scored against it, and
        # the input itself (the Monte Carlo noise floor) too.
        scores = score_batch(
            vae,
            pixel_values,
            baseline,
            reference=batch.get("reference"),
            mask=(batch["buildings"] < 0.5) if non_building_only else None,
            db_range=db_range,
            sample_posterior=sample_posterior,
            seeds=[seed + i for i in batch_indices],
        )
        for found, scored in (
            (scores.model, per_image),
            (scores.baseline, baseline_per_image),
            (scores.noise_floor, floor_per_image),
        ):
            for name, values in found.items():
                scored.setdefault(name, []).append(values.double().cpu())
        names += _as_list(batch.get("name"), count, default="")
        simulations += _as_list(batch.get("simulation"), count, default="")
        position += count
    names = [name or f"map_{index}" for name, index in zip(names, indices)]
    scores_per_image = {name: torch.cat(chunks) for name, chunks in per_image.items()}
    baseline_scores = {name: torch.cat(chunks) for name, chunks in baseline_per_image.items()}

    metrics: Dict[str, Any] = dict(summarize_metrics(scores_per_image))
    metrics["baseline"] = _baseline_summary(baseline, baseline_scores, scores_per_image)
    if floor_per_image:
        floor_scores = {name: torch.cat(values) for name, values in floor_per_image.items()}
        metrics["noise_floor"] = summarize_metrics(floor_scores)
    metrics["per_simulation"] = {}
    for simulation in sorted(set(simulations)):
        chosen = torch.tensor([sim == simulation for sim in simulations])
        metrics["per_simulation"][simulation or "unknown"] = summarize_metrics(
            {name: values[chosen] for name, values in scores_per_image.items()}
        )
    metrics["settings"] = {
        "num_images": len(names),
        "num_images_in_dataset": len(dataset),
        "seed": seed,
        "sample_posterior": sample_posterior,
        "pixels": "non-building" if non_building_only else "all",
        "db_range": list(db_range) if db_range is not None else None,
        "scale": "maps in [0, 1] = (x + 1) / 2, reconstructions clamped to [0, 1]",
        **dict(settings or {}),
    }
    result = EvaluationResult(
        metrics=metrics,
        per_image=scores_per_image,
        names=names,
        simulations=simulations,
        indices=indices,
        table="",
        baseline_per_image=baseline_scores,
    )
    result.table = format_markdown_table(result)
    if draw_figure:
        result.figure = plot_examples(
            vae,
            dataset,
            result,
            db_range=db_range,
            sample_posterior=sample_posterior,
            seed=seed,
            non_building_only=non_building_only,
        )
    return result


def _baseline_summary(
    baseline: ResizeBaseline, baseline_scores: Dict[str, torch.Tensor], model_scores: Dict[str, torch.Tensor]
) -> Dict[str, Any]:
    """``metrics.json``'s ``baseline`` block: what the baseline is, its summaries, and the model's gap to it."""
    model_psnr, baseline_psnr = model_scores["psnr"], baseline_scores["psnr"]
    return {
        "method": baseline.describe(),
        "height": baseline.height,
        "width": baseline.width,
        "values_per_map": baseline.values,
        "latent_values_per_map": baseline.latent_values,
        "rule": baseline.rule,
        **summarize_metrics(baseline_scores),
        # mean of the per-map gaps equals the gap of the means; the std says how consistent the win is
        "psnr_gap_db": summarize_metrics({"gap": model_psnr - baseline_psnr})["gap"],
        "ssim_gap": float(torch.nanmean(model_scores["ssim"] - baseline_scores["ssim"])),
        "maps_where_model_wins": int((model_psnr > baseline_psnr).sum()),
    }


# ----------------------------------------------------------------------------------------------------------------
# reporting
_TABLE_LABELS = {
    "psnr": "PSNR (dB) ↑",
    "ssim": "SSIM ↑",
    "nmse": "NMSE ↓",
    "rmse": "RMSE ↓",
    "mae": "MAE ↓",
    "rmse_db": "RMSE (dB of path gain) ↓",
    "mae_db": "MAE (dB of path gain) ↓",
}


def _format_number(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4f}"


def format_markdown_table(result: EvaluationResult) -> str:
    """Markdown tables of the summaries: one row per metric overall, then the means per simulation."""
    metric_names = [name for name in result.per_image if name in _TABLE_LABELS]
    settings = result.metrics["settings"]
    data = f" of {settings['data']}" if settings.get("data") else ""  # the folder, its split, ...
    how = "posterior sample" if settings["sample_posterior"] else "posterior mean"
    lines = [
        f"Reconstruction of {settings['num_images']} maps{data} ({settings['pixels']} pixels, {how}).",
        "",
        "| metric | mean | std | p5 | median | p95 | min | max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in metric_names:
        stats = result.metrics[name]
        row = [stats[key] for key in ("mean", "std", "p5", "p50", "p95", "min", "max")]
        lines.append(f"| {_TABLE_LABELS[name]} | " + " | ".join(_format_number(v) for v in row) + " |")
    per_simulation = result.metrics["per_simulation"]
    if len(per_simulation) > 1 or (per_simulation and "unknown" not in per_simulation):
        lines += [
            "",
            "Mean per simulation:",
            "",
            "| simulation | maps | " + " | ".join(_TABLE_LABELS[name] for name in metric_names) + " |",
            "|---|---|" + "---|" * len(metric_names),
        ]
        for simulation, summary in per_simulation.items():
            means = " | ".join(_format_number(summary[name]["mean"]) for name in metric_names)
            lines.append(f"| {simulation} | {summary[metric_names[0]]['count']} | {means} |")
    baseline = result.metrics.get("baseline")
    if baseline:
        lines += _baseline_table(result, baseline, metric_names)
    floor = result.metrics.get("noise_floor")
    if floor:
        paired = settings.get("maps_with_reference")
        on = f" on the {paired} of {settings['maps_in_data']} maps it holds" if paired is not None else ""
        lines += [
            "",
            f"Scored against an independent trace ({settings.get('reference_simulation', 'reference')}){on}: the "
            f"input trace itself, the Monte Carlo noise floor, is at RMSE {_format_number(floor['rmse']['mean'])} "
            f"(PSNR {floor['psnr']['mean']:.2f} dB); the reconstruction is at RMSE "
            f"{_format_number(result.metrics['rmse']['mean'])} (PSNR {result.metrics['psnr']['mean']:.2f} dB).",
        ]
    return "\n".join(lines) + "\n"


def _baseline_table(result: EvaluationResult, baseline: Mapping[str, Any], metric_names: List[str]) -> List[str]:
    """Rows of the model against the resize baseline with the same number of values, and the gap."""
    gap = baseline["psnr_gap_db"]
    lines = [
        "",
        f"Against the resize baseline with the same number of values ({baseline['method']}), on the same maps and "
        f"pixels: the model is {gap['mean']:+.2f} dB PSNR (std {gap['std']:.2f} dB over maps) and "
        f"{baseline['ssim_gap']:+.4f} SSIM from it, and better on {baseline['maps_where_model_wins']} of "
        f"{gap['count']} maps.",
        "",
        "| codec | values per map | " + " | ".join(_TABLE_LABELS[name] for name in metric_names) + " |",
        "|---|---|" + "---|" * len(metric_names),
    ]
    for label, values, summaries in (
        ("model", baseline["latent_values_per_map"], result.metrics),
        (f"resize {baseline['height']}x{baseline['width']}, bicubic back", baseline["values_per_map"], baseline),
    ):
        means = " | ".join(_format_number(summaries[name]["mean"]) for name in metric_names)
        lines.append(f"| {label} | {values} | {means} |")
    return lines


def _example_positions(psnr: torch.Tensor) -> List[Tuple[str, int]]:
    """Positions (into the evaluated list) of the best, median and worst map by PSNR."""
    finite = torch.nan_to_num(psnr, nan=-math.inf)
    order = torch.argsort(finite, descending=True, stable=True).tolist()
    return [("best", order[0]), ("median", order[len(order) // 2]), ("worst", order[-1])]


def plot_examples(
    vae: torch.nn.Module,
    dataset: Dataset,
    result: EvaluationResult,
    db_range: Optional[Tuple[float, float]] = RADIOMAPSEER_DB_RANGE,
    sample_posterior: bool = False,
    seed: int = 0,
    non_building_only: bool = False,
) -> Any:
    """Figure with the best, median and worst map by PSNR: input | reconstruction | absolute error, in dB.

    Without ``db_range`` the panels show the ``[0, 1]`` values. With ``non_building_only`` the error panel leaves
    building pixels blank, as the scores do. The maps are reconstructed again (with the same per-map seeds) rather
    than kept from the evaluation pass, so memory does not grow with the dataset. Returns a matplotlib ``Figure``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    # Without a dB range the panels show the [0, 1] values themselves.
    db_min, db_max = db_range if db_range is not None else (0.0, 1.0)
    unit = "dB" if db_range is not None else "value"
    examples = _example_positions(result.per_image["psnr"])
    figure = Figure(figsize=(11.5, 3.4 * len(examples)), layout="constrained")
    axes = figure.subplots(len(examples), 3, squeeze=False)
    for row, (label, position) in enumerate(examples):
        index = result.indices[position]
        item = dataset[index]
        target = item["pixel_values"].float().unsqueeze(0)
        output = reconstruct(vae, target, sample_posterior, [seed + index])
        target_db = unit_to_db(model_to_unit(target.clamp(-1, 1)), (db_min, db_max))[0, 0].numpy()
        output_db = unit_to_db(model_to_unit(output.clamp(-1, 1)), (db_min, db_max))[0, 0].numpy()
        error_db = abs(output_db - target_db)
        if non_building_only:
            error_db[item["buildings"][0].numpy() >= 0.5] = float("nan")
        scored = error_db[~np.isnan(error_db)]
        mean_error = float(scored.mean()) if scored.size else float("nan")
        max_error = max(float(scored.max()) if scored.size else 0.0, 1e-6)
        psnr_value = float(result.per_image["psnr"][position])
        ssim_value = float(result.per_image["ssim"][position])
        simulation = f" ({result.simulations[position]})" if result.simulations[position] else ""
        panels = [
            (target_db, f"{label}: {result.names[position]}{simulation} input", "viridis", (db_min, db_max)),
            (output_db, f"reconstruction, PSNR {psnr_value:.2f} dB, SSIM {ssim_value:.3f}", "viridis", (db_min, db_max)),
            (error_db, f"|error|, mean {mean_error:.3g} {unit}", "magma", (0.0, max_error)),
        ]
        for column, (image, title, colormap, (low, high)) in enumerate(panels):
            axis = axes[row, column]
            shown = axis.imshow(image, cmap=colormap, vmin=low, vmax=high)
            axis.set_title(title, fontsize=9)
            axis.set_xticks([])
            axis.set_yticks([])
            figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.02).set_label(unit, fontsize=8)
    return figure


def save_evaluation(
    result: EvaluationResult, output_dir: Union[str, os.PathLike], overwrite: bool = False
) -> Dict[str, Path]:
    """Write ``metrics.json``, ``metrics.md``, ``per_image.csv`` and (when drawn) ``examples.png`` into ``output_dir``.

    Every file is written to a temporary name and moved into place, so an interrupted save leaves the earlier files
    whole. Raises ``FileExistsError`` when results are already there and ``overwrite`` is False.
    """
    output_dir = Path(output_dir)
    check_output_dir(output_dir, overwrite)
    output_dir.mkdir(parents=True, exist_ok=True)
    written: Dict[str, Path] = {}

    # Render everything in memory first, so that a failing step writes nothing.
    figure_bytes = None
    if result.figure is not None:
        buffer = io.BytesIO()
        result.figure.savefig(buffer, format="png", dpi=110)
        figure_bytes = buffer.getvalue()
    csv_text = io.StringIO()
    writer = csv.writer(csv_text, lineterminator="\n")
    columns = {**result.per_image, **{f"baseline_{name}": values for name, values in result.baseline_per_image.items()}}
    writer.writerow(["index", "name", "simulation", *columns])
    for position, (index, name, simulation) in enumerate(zip(result.indices, result.names, result.simulations)):
        writer.writerow([index, name, simulation, *(repr(float(values[position])) for values in columns.values())])
    json_text = json.dumps(_json_safe(result.metrics), indent=2) + "\n"

    for file_name, content in (
        (METRICS_FILE, json_text.encode()),
        (TABLE_FILE, result.table.encode()),
        (PER_IMAGE_FILE, csv_text.getvalue().encode()),
        (FIGURE_FILE, figure_bytes),
    ):
        if content is None:
            continue
        with atomic_open(output_dir / file_name, "wb") as file:
            file.write(content)
        written[file_name] = output_dir / file_name
    return written


def check_output_dir(output_dir: Union[str, os.PathLike], overwrite: bool) -> None:
    """Raise before any work when ``output_dir`` cannot take the results (a file, or earlier results)."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"output_dir {output_dir} exists and is not a folder")
    existing = [name for name in OUTPUT_FILES if (output_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"output_dir {output_dir} already holds {', '.join(existing)}; pass --overwrite to replace them"
        )


def _json_safe(value: Any) -> Any:
    """JSON has no inf/nan: write them as the strings "inf", "-inf" and "nan" (Python's float() reads them back)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def item_names(dataset: Dataset) -> List[str]:
    """The ``"name"`` of every item of ``dataset``, from its ``names`` when it has them (``RadioMapSeer``: no image
    read), else item by item."""
    names = getattr(dataset, "names", None)
    if names is not None:
        return [str(name) for name in names]
    return [str(dataset[index].get("name")) for index in range(len(dataset))]


class ReferencePairs(Dataset):
    """The items of ``dataset`` that ``reference`` also holds, with ``"reference"`` added: the same map from
    ``reference`` (an independent trace).

    :func:`evaluate_vae` then scores the reconstruction of each item against its reference and reports the input's
    own score against it (``metrics["noise_floor"]``): a ray tracer's map carries Monte Carlo noise, and two traces
    of one transmitter differ by that floor. Items are matched by ``"name"``; a reference may hold a subset of the
    maps (e.g. a second trace of some of the transmitters), and then only the maps both hold are items here.

    Args:
        dataset: yields ``"pixel_values"`` `(C, H, W)` (trace A) and ``"name"``.
        reference: yields the same for trace B (e.g. ``gain/<simulation>_repeat1``); names must be unique.

    Attributes:
        num_data_maps (`int`): how many maps ``dataset`` holds, paired or not.

    Raises:
        ValueError: the reference names a map twice, or holds none of the data's maps.
    """

    def __init__(self, dataset: Dataset, reference: Dataset):
        names, reference_names = item_names(dataset), item_names(reference)
        position = {name: index for index, name in enumerate(reference_names)}
        if len(position) != len(reference_names):
            twice = sorted({name for name in reference_names if reference_names.count(name) > 1})
            raise ValueError(f"the reference must name each map once, got {twice[:3]} more than once")
        self.pairs = [(index, position[name]) for index, name in enumerate(names) if name in position]
        if not self.pairs:
            raise ValueError(
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
            raise ValueError(f"item {index} is map {item.get('name')} but its reference is {reference.get('name')}")
        item["reference"] = reference["pixel_values"]
        return item
