"""Scoring radio-map construction (a city in, a radio map out) against the field's baselines, on the same maps.

``radiodiff-vae evaluate-construction`` calls :func:`evaluate_construction` and writes its result with
:func:`save_construction`. Every method predicts each test map from its city (building mask + transmitter), and each
prediction is scored against the true map on the ``[0, 1]`` scale over **all** pixels, as RadioMapSeer papers report
(``radiodiff_vae.metrics.compute_metrics``):

* ``pipeline``: the :class:`~radiodiff_vae.RadioDiffPipeline` at ``num_inference_steps``;
* ``ceiling``: the pipeline's own VAE reconstructing the true map (posterior mean, decoded, building pixels set to 0
  as the pipelines set them): the map the pipeline's target latent decodes to, the reference a construction through
  this latent is trained to reach;
* ``log_distance``: :class:`~radiodiff_vae.baseline.LogDistanceFit`, ``a + b log10 d`` dB fitted on training maps;
* ``direct`` (when given): a :class:`~radiodiff_vae.RadioUNetPipeline`, a RadioUNet-style predictor in pixel space.

Timing: maps per second of the pipeline (and the direct predictor) over every batch but the first (which pays
one-time costs), the models' calls only, synchronised on CUDA.

Example::

    from radiodiff_vae import RadioDiffPipeline
    from radiodiff_vae.data import SyntheticRadioMaps
    from radiodiff_vae.evaluation.construction import evaluate_construction, save_construction

    pipe = RadioDiffPipeline.from_pretrained("my-radiodiff")
    result = evaluate_construction(
        pipe, SyntheticRadioMaps(16, 4, first_map_id=10001, resolution=64),
        train_dataset_for_fit=SyntheticRadioMaps(128, 4, resolution=64), num_inference_steps=1,
    )
    print(result.table)
    save_construction(result, "eval-construction")  # metrics.json, metrics.md, per_map.csv, examples.png
"""

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from diffusers.utils import logging as diffusers_logging
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..baseline import LogDistanceFit
from ..data.batches import spread_indices
from ..data.conventions import RADIOMAPSEER_DB_RANGE, model_to_unit, unit_to_db
from ..errors import DataError, InputNotFoundError, InvalidArgumentError, ModelFileError, NotAFolderError
from ..hub_id import local_path_or_hub_id
from ..metrics import summarize_metrics
from ..models.checks import check_size_divisible
from ..pipelines.common import outside_buildings
from .reporting import (
    FIGURE_FILE,
    METRICS_FILE,
    TABLE_FILE,
    check_output_dir,
    csv_text,
    draw_panel,
    figure_grid,
    figure_png,
    format_number,
    means_table,
    metrics_json,
    write_files,
)
from .scoring import MapScores, reconstruct, score_maps

__all__ = [
    "CONSTRUCTION_OUTPUT_FILES",
    "ConstructionResult",
    "METHODS",
    "SCORES",
    "check_construction_inputs",
    "check_construction_output_dir",
    "evaluate_construction",
    "format_construction_table",
    "load_construction_pipeline",
    "plot_construction_examples",
    "save_construction",
]

# Method names, in the order of the tables; ``direct`` is present when a direct predictor was given.
METHODS: Tuple[str, ...] = ("pipeline", "direct", "log_distance", "ceiling")
# Per-map scores, in the order of per_map.csv's columns; metrics.json holds the mean of each.
SCORES: Tuple[str, ...] = ("nmse", "rmse", "psnr", "ssim", "rmse_db", "mae", "mae_db")
# The columns of metrics.md.
TABLE_SCORES: Tuple[str, ...] = ("nmse", "rmse", "rmse_db", "psnr", "ssim")

# The VAE report's file names (evaluation.reporting), with per_map.csv in place of per_image.csv.
PER_MAP_FILE = "per_map.csv"
CONSTRUCTION_OUTPUT_FILES = (METRICS_FILE, TABLE_FILE, PER_MAP_FILE, FIGURE_FILE)

_LABELS = {
    "pipeline": "pipeline",
    "direct": "direct (RadioUNet-style)",
    "log_distance": "log-distance fit",
    "ceiling": "ceiling (VAE reconstruction of the truth)",
}


