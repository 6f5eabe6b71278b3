"""The model card of a construction pipeline (``README.md`` of its folder or Hub repository) and its Hub upload.

The template is ``radiodiff_vae/templates/pipeline_card.md``, rendered by ``huggingface_hub.ModelCard.from_template``
as the VAE's card is (:mod:`radiodiff_vae.hub.model_card`, whose metric and argument helpers it reuses). The card
states the construction metrics of ``radiodiff-vae evaluate-construction``: one row per method (``pipeline``,
``ceiling``, ``log_distance``, ``direct``), and a ``model-index`` with the pipeline's own.
"""

import argparse
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from huggingface_hub import CommitInfo, EvalResult, HfApi, ModelCard, ModelCardData

from ..atomic import atomic_copy, atomic_write_text
from ..data.conventions import RADIOMAPSEER_DB_RANGE
from ..errors import InputNotFoundError, InvalidArgumentError
from ..hub.model_card import CARD_FILENAME, LIBRARY_NAME, METRIC_UNITS, _format_number, _metric_values, _training_rows
from ..hub_id import check_repo_id

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


def template_path() -> Path:
    path = Path(str(resources.files("radiodiff_vae") / "templates" / TEMPLATE_NAME))
    if not path.is_file():
        raise FileNotFoundError(f"The pipeline-card template is missing from the installed package: expected {path}.")
    return path


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
        return {"pipeline": _metric_values(flat)}
    methods = {}
    for method, values in metrics.items():
        if isinstance(values, Mapping):
            known = _metric_values({name: value for name, value in values.items() if name in METRIC_UNITS})
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
    if sample_image is not None and (os.path.isabs(sample_image) or ".." in Path(sample_image).parts):
        raise InvalidArgumentError(f"sample_image must be a file name relative to the card, got {sample_image!r}")
    diffusion = "vae" in pipeline.components
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else type(pipeline).__name__)
    repo_id = repo_id or "<user>/<model>"
    dataset = eval_dataset or "synthetic radio maps"
    names = [name for name in METRIC_ORDER if any(name in values for values in methods.values())]
    ordered = [method for method in METHOD_LABELS if method in methods] + [m for m in methods if m not in METHOD_LABELS]
    rows = []
    for method in ordered:
        values = methods[method]
        cells = [_format_number(values[name]) if name in values else "" for name in names]
        rows.append((METHOD_LABELS.get(method, method), cells))
    own = methods.get("pipeline", {})
    eval_results = [
        EvalResult(
            task_type="image-to-image",
            task_name="Radio map construction",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=eval_split,
            metric_type=name,
            metric_name=name.upper().replace("_DB", " (dB)"),
            metric_value=value,
        )
        for name, value in own.items()
    ] or None
    card_data = ModelCardData(
        model_name=model_name,
        library_name=LIBRARY_NAME,
        license=license,
        tags=list(DEFAULT_TAGS) + (["latent-diffusion"] if diffusion else []),
        metrics=names or ["nmse", "rmse", "psnr", "ssim"],
        pipeline_tag="image-to-image",
        eval_results=eval_results,
    )
    sample_size = int(pipeline.unet.config.sample_size or 64)
    scheduler = getattr(pipeline, "scheduler", None)
    if diffusion:
        sample_size *= pipeline.vae.downsample_factor
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        model_name=model_name,
        repo_id=repo_id,
        description=description,
        diffusion=diffusion,
        pipeline_class=type(pipeline).__name__,
        components=_component_rows(pipeline),
        scaling_factor=_format_number(float(pipeline.vae.config.scaling_factor)) if diffusion else None,
        default_steps=pipeline.config.get("default_num_inference_steps") if diffusion else None,
        scheduler=type(scheduler).__name__ if scheduler is not None else None,
        prediction_type=scheduler.config.get("prediction_type") if scheduler is not None else None,
        size_divisor=pipeline.size_divisor,
        sample_size=sample_size,
        db_low=_format_number(RADIOMAPSEER_DB_RANGE[0]),
        db_high=_format_number(RADIOMAPSEER_DB_RANGE[1]),
        training=_training_rows(training_args),
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
    """Writes ``README.md`` (and a copy of the sample figure) into a pipeline folder, atomically; returns its path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputNotFoundError(f"save_model_card needs an existing folder (a save_pretrained output), got {folder}")
    image_name = None
    if sample_image is not None:
        if not Path(sample_image).is_file():
            raise InputNotFoundError(f"sample figure {sample_image} does not exist; expected an image file")
        image_name = Path(sample_image).name
    text = render_pipeline_card(pipeline, metrics, training_args, image_name, **render_kwargs)  # fails before writing
    if image_name is not None and Path(sample_image).resolve() != (folder / image_name).resolve():
        atomic_copy(sample_image, folder / image_name)
    atomic_write_text(folder / CARD_FILENAME, text)
    return folder / CARD_FILENAME


def push_pipeline_to_hub(
    pipeline: Any,
    repo_id: str,
    commit_message: Optional[str] = None,
    private: Optional[bool] = None,
    token: Optional[Union[str, bool]] = None,
    create_pr: bool = False,
    safe_serialization: bool = True,
    variant: Optional[str] = None,
    *,
    metrics: Optional[Mapping[str, Any]] = None,
    training_args: ArgumentsLike = None,
    sample_image: Optional[Union[str, os.PathLike]] = None,
    **card_kwargs: Any,
) -> CommitInfo:
    """Uploads the pipeline folder (``save_pretrained``) with its card in one commit, as ``RadioVAE.push_to_hub``
    does: the repository is created (public unless ``private``) if needed, the endpoint is ``HF_ENDPOINT``. Returns
    the commit (``.oid`` pins the revision)."""
    check_repo_id(repo_id)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="radiodiff-pipeline-push-") as staging:
        pipeline.save_pretrained(staging, safe_serialization=safe_serialization, variant=variant)

        def write_card(name: str) -> None:
            save_pipeline_card(staging, pipeline, metrics, training_args, sample_image, repo_id=name, **card_kwargs)

        write_card(repo_id)  # bad card arguments fail here, before any request
        full_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if full_id != repo_id:
            write_card(full_id)  # "name" became "user/name": the card's loading snippet names the full id
        return api.upload_folder(
            repo_id=full_id,
            folder_path=staging,
            commit_message=commit_message or f"Upload {type(pipeline).__name__}",
            create_pr=create_pr,
        )
