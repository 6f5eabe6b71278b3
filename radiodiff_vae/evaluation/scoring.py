"""Scoring: predicted maps against true maps, map by map, on the ``[0, 1]`` scale of the data.

:func:`score_maps` scores any prediction of a map (a VAE's reconstruction, a constructed map, a baseline) against the
true one, clamped to ``[0, 1]`` as radio-map papers do; :class:`MapScores` gathers those scores over batches and
methods. :func:`score_batch` is the VAE's batch: its reconstruction, the resize baseline with as many values as the
latent and, against an independent trace, the noise floor; the training script's validation
(``training.validation``) and :func:`evaluate_vae` both use it. :func:`evaluate_vae` is the whole job for a VAE.
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..baseline import ResizeBaseline, baseline_for_model, resize_reconstruct
from ..data.conventions import RADIOMAPSEER_DB_RANGE, model_to_unit
from ..data.latents import encode_latents
from ..errors import DataError, InvalidArgumentError
from ..metrics import compute_metrics, summarize_metrics
from .loading import batch_strings, check_maps_fit_model, subsample
from .reporting import EvaluationResult, ExampleMaps, format_markdown_table, plot_examples, summarize_per_simulation

__all__ = [
    "BatchScores",
    "MapScores",
    "encode_latents",
    "evaluate_vae",
    "reconstruct",
    "score_batch",
    "score_maps",
]

# The model's own scores, the resize baseline's and the noise floor's, in per_image.csv's column order.
MODEL, BASELINE, NOISE_FLOOR = "model", "baseline", "noise_floor"


def score_maps(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    db_range: Optional[Tuple[float, float]] = None,
) -> Dict[str, torch.Tensor]:
    """Scores of predicted maps against true maps, both on the data's ``[0, 1]`` scale.

    The prediction is clamped to ``[0, 1]`` first (the range of the data), as radio-map papers score.

    Args:
        prediction (`torch.Tensor` of shape `(B, C, H, W)`): e.g. a reconstruction or a constructed map.
        target (`torch.Tensor` of shape `(B, C, H, W)`): the true maps, in ``[0, 1]``.
        mask (`torch.Tensor` of shape `(B, 1, H, W)`, *optional*): True where pixels count (``buildings < 0.5``).
        db_range (`Tuple[float, float]`, *optional*): (dB at 0, dB at 1); adds ``rmse_db`` and ``mae_db``.

    Returns:
        ``{metric: (B,)}``: ``psnr``, ``ssim``, ``nmse``, ``rmse``, ``mae`` (``metrics.compute_metrics``).
    """
    return compute_metrics(prediction.float().clamp(0, 1), target.float(), mask=mask, db_range=db_range)


class MapScores:
    """Per-map scores of one or more methods on the same maps, gathered batch by batch.

    Example::

        scores = MapScores()
        for batch in loader:
            scores.add_maps(batch, indices=...)
            scores.add("pipeline", score_maps(constructed, truth))
            scores.add("log_distance", score_maps(fitted, truth))
        scores.per_image("pipeline")["psnr"]  # (N,) float64

    Attributes:
        names, simulations (`List[str]`): of each map, in the order added.
        indices (`List[int]`): each map's index in the dataset.
    """

    def __init__(self) -> None:
        self.names: List[str] = []
        self.simulations: List[str] = []
        self.indices: List[int] = []
        self._chunks: Dict[str, Dict[str, List[torch.Tensor]]] = {}

    def add_maps(self, batch: Mapping[str, Any], indices: Sequence[int]) -> None:
        """Records the maps of a collated batch: their ``"name"`` (``map_<index>`` when absent), ``"simulation"``
        and dataset indices."""
        count = len(indices)
        names = batch_strings(batch.get("name"), count)
        self.names += [name or f"map_{index}" for name, index in zip(names, indices)]
        self.simulations += batch_strings(batch.get("simulation"), count)
        self.indices += [int(index) for index in indices]

    def add(self, method: str, scores: Mapping[str, torch.Tensor]) -> None:
        """Adds one batch's ``{metric: (B,)}`` of ``method``."""
        chunks = self._chunks.setdefault(method, {})
        for name, values in scores.items():
            chunks.setdefault(name, []).append(values.detach().double().cpu())

    @property
    def methods(self) -> List[str]:
        return list(self._chunks)

    def per_image(self, method: str) -> Dict[str, torch.Tensor]:
        """``{metric: (N,) float64}`` of ``method`` (empty when it scored nothing)."""
        return {name: torch.cat(chunks) for name, chunks in self._chunks.get(method, {}).items()}


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
        model (`Dict[str, torch.Tensor]`): ``{metric: (B,)}`` of the reconstruction (:func:`score_maps`).
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
    reconstruction = model_to_unit(reconstruct(vae, pixel_values, sample_posterior, seeds).clamp(-1, 1))
    target = model_to_unit((pixel_values if reference is None else reference.float()).clamp(-1, 1))

    def score(prediction: torch.Tensor) -> Dict[str, torch.Tensor]:
        return score_maps(prediction, target, mask=mask, db_range=db_range)

    return BatchScores(
        reconstruction=reconstruction,
        target=target,
        model=score(reconstruction),
        baseline=score(model_to_unit(resize_reconstruct(pixel_values, baseline))),
        noise_floor=score(model_to_unit(pixel_values)) if reference is not None else {},
    )