@dataclass
class ConstructionResult:
    """What :func:`evaluate_construction` measured on ``N`` maps.

    Args:
        metrics (`Dict[str, Any]`): the content of ``metrics.json``: one block per method (``pipeline``,
            ``direct`` when given, ``log_distance``, ``ceiling``) with the means of :data:`SCORES`, ``num_maps``,
            ``summary`` (mean, std, percentiles of each score) and what the method is; and ``methods``,
            ``num_maps``, ``num_inference_steps``, ``data``, ``pixels``, ``db_range``, ``settings``.
        per_map (`Dict[str, Dict[str, torch.Tensor]]`): ``{method: {score: (N,) float64}}``, in ``names`` order.
        names (`List[str]`): map names, e.g. ``"12_3"``.
        simulations (`List[str]`): each map's simulation.
        indices (`List[int]`): each map's index in the dataset that was passed in.
        table (`str`): ``metrics.md``.
        figure: the matplotlib figure of example maps (None when not drawn).
    """

    metrics: Dict[str, Any]
    per_map: Dict[str, Dict[str, torch.Tensor]]
    names: List[str]
    simulations: List[str]
    indices: List[int]
    table: str = ""
    figure: Any = field(default=None, repr=False)


# ----------------------------------------------------------------------------------------------------------------
# what is evaluated
def load_construction_pipeline(
    name_or_path: Union[str, os.PathLike],
    class_name: str = "RadioDiffPipeline",
    device: Union[str, torch.device, None] = None,
    dtype: Optional[torch.dtype] = None,
    what: str = "PIPELINE",
) -> Any:
    """``from_pretrained`` of a construction pipeline folder (``save_pretrained``) or Hub id, checked first.

    Args:
        name_or_path: the folder or Hub id.
        class_name (`str`): ``"RadioDiffPipeline"`` or ``"RadioUNetPipeline"``.
        device, dtype: where and in what the weights go (None: cpu, float32).
        what (`str`): how to name it in messages (``"PIPELINE"``, ``"--direct_model"``).

    Raises:
        InputNotFoundError: no such folder, and not a Hub id; or a Hub id that cannot be loaded.
        NotAFolderError: a file.
        ModelFileError: a folder without ``model_index.json`` (e.g. a VAE folder), or one of another class.
    """
    import radiodiff_vae

    pipeline_class = getattr(radiodiff_vae, class_name)
    path = local_path_or_hub_id(name_or_path, what)
    if path is not None:
        if not path.is_dir():
            raise NotAFolderError(f"{what} {path} is a file; expected a {class_name} folder written by save_pretrained")
        index_file = path / "model_index.json"
        if not index_file.is_file():
            single = (path / "config.json").is_file()
            hint = " (it holds a config.json: a single model such as a VAE?)" if single else ""
            raise ModelFileError(
                f"{what} {path} is not a pipeline folder: no model_index.json{hint}; expected a {class_name} folder "
                "written by save_pretrained"
            )
        try:
            found = json.loads(index_file.read_text(encoding="utf-8")).get("_class_name")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
            raise ModelFileError(f"{what} {index_file} is not a JSON object ({error})") from error
        if found != class_name:
            raise ModelFileError(f"{what} {path} holds a {found} (model_index.json); expected a {class_name}")
    # float32 is what the weights load as anyway; naming it would only add diffusers' deprecation of torch_dtype.
    kwargs = {"torch_dtype": dtype} if dtype not in (None, torch.float32) else {}
    bar_was_on = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()  # "Loading pipeline components" would come before a one-line error
    try:
        pipeline = pipeline_class.from_pretrained(os.fspath(name_or_path), **kwargs)
    except OSError as error:
        if path is not None:
            raise
        # huggingface_hub's messages run over several lines; the first one names the cause.
        cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputNotFoundError(
            f"{what} {os.fspath(name_or_path)!r} is neither a local folder nor a loadable Hub repository ({cause})"
        ) from error
    finally:
        if bar_was_on:
            diffusers_logging.enable_progress_bar()
    return pipeline.to(device) if device is not None else pipeline


