"""The model card of a construction pipeline (``README.md`` of its folder or Hub repository).

The template is ``radiodiff_vae/templates/pipeline_card.md``, rendered by ``huggingface_hub.ModelCard.from_template``
and written as the VAE's card is (:mod:`radiodiff_vae.hub.model_card`, whose helpers it uses). The card states the
construction metrics of ``radiodiff-vae evaluate-construction``: one row per method (``pipeline``, ``ceiling``,
``log_distance``, ``direct``), and a ``model-index`` with the pipeline's own. The pipelines' ``push_to_hub`` uploads
it with the folder in one commit (:func:`radiodiff_vae.hub.push.push_with_card`).
"""

import argparse
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from huggingface_hub import ModelCard, ModelCardData

from ..data.conventions import RADIOMAPSEER_DB_RANGE
from ..errors import InvalidArgumentError
from ..hub.model_card import (
    LIBRARY_NAME,
    METRIC_UNITS,
    check_sample_image_name,
    eval_results,
    format_number,
    metric_values,
    template_path,
    training_rows,
    write_card_files,
)

TEMPLATE_NAME = "pipeline_card.md"
DEFAULT_TAGS = ("radiodiff-vae", "diffusers", "radio-map", "radio-map-construction", "wireless")
# Row order and labels of the metrics table; other methods follow under their own names.
METHOD_LABELS = {
    "pipeline": "pipeline",
    "pipeline_1_step": "pipeline, 1 step",
    "direct": "direct",
    "log_distance": "log_distance",
    "ceiling": "ceiling (VAE reconstruction)",
}
METRIC_ORDER = ("nmse", "rmse", "psnr", "ssim", "rmse_db", "mae", "mae_db")

ArgumentsLike = Optional[Union[Mapping[str, Any], argparse.Namespace]]


def construction_metrics(metrics: Optional[Mapping[str, Any]]) -> Dict[str, Dict[str, float]]:
    """``{method: {metric: value}}`` from ``evaluate-construction``'s ``metrics.json`` (methods mapping to metric
    values, or ``{"mean": value}`` entries) or from a flat ``{metric: value}`` of the pipeline alone. Entries that
    hold no known metric (settings, descriptions) are left out."""
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise InvalidArgumentError(f"metrics must be a mapping, got {type(metrics).__name__}")
    flat = {name: value for name, value in metrics.items() if name in METRIC_UNITS}
    if flat:
        return {"pipeline": metric_values(flat)}
    methods = {}
    for method, values in metrics.items():
        if isinstance(values, Mapping):
            known = metric_values({name: value for name, value in values.items() if name in METRIC_UNITS})
            if known:
                methods[str(method)] = known
    return methods


def _parameters(module: Any) -> str:
    count = sum(parameter.numel() for parameter in module.parameters()) if hasattr(module, "parameters") else None
    return f"{count / 1e6:.2f} M" if count else "-"


def _component_rows(pipeline: Any) -> List[tuple]:
    rows = []
    for name, component in pipeline.components.items():
        config = getattr(component, "config", {})
        if name == "vae":
            factor = 2 ** int(config["num_downsamples"])
            details = f"frozen; latent {config['latent_channels']} x H/{factor} x W/{factor}"
        elif name == "city_encoder":
            features = ", ".join(config["in_features"])
            details = f"features {features}; {config['out_channels']} channels at H/{config['downsample_factor']}"
        elif name == "unet":
            levels = tuple(config["block_out_channels"])
            details = f"{config['in_channels']} -> {config['out_channels']} channels, levels {levels}"
        else:
            details = f"prediction type `{config.get('prediction_type', '-')}`" if "prediction_type" in config else ""
        rows.append((name, type(component).__name__, _parameters(component), details))
    return rows


