"""The model card that goes with every saved or pushed RadioVAE.

The template is ``radiodiff_vae/templates/model_card.md`` (shipped as package data; ``model_card.md`` at the repository
root links to it). It is a Jinja2 template rendered by ``huggingface_hub.ModelCard.from_template``, whose YAML header
comes from a ``ModelCardData`` (library name, tags, datasets, metrics and, when metrics are given, a ``model-index``
with one ``EvalResult`` per metric). The construction pipelines' card (:mod:`radiodiff_vae.pipelines.card`) is
rendered and written with the same helpers (:func:`template_path`, :func:`eval_results`, :func:`write_card_files`,
:func:`metric_values`, :func:`training_rows`, :func:`format_number`).
"""

import argparse
import math
import numbers
import os
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..atomic import atomic_copy, atomic_write_text
from ..data.conventions import RADIOMAPSEER_DB_RANGE
from ..models.presets import PRESETS
from ..errors import InputNotFoundError, InvalidArgumentError, NotAFolderError

TEMPLATE_NAME = "model_card.md"
CARD_FILENAME = "README.md"
LIBRARY_NAME = "radiodiff-vae"
DEFAULT_TAGS = ("radiodiff-vae", "diffusers", "vae", "autoencoder", "vae-gan", "radio-map", "wireless")
DEFAULT_DATASET = "RadioMapSeer"

# Unit shown next to each metric of radiodiff_vae.metrics.compute_metrics (maps in [0, 1]).
METRIC_UNITS = {
    "psnr": "dB",
    "ssim": "-",
    "nmse": "-",
    "rmse": "pixel (maps in [0, 1])",
    "mae": "pixel (maps in [0, 1])",
    "rmse_db": "dB of path gain",
    "mae_db": "dB of path gain",
}

# Config keys shown in the architecture table (the rest is in config.json).
_ARCHITECTURE_KEYS = (
    "block_out_channels",
    "layers_per_block",
    "decoder_layers_per_block",
    "num_downsamples",
    "upsample_type",
    "upsample_position",
    "mid_block_add_attention",
    "norm_num_groups",
    "act_fn",
)
_REQUIRED_CONFIG_KEYS = ("in_channels", "latent_channels", "sample_size", "scaling_factor")

ConfigLike = Union[Mapping[str, Any], Any]  # a mapping or an object with a ``config`` mapping (a RadioVAE)


def template_path(name: str = TEMPLATE_NAME) -> Path:
    """Path of a card template (``radiodiff_vae/templates/<name>``, default the VAE's) inside the installed package."""
    path = Path(str(resources.files("radiodiff_vae") / "templates" / name))
    if not path.is_file():
        raise FileNotFoundError(f"The card template {name} is missing from the installed package: expected {path}.")
    return path


def check_sample_image_name(sample_image: Optional[str]) -> None:
    """The card links the sample figure by a name relative to it: refuse an absolute path or one that leaves it."""
    if sample_image is not None and (os.path.isabs(sample_image) or ".." in Path(sample_image).parts):
        raise InvalidArgumentError(
            f"sample_image must be a file name relative to the card (e.g. 'sample.png'), got {sample_image!r}."
        )


def eval_results(
    values: Mapping[str, float], task_name: str, dataset: str, split: Optional[str]
) -> Optional[List[EvalResult]]:
    """The card's ``model-index``: one image-to-image ``EvalResult`` per ``{metric: value}`` (None when empty)."""
    results = [
        EvalResult(
            task_type="image-to-image",
            task_name=task_name,
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=split,
            metric_type=name,
            metric_name=name.upper().replace("_DB", " (dB)"),
            metric_value=value,
        )
        for name, value in values.items()
    ]
    return results or None