# ----------------------------------------------------------------------------------------------------------------
# the evaluation job of a VAE
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
            (:class:`~radiodiff_vae.evaluation.ReferencePairs`).
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
        An :class:`~radiodiff_vae.evaluation.EvaluationResult`.
    """
    if batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be at least 1, got {batch_size}")
    subset, indices = subsample(dataset, num_samples, seed)
    first = subset[0]
    if "pixel_values" not in first:
        raise DataError(f"dataset items must hold 'pixel_values', got keys {sorted(first)}")
    if non_building_only and "buildings" not in first:
        raise DataError("non_building_only needs a 'buildings' mask in the dataset items, which this dataset lacks")
    check_maps_fit_model(vae, *first["pixel_values"].shape, source="the dataset")
    baseline = baseline_for_model(vae, *first["pixel_values"].shape[-2:])
    # Validation during training passes the training model: evaluate in eval mode, then hand it back as it came.
    was_training = vae.training
    vae.eval()
    try:
        scores = MapScores()
        loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress):
            batch_indices = indices[len(scores.indices) : len(scores.indices) + len(batch["pixel_values"])]
            # Items of ReferencePairs carry an independent trace of the same map: outputs are scored against it,
            # and the input itself (the Monte Carlo noise floor) too.
            found = score_batch(
                vae,
                batch["pixel_values"],
                baseline,
                reference=batch.get("reference"),
                mask=(batch["buildings"] < 0.5) if non_building_only else None,
                db_range=db_range,
                sample_posterior=sample_posterior,
                seeds=[seed + index for index in batch_indices],
            )
            scores.add_maps(batch, batch_indices)
            for method, values in ((MODEL, found.model), (BASELINE, found.baseline), (NOISE_FLOOR, found.noise_floor)):
                scores.add(method, values)
        result = _vae_result(
            scores,
            baseline,
            num_images_in_dataset=len(dataset),
            settings={
                "seed": seed,
                "sample_posterior": sample_posterior,
                "pixels": "non-building" if non_building_only else "all",
                "db_range": list(db_range) if db_range is not None else None,
                "scale": "maps in [0, 1] = (x + 1) / 2, reconstructions clamped to [0, 1]",
                **dict(settings or {}),
            },
        )
        if draw_figure:
            load = _reconstructed_examples(vae, dataset, sample_posterior, seed, non_building_only)
            result.figure = plot_examples(result, load, db_range=db_range)
        return result
    finally:
        vae.train(was_training)


def _vae_result(
    scores: MapScores, baseline: ResizeBaseline, num_images_in_dataset: int, settings: Mapping[str, Any]
) -> EvaluationResult:
    """``metrics.json``, the table and the per-map columns of a VAE's evaluation."""
    model_scores, baseline_scores = scores.per_image(MODEL), scores.per_image(BASELINE)
    metrics: Dict[str, Any] = dict(summarize_metrics(model_scores))
    metrics[BASELINE] = _baseline_summary(baseline, baseline_scores, model_scores)
    floor_scores = scores.per_image(NOISE_FLOOR)
    if floor_scores:
        metrics[NOISE_FLOOR] = summarize_metrics(floor_scores)
    metrics["per_simulation"] = summarize_per_simulation(model_scores, scores.simulations)
    metrics["settings"] = {"num_images": len(scores.names), "num_images_in_dataset": num_images_in_dataset, **settings}
    result = EvaluationResult(
        metrics=metrics,
        per_image=model_scores,
        names=scores.names,
        simulations=scores.simulations,
        indices=scores.indices,
        compared_per_image={BASELINE: baseline_scores},
    )
    result.table = format_markdown_table(result)
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


def _reconstructed_examples(
    vae: torch.nn.Module, dataset: Dataset, sample_posterior: bool, seed: int, non_building_only: bool
) -> Callable[[int], ExampleMaps]:
    """The maps of the figure, reconstructed again with the same per-map seeds rather than kept from the scoring
    pass, so memory does not grow with the dataset."""

    def load(index: int) -> ExampleMaps:
        item = dataset[index]
        target = item["pixel_values"].float().unsqueeze(0)  # (1, C, H, W) in [-1, 1]
        output = reconstruct(vae, target, sample_posterior, [seed + index])
        mask = (item["buildings"][0] < 0.5).numpy() if non_building_only else None
        return ExampleMaps(
            target=model_to_unit(target.clamp(-1, 1))[0, 0].numpy(),
            prediction=model_to_unit(output.clamp(-1, 1))[0, 0].numpy(),
            mask=mask,
        )

    return load