def render_pipeline_card(
    pipeline: Any,
    metrics: Optional[Mapping[str, Any]] = None,
    training_args: ArgumentsLike = None,
    sample_image: Optional[str] = None,
    *,
    repo_id: Optional[str] = None,
    model_name: Optional[str] = None,
    description: Optional[str] = None,
    eval_dataset: Optional[str] = None,
    eval_split: Optional[str] = None,
    eval_steps: Optional[int] = None,
    license: Optional[str] = "apache-2.0",
) -> str:
    """The card (``README.md`` text with its YAML header) of a :class:`RadioDiffPipeline` or :class:`RadioUNetPipeline`.

    Args:
        pipeline: the pipeline (its components and config fill the card).
        metrics (`Mapping`, *optional*): ``evaluate-construction``'s ``metrics.json`` content, ``{method: {metric:
            value}}``, or ``{metric: value}`` of the pipeline alone (see :func:`construction_metrics`).
        training_args (`Mapping` or `argparse.Namespace`, *optional*): listed in the card, secrets left out.
        sample_image (`str`, *optional*): file name of a figure next to the card.
        repo_id / model_name / description: where the pipeline lives, its title, a paragraph of text.
        eval_dataset / eval_split / eval_steps: what the metrics were measured on, and with how many sampling steps.
        license (`str`, defaults to ``"apache-2.0"``).
    """
    methods = construction_metrics(metrics)
    check_sample_image_name(sample_image)
    diffusion = "vae" in pipeline.components
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else type(pipeline).__name__)
    repo_id = repo_id or "<user>/<model>"
    dataset = eval_dataset or "synthetic radio maps"
    names = [name for name in METRIC_ORDER if any(name in values for values in methods.values())]
    ordered = [method for method in METHOD_LABELS if method in methods] + [m for m in methods if m not in METHOD_LABELS]
    rows = []
    for method in ordered:
        values = methods[method]
        cells = [format_number(values[name]) if name in values else "" for name in names]
        rows.append((METHOD_LABELS.get(method, method), cells))
    card_data = ModelCardData(
        model_name=model_name,
        library_name=LIBRARY_NAME,
        license=license,
        tags=list(DEFAULT_TAGS) + (["latent-diffusion"] if diffusion else []),
        metrics=names or ["nmse", "rmse", "psnr", "ssim"],
        pipeline_tag="image-to-image",
        eval_results=eval_results(methods.get("pipeline", {}), "Radio map construction", dataset, eval_split),
    )
    sample_size = int(pipeline.unet.config.sample_size or 64)
    scheduler = getattr(pipeline, "scheduler", None)
    if diffusion:
        sample_size *= pipeline.vae.downsample_factor
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path(TEMPLATE_NAME)),
        model_name=model_name,
        repo_id=repo_id,
        description=description,
        diffusion=diffusion,
        pipeline_class=type(pipeline).__name__,
        components=_component_rows(pipeline),
        scaling_factor=format_number(float(pipeline.vae.config.scaling_factor)) if diffusion else None,
        default_steps=pipeline.config.get("default_num_inference_steps") if diffusion else None,
        scheduler=type(scheduler).__name__ if scheduler is not None else None,
        prediction_type=scheduler.config.get("prediction_type") if scheduler is not None else None,
        size_divisor=pipeline.size_divisor,
        sample_size=sample_size,
        db_low=format_number(RADIOMAPSEER_DB_RANGE[0]),
        db_high=format_number(RADIOMAPSEER_DB_RANGE[1]),
        training=training_rows(training_args),
        metric_names=names,
        metric_rows=rows,
        metric_units=[(name, METRIC_UNITS[name]) for name in names],
        eval_dataset=dataset if methods else None,
        eval_split=eval_split if methods else None,
        eval_steps=eval_steps,
        sample_image=sample_image,
    )
    return str(card)


def save_pipeline_card(
    folder: Union[str, os.PathLike],
    pipeline: Any,
    metrics: Optional[Mapping[str, Any]] = None,
    training_args: ArgumentsLike = None,
    sample_image: Optional[Union[str, os.PathLike]] = None,
    **render_kwargs: Any,
) -> Path:
    """Writes ``README.md`` (and a copy of the sample figure) into a pipeline folder, atomically, as the VAE's card is
    written (:func:`~radiodiff_vae.hub.model_card.write_card_files`); returns its path."""

    def render(image_name: Optional[str]) -> str:
        return render_pipeline_card(pipeline, metrics, training_args, image_name, **render_kwargs)

    return write_card_files(folder, render, sample_image)