def render_model_card(
    config: ConfigLike,
    training_args: Optional[Union[Mapping[str, Any], argparse.Namespace]] = None,
    metrics: Optional[Mapping[str, Any]] = None,
    sample_image: Optional[str] = None,
    *,
    repo_id: Optional[str] = None,
    model_name: Optional[str] = None,
    description: Optional[str] = None,
    num_parameters: Optional[int] = None,
    eval_dataset: Optional[str] = None,
    eval_split: Optional[str] = None,
    baseline: Optional[Mapping[str, Any]] = None,
    license: Optional[str] = "apache-2.0",
) -> str:
    """Renders the model card (``README.md`` text with its YAML header) of a RadioVAE.

    Args:
        config (`Mapping` or `RadioVAE`): the model's config (``vae.config`` or the model itself, which also gives the
            parameter count).
        training_args (`Mapping` or `argparse.Namespace`, *optional*): the training script's arguments; scalars,
            strings and short lists are listed, anything whose name contains ``token`` is never written. A
            ``db_range`` entry replaces RadioMapSeer's pixel-to-dB mapping in the card.
        metrics (`Mapping[str, float]`, *optional*): ``{name: value}``; a value may also be a tensor of per-image
            scores (averaged here) or a ``summarize_metrics`` entry (its ``"mean"`` is used).
        sample_image (`str`, *optional*): file name of the sample figure, relative to the card.
        repo_id (`str`, *optional*): where the model lives, used in the loading snippet.
        model_name (`str`, *optional*): title of the card; defaults to the repository name.
        description (`str`, *optional*): a paragraph added after the standard description.
        num_parameters (`int`, *optional*): overrides the parameter count taken from a model.
        eval_dataset / eval_split (`str`, *optional*): what the metrics were measured on; default to the training
            arguments' ``dataset_name`` (or RadioMapSeer) and ``eval_split``/``split_scheme``.
        baseline (`Mapping`, *optional*): the resize baseline on the same maps (``radiodiff_vae.baseline``): a
            ``"method"`` string and metric values as in ``metrics`` (``metrics.json``'s ``baseline`` block works);
            shown beside the model's metrics with the PSNR gap. Not part of the model-index.
        license (`str`, *optional*, defaults to `"apache-2.0"`): the license of the weights.

    Returns:
        `str`: the card, starting with ``---`` and the metadata block.
    """
    model_config, parameter_count = _read_config(config)
    if num_parameters is not None:
        parameter_count = int(num_parameters)
    training = training_rows(training_args)
    training_map = dict(_as_mapping(training_args))
    scores = metric_values(metrics)
    baseline_method, baseline_values = _baseline_values(baseline)
    check_sample_image_name(sample_image)

    model_name = model_name or (repo_id.split("/")[-1] if repo_id else "RadioDiff VAE")
    repo_id = repo_id or "<user>/<model>"  # a placeholder in the loading snippet of a card saved locally
    dataset = eval_dataset or str(training_map.get("dataset_name") or DEFAULT_DATASET)
    split = eval_split or training_map.get("eval_split") or training_map.get("split_scheme")
    db_low, db_high = _db_range(training_map.get("db_range"))

    card_data = ModelCardData(
        model_name=model_name,
        library_name=LIBRARY_NAME,
        license=license,
        tags=list(DEFAULT_TAGS),
        datasets=[dataset],
        metrics=sorted(scores) or ["psnr", "ssim", "nmse", "rmse"],
        pipeline_tag="image-to-image",
        eval_results=eval_results(scores, "Radio map reconstruction", dataset, str(split) if split else None),
    )

    factor = 2 ** int(model_config.get("num_downsamples", 3))
    size = int(model_config["sample_size"])
    latent_channels = int(model_config["latent_channels"])
    in_channels = int(model_config["in_channels"])
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        model_name=model_name,
        repo_id=repo_id,
        description=description,
        preset=_preset_name(model_config),
        in_channels=in_channels,
        latent_channels=latent_channels,
        downsample_factor=factor,
        sample_size=size,
        latent_shape=f"{latent_channels} x {size // factor} x {size // factor}",
        compression=format_number(factor * factor * in_channels / latent_channels),
        num_parameters=f"{parameter_count / 1e6:.2f} M" if parameter_count is not None else "see config.json",
        scaling_factor=format_number(float(model_config["scaling_factor"])),
        architecture=[(key, _format_value(model_config[key])) for key in _ARCHITECTURE_KEYS if key in model_config],
        db_low=format_number(db_low),
        db_high=format_number(db_high),
        training=training,
        metrics=[
            (
                name,
                format_number(value),
                format_number(baseline_values[name]) if name in baseline_values else "",
                METRIC_UNITS.get(name, ""),
            )
            for name, value in scores.items()
        ],
        baseline_method=baseline_method if baseline_values else None,
        psnr_gap=(
            f"{scores['psnr'] - baseline_values['psnr']:+.2f}"
            if "psnr" in scores and "psnr" in baseline_values
            else None
        ),
        eval_dataset=dataset if scores else None,
        eval_split=split if scores else None,
        sample_image=sample_image,
    )
    return str(card)