def check_construction_inputs(pipeline: Any, dataset: Dataset, direct: Any = None) -> Tuple[int, int]:
    """Every check that needs no prediction: the items hold a city, one-channel maps, a size the pipeline (and the
    direct predictor) divides. Reads the first item only. Returns the map size ``(H, W)``.

    Raises:
        DataError: an empty dataset, or items without ``pixel_values``, ``buildings`` or ``transmitter``.
        InvalidArgumentError: maps of several channels, or a map size the pipeline's ``size_divisor`` (the VAE's
            factor times its UNet's) does not divide.
    """
    if len(dataset) == 0:
        raise DataError("the dataset to evaluate is empty")
    first = dataset[0]
    missing = [key for key in ("pixel_values", "buildings", "transmitter") if key not in first]
    if missing:
        raise DataError(
            f"construction needs items with pixel_values, buildings and transmitter; the data's lack {missing}"
        )
    channels, height, width = first["pixel_values"].shape
    if channels != 1:
        raise InvalidArgumentError(
            f"construction scores one-channel radio maps, got maps of shape {(channels, height, width)}"
        )
    for name, model in (("the pipeline's", pipeline), ("the direct model's", direct)):
        if model is not None:
            check_size_divisible(height, width, int(model.size_divisor), "the map size of the data", owner=name)
    return int(height), int(width)