def save_model_card(
    folder: Union[str, os.PathLike],
    config: ConfigLike,
    training_args: Optional[Union[Mapping[str, Any], argparse.Namespace]] = None,
    metrics: Optional[Mapping[str, Any]] = None,
    sample_image: Optional[Union[str, os.PathLike]] = None,
    **render_kwargs: Any,
) -> Path:
    """Writes ``README.md`` (and a copy of the sample figure) into a ``save_pretrained`` folder.

    ``sample_image`` is a path to an image file; it is copied next to the card (keeping its file name) unless it is
    already there. Both files are written atomically (:func:`write_card_files`). Returns the path of the card.
    """

    def render(image_name: Optional[str]) -> str:
        return render_model_card(config, training_args, metrics, image_name, **render_kwargs)

    return write_card_files(folder, render, sample_image)


def write_card_files(
    folder: Union[str, os.PathLike],
    render: Callable[[Optional[str]], str],
    sample_image: Optional[Union[str, os.PathLike]] = None,
) -> Path:
    """Writes a card into an existing ``save_pretrained`` folder: ``README.md`` and a copy of ``sample_image``.

    Args:
        render: the card's text given the sample figure's file name (None without one).
        sample_image: an image file, copied next to the card under its own name unless it is already there.

    The card is rendered before anything is written, so a bad argument leaves the folder as it was; both files are
    written atomically. Returns the path of the card.

    Raises:
        NotAFolderError: ``folder`` is not an existing folder.
        InputNotFoundError: ``sample_image`` is not a file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotAFolderError(f"save_model_card needs an existing folder (a save_pretrained output), got {folder}.")
    image_name = None
    if sample_image is not None:
        source = Path(sample_image)
        if not source.is_file():
            raise InputNotFoundError(f"Sample figure {source} does not exist; expected an image file (e.g. a PNG).")
        image_name = source.name
    text = render(image_name)  # first: a bad argument fails before anything is written
    if sample_image is not None and source.resolve() != (folder / image_name).resolve():
        atomic_copy(source, folder / image_name)
    card_path = folder / CARD_FILENAME
    atomic_write_text(card_path, text)
    return card_path


# ------------------------------------------------------------------------------------------------------------------
def _read_config(config: ConfigLike) -> Tuple[Dict[str, Any], Optional[int]]:
    parameter_count = None
    if hasattr(config, "config") and hasattr(config, "parameters"):
        parameter_count = sum(parameter.numel() for parameter in config.parameters())
        config = config.config
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a RadioVAE or its config mapping, got {type(config).__name__}.")
    missing = [key for key in _REQUIRED_CONFIG_KEYS if key not in config]
    if missing:
        raise ValueError(
            f"config is missing {missing}: expected a RadioVAE config with keys {list(_REQUIRED_CONFIG_KEYS)}."
        )
    return dict(config), parameter_count


def _preset_name(config: Mapping[str, Any]) -> str:
    """The name of the preset whose architecture keys all equal the config's, else ``"custom"``.

    ``sample_size`` is left out: it records the training resolution, not the architecture.
    """
    for name, preset in PRESETS.items():
        architecture = {key: value for key, value in preset.items() if key != "sample_size"}
        if all(_normalise(config.get(key)) == _normalise(value) for key, value in architecture.items()):
            return name
    return "custom"


def _db_range(value: Any) -> Tuple[float, float]:
    """The training arguments' ``db_range`` (path gain in dB at pixel 0 and 1), else RadioMapSeer's."""
    if value is None:
        return RADIOMAPSEER_DB_RANGE
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not float(value[1]) > float(value[0]):
        raise InvalidArgumentError(
            f"training_args['db_range'] must be (dB at pixel 0, dB at pixel 1), low < high; got {value!r}."
        )
    return float(value[0]), float(value[1])


def _normalise(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _as_mapping(arguments: Optional[Union[Mapping[str, Any], argparse.Namespace]]) -> Mapping[str, Any]:
    if arguments is None:
        return {}
    if isinstance(arguments, argparse.Namespace):
        return vars(arguments)
    if isinstance(arguments, Mapping):
        return arguments
    raise ValueError(f"training_args must be a mapping or an argparse.Namespace, got {type(arguments).__name__}.")


def training_rows(arguments: Optional[Union[Mapping[str, Any], argparse.Namespace]]) -> List[Tuple[str, str]]:
    """``(name, value)`` rows of the training arguments for a card: scalars and short lists; secrets left out."""
    rows = []
    for name, value in sorted(_as_mapping(arguments).items()):
        # Secrets never go into a public card; callables and objects say nothing useful.
        if "token" in name.lower() or name.startswith("_"):
            continue
        if isinstance(value, (str, bool, numbers.Number, os.PathLike)) or value is None:
            rows.append((name, _format_value(value)))
        elif isinstance(value, (list, tuple)) and len(value) <= 16:
            rows.append((name, _format_value(value)))
    return rows


def metric_values(metrics: Optional[Mapping[str, Any]]) -> Dict[str, float]:
    """``{name: float}`` of metrics given as numbers, tensors of per-image scores (averaged) or summaries (``mean``)."""
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise ValueError(f"metrics must be a mapping {{name: value}}, got {type(metrics).__name__}.")
    values = {}
    for name, value in metrics.items():
        if isinstance(value, Mapping):
            if "mean" not in value:
                raise ValueError(f"metrics[{name!r}] is a mapping without 'mean' (a summarize_metrics entry has one).")
            value = value["mean"]
        if hasattr(value, "float") and hasattr(value, "numel"):  # a tensor of per-image scores
            value = value.float().mean().item()
        try:
            values[str(name)] = float(value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"metrics[{name!r}] must be a number, got {value!r}.") from error
    return values


def _baseline_values(baseline: Optional[Mapping[str, Any]]) -> Tuple[Optional[str], Dict[str, float]]:
    """``(method, {metric: value})`` of a baseline mapping; only the metrics' own names are kept."""
    if baseline is None:
        return None, {}
    if not isinstance(baseline, Mapping):
        raise ValueError(f"baseline must be a mapping with 'method' and metric values, got {type(baseline).__name__}.")
    method = baseline.get("method")
    if not isinstance(method, str) or not method:
        raise ValueError(f"baseline needs a 'method' string (e.g. 'area-resize to 14x14 ...'), got {method!r}.")
    values = metric_values({name: value for name, value in baseline.items() if name in METRIC_UNITS})
    return method, values


def format_number(value: float) -> str:
    """A number for a card: an integer as such, else four significant digits."""
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def _format_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_format_value(item) for item in value) + ")"
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, numbers.Real):
        return format_number(value)
    return str(value).replace("|", "/")  # a pipe would break the markdown table