def _check_numbers(batch_size: int, max_maps: Optional[int], steps: Any, num_examples: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    if max_maps is not None and (not isinstance(max_maps, int) or max_maps < 1):
        raise InvalidArgumentError(f"max_maps must be a positive integer or None, got {max_maps!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise InvalidArgumentError(f"num_inference_steps must be a positive integer or None, got {steps!r}")
    if num_examples < 0:
        raise InvalidArgumentError(f"num_examples must be 0 or more, got {num_examples}")


def _default_steps(pipeline: Any) -> Optional[int]:
    """The steps a pipeline takes when not told (``default_num_inference_steps`` of its config)."""
    steps = getattr(getattr(pipeline, "config", None), "default_num_inference_steps", None)
    return int(steps) if steps is not None else None


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------------------------
# the evaluation job
def evaluate_construction(
    pipeline: Any,
    dataset: Dataset,
    *,
    train_dataset_for_fit: Optional[Dataset] = None,
    log_distance: Optional[LogDistanceFit] = None,
    fit_maps: Optional[int] = 512,
    direct: Any = None,
    num_inference_steps: Optional[int] = None,
    batch_size: int = 8,
    seed: int = 0,
    device: Union[str, torch.device, None] = None,
    max_maps: Optional[int] = None,
    db_range: Tuple[float, float] = RADIOMAPSEER_DB_RANGE,
    num_examples: int = 4,
    draw_figure: bool = True,
    progress: bool = True,
    settings: Optional[Mapping[str, Any]] = None,
) -> ConstructionResult:
    """Construct every map of ``dataset`` from its city with each method and score it against the true map.

    Args:
        pipeline (`RadioDiffPipeline`): the latent-diffusion pipeline (its ``vae`` gives the ceiling).
        dataset: items with ``pixel_values`` `(1, H, W)` in ``[-1, 1]``, ``buildings`` and ``transmitter``
            `(1, H, W)`, and optionally ``name`` and ``simulation`` (any source of ``radiodiff_vae.data``).
        train_dataset_for_fit: the maps the log-distance line is fitted on (the training split of the same source).
        log_distance (`LogDistanceFit`, *optional*): a fit made already (then ``train_dataset_for_fit`` is not read).
        fit_maps (`int`, *optional*, defaults to 512): fit on this many training maps spread over the set (None: all).
        direct (`RadioUNetPipeline`, *optional*): the direct predictor, scored as ``direct``.
        num_inference_steps (`int`, *optional*): the pipeline's sampling steps (None: its
            ``default_num_inference_steps``).
        batch_size (`int`, defaults to 8): maps per call.
        seed (`int`, defaults to 0): seeds the one CPU generator the pipeline draws its noise from, batch after batch
            (the same maps, batch size and seed give the same constructions on any device).
        device: where the models run (None: where the pipeline is).
        max_maps (`int`, *optional*): score this many maps spread over ``dataset`` (None: all).
        db_range (`Tuple[float, float]`): (dB at 0, dB at 1) of the maps, for ``rmse_db``, ``mae_db`` and the figure.
        num_examples (`int`, defaults to 4): rows of the figure, maps spread over the evaluated ones.
        draw_figure (`bool`, defaults to True): draw the figure (``examples.png``).
        progress (`bool`, defaults to True): progress bars over batches.
        settings: recorded under ``metrics["settings"]``; its ``data`` (one line naming the maps) goes to
            ``metrics["data"]``.

    Returns:
        A :class:`ConstructionResult`.

    Raises:
        DataError, InvalidArgumentError: bad numbers, items without a city, a map size the pipeline does not divide,
            neither a fit nor maps to fit on; all before any prediction.
    """
    _check_numbers(batch_size, max_maps, num_inference_steps, num_examples)
    check_construction_inputs(pipeline, dataset, direct)
    if log_distance is None and train_dataset_for_fit is None:
        raise InvalidArgumentError(
            "the log-distance baseline needs train_dataset_for_fit (training maps) or a fitted log_distance"
        )
    device = torch.device(device) if device is not None else pipeline.device
    pipeline.to(device)
    if direct is not None:
        direct.to(device)
    steps = num_inference_steps if num_inference_steps is not None else _default_steps(pipeline)
    settings = dict(settings or {})
    if log_distance is None:
        log_distance = LogDistanceFit.from_dataset(
            train_dataset_for_fit, batch_size=max(batch_size, 32), max_maps=fit_maps, db_range=db_range,
            progress=progress,
        )  # fmt: skip

    indices = spread_indices(len(dataset), max_maps) if max_maps is not None else list(range(len(dataset)))
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False)
    examples = set(spread_indices(len(indices), num_examples)) if draw_figure else set()
    generator = torch.Generator().manual_seed(seed)  # on the CPU, so that a seed gives the same noise on any device
    pipe_kwargs: Dict[str, Any] = {"num_inference_steps": steps} if steps is not None else {}
    methods = ["pipeline"] + (["direct"] if direct is not None else []) + ["log_distance", "ceiling"]
    timed = {"pipeline": 0.0, "direct": 0.0}
    timed_maps = 0
    scores = MapScores()
    shown: List[Dict[str, Any]] = []
    # The pipelines' own bars (one per call, over sampling steps) would bury the bar over batches.
    models = [model for model in (pipeline, direct) if model is not None]
    bar_configs = [(model, dict(getattr(model, "_progress_bar_config", {}))) for model in models]
    for model, _ in bar_configs:
        model.set_progress_bar_config(disable=True)
    try:
        position = 0
        for batch_number, batch in enumerate(tqdm(loader, desc="construction", unit="batch", disable=not progress)):
            pixel_values = batch["pixel_values"].to(device, torch.float32)  # (B, 1, H, W) in [-1, 1]
            buildings = batch["buildings"].to(device, torch.float32)  # (B, 1, H, W) in {0, 1}
            transmitter = batch["transmitter"].to(device, torch.float32)  # (B, 1, H, W) one-hot
            count = pixel_values.shape[0]
            truth = model_to_unit(pixel_values.clamp(-1, 1))  # (B, 1, H, W) in [0, 1]
            # The first batch pays one-time costs (allocation, kernel choice): it is timed only when it is the one.
            timing = batch_number > 0 or len(loader) == 1
            outputs: Dict[str, torch.Tensor] = {}
            for method, model, kwargs in (
                ("pipeline", pipeline, {"generator": generator, **pipe_kwargs}),
                ("direct", direct, {}),
            ):
                if model is None:
                    continue
                _synchronize(device)
                start = time.perf_counter()
                images = model(buildings, transmitter, output_type="pt", **kwargs).images  # (B, 1, H, W) in [0, 1]
                _synchronize(device)
                if timing:
                    timed[method] += time.perf_counter() - start
                outputs[method] = images.to(device, torch.float32)
            timed_maps += count if timing else 0
            outputs["log_distance"] = log_distance.predict(buildings, transmitter).to(device)
            ceiling = model_to_unit(reconstruct(pipeline.vae, pixel_values).clamp(-1, 1))
            outputs["ceiling"] = outside_buildings(ceiling, buildings)  # the pipelines' own rule for known buildings

            scores.add_maps(batch, indices[position : position + count])
            for method in methods:
                scores.add(method, score_maps(outputs[method], truth, db_range=db_range))
            for row in range(count):
                if position + row in examples:
                    shown.append(
                        {
                            "position": position + row,
                            "buildings": buildings[row, 0].cpu(),
                            "transmitter": transmitter[row, 0].cpu(),
                            "truth": truth[row, 0].cpu(),
                            **{method: outputs[method][row, 0].clamp(0, 1).cpu() for method in methods},
                        }
                    )
            position += count
    finally:
        for model, config in bar_configs:
            model._progress_bar_config = config

    per_map = {method: scores.per_image(method) for method in methods}
    metrics: Dict[str, Any] = {
        method: _method_block(method, per_map[method], steps, timed, timed_maps, log_distance, pipeline, direct)
        for method in methods
    }
    metrics.update(
        {
            "methods": methods,
            "num_maps": len(scores.names),
            "num_inference_steps": steps,
            "data": settings.pop("data", None),
            "pixels": "all",
            "db_range": [float(value) for value in db_range],
            "settings": {"batch_size": batch_size, "seed": seed, "device": str(device), **settings},
        }
    )
    result = ConstructionResult(
        metrics=metrics, per_map=per_map, names=scores.names, simulations=scores.simulations, indices=scores.indices
    )
    result.table = format_construction_table(result)
    if shown:
        result.figure = plot_construction_examples(shown, result, db_range)
    return result


def _method_block(
    method: str,
    per_map: Mapping[str, torch.Tensor],
    steps: Optional[int],
    timed: Mapping[str, float],
    timed_maps: int,
    log_distance: LogDistanceFit,
    pipeline: Any,
    direct: Any,
) -> Dict[str, Any]:
    """``metrics.json``'s block of one method: the means of the scores, what the method is, their full summaries."""
    summary = summarize_metrics({name: per_map[name] for name in SCORES})
    block: Dict[str, Any] = {name: summary[name]["mean"] for name in SCORES}
    block["num_maps"] = int(per_map["rmse"].numel())
    if method in ("pipeline", "direct"):
        seconds = timed[method]
        block.update(
            {
                "maps_per_second": timed_maps / seconds if seconds > 0 else math.nan,
                "timed_maps": timed_maps,
                "timed_seconds": seconds,
            }
        )
    if method == "pipeline":
        block["num_inference_steps"] = steps
        block["scheduler"] = type(getattr(pipeline, "scheduler", None)).__name__
    elif method == "direct":
        block["model"] = type(direct).__name__
    elif method == "log_distance":
        block["fit"] = log_distance.to_dict()
        block["description"] = log_distance.describe()
    elif method == "ceiling":
        block["description"] = "the pipeline's VAE: posterior mean of the true map, decoded"
    block["summary"] = summary
    return block


# ----------------------------------------------------------------------------------------------------------------
# reporting
def _method_label(method: str, metrics: Mapping[str, Any]) -> str:
    steps = metrics.get("num_inference_steps")
    if method == "pipeline" and steps is not None:
        return f"pipeline ({steps} step{'' if steps == 1 else 's'})"
    return _LABELS[method]


def format_construction_table(result: ConstructionResult) -> str:
    """``metrics.md``: one row per method with the mean scores and, for the learned predictors, maps per second."""
    metrics = result.metrics
    data = f" of {metrics['data']}" if metrics.get("data") else ""
    db_low, db_high = metrics["db_range"]
    rows = []
    for method in metrics["methods"]:
        block = metrics[method]
        rate = block.get("maps_per_second")
        rate_text = format_number(rate) if rate is not None and math.isfinite(rate) else "-"
        rows.append(((_method_label(method, metrics), rate_text), block["summary"]))
    lines = [
        f"Construction of {metrics['num_maps']} maps{data}: means over maps, all pixels, on the [0, 1] scale "
        f"({db_low:g} dB at 0, {db_high:g} dB at 1: RMSE in dB = RMSE x {db_high - db_low:g}); maps/s on "
        f"{metrics['settings'].get('device', '?')}, first batch left out.",
        "",
        *means_table(rows, TABLE_SCORES, columns=("method", "maps/s")),
        "",
        f"log-distance fit: {metrics['log_distance']['description']}.",
    ]
    return "\n".join(lines) + "\n"


def plot_construction_examples(
    shown: Sequence[Mapping[str, Any]], result: ConstructionResult, db_range: Tuple[float, float]
) -> Any:
    """Figure, one row per example map: city (buildings black, transmitter a red x) | truth | pipeline | direct (when
    scored) | log_distance | pipeline - truth in dB. Gain panels share the data's dB range; titles give each map's
    RMSE in dB. Returns a matplotlib ``Figure`` (drawn without a display)."""
    methods = [method for method in ("pipeline", "direct", "log_distance") if method in result.per_map]
    columns = 3 + len(methods)
    figure, axes = figure_grid(len(shown), columns, (2.9 * columns, 2.7 * len(shown)))
    db_low, db_high = db_range
    steps = result.metrics.get("num_inference_steps")
    for row, example in enumerate(shown):
        position = example["position"]
        truth_db = unit_to_db(example["truth"].double(), db_range).numpy()  # (H, W)
        city = example["buildings"].numpy()  # (H, W)
        tx_row, tx_col = np.unravel_index(int(example["transmitter"].argmax()), city.shape)
        simulation = result.simulations[position]
        name = result.names[position] + (f" ({simulation})" if simulation else "")
        panels = [
            (f"{name}: city", city, "Greys", (0, 1)),
            ("truth", truth_db, "viridis", (db_low, db_high)),
        ]
        for method in methods:
            label = f"pipeline, {steps} steps" if method == "pipeline" and steps is not None else method
            rmse_db = float(result.per_map[method]["rmse_db"][position])
            prediction_db = unit_to_db(example[method].double(), db_range).numpy()
            panels.append((f"{label}: RMSE {rmse_db:.2f} dB", prediction_db, "viridis", (db_low, db_high)))
        error = unit_to_db(example["pipeline"].double(), db_range).numpy() - truth_db  # (H, W), signed
        limit = max(float(np.abs(error).max()), 1e-6)
        panels.append(("pipeline - truth", error, "RdBu_r", (-limit, limit)))
        for column, (title, image, colormap, limits) in enumerate(panels):
            draw_panel(figure, axes[row, column], image, title, colormap, limits, None if column == 0 else "dB")
        axes[row, 0].scatter([tx_col], [tx_row], marker="x", s=60, c="red", linewidths=2)  # the transmitter
    return figure


# ----------------------------------------------------------------------------------------------------------------
# the files
def check_construction_output_dir(output_dir: Union[str, os.PathLike], overwrite: bool) -> None:
    """Raise before any work when ``output_dir`` is a file or already holds results (without ``overwrite``):
    :func:`~radiodiff_vae.evaluation.reporting.check_output_dir` for :data:`CONSTRUCTION_OUTPUT_FILES`.

    Raises:
        NotAFolderError: ``output_dir`` is a file.
        OutputExistsError: it holds results already and ``overwrite`` is False.
    """
    check_output_dir(output_dir, overwrite, files=CONSTRUCTION_OUTPUT_FILES, what="--output_dir")


def per_map_csv(result: ConstructionResult) -> str:
    """``per_map.csv``: one row per map and method, ``index, name, simulation, method`` then :data:`SCORES`."""
    maps = enumerate(zip(result.indices, result.names, result.simulations))
    rows = (
        [index, name, simulation, method, *(repr(float(result.per_map[method][score][position])) for score in SCORES)]
        for position, (index, name, simulation) in maps
        for method in result.metrics["methods"]
    )
    return csv_text(["index", "name", "simulation", "method", *SCORES], rows)


def save_construction(
    result: ConstructionResult, output_dir: Union[str, os.PathLike], overwrite: bool = False
) -> Dict[str, Path]:
    """Write ``metrics.json``, ``metrics.md``, ``per_map.csv`` and (when drawn) ``examples.png`` into ``output_dir``.

    Written as the VAE's report is (:func:`~radiodiff_vae.evaluation.reporting.write_files`): every file rendered in
    memory first (a failing step writes nothing), then written to a temporary name and moved into place (an
    interrupted save leaves the earlier files whole).

    Returns:
        ``{file name: path}`` of what was written.

    Raises:
        OutputExistsError: results are already there and ``overwrite`` is False.
    """
    check_construction_output_dir(output_dir, overwrite)
    contents = {
        METRICS_FILE: metrics_json(result.metrics),
        TABLE_FILE: result.table.encode(),
        PER_MAP_FILE: per_map_csv(result).encode(),
        FIGURE_FILE: figure_png(result.figure, dpi=100) if result.figure is not None else None,
    }
    return write_files(output_dir, contents)
