"""Reporting an evaluation: ``metrics.json``, ``metrics.md``, ``per_image.csv`` and ``examples.png`` in one folder.

Nothing here knows how the maps were predicted: an :class:`EvaluationResult` holds per-map scores of a predicted map
against the true one (a VAE's reconstruction, a constructed map) and of what it is compared with; the figure takes
the maps through a callable. :func:`save_evaluation` renders every file in memory, then writes each atomically.
"""

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..atomic import atomic_open
from ..data.conventions import RADIOMAPSEER_DB_RANGE, unit_to_db
from ..errors import NotAFolderError, OutputExistsError
from ..metrics import summarize_metrics

__all__ = [
    "EvaluationResult",
    "ExampleMaps",
    "OUTPUT_FILES",
    "check_output_dir",
    "csv_text",
    "draw_panel",
    "example_positions",
    "figure_grid",
    "figure_png",
    "format_markdown_table",
    "format_number",
    "json_safe",
    "means_table",
    "metrics_json",
    "plot_examples",
    "save_evaluation",
    "summarize_per_simulation",
    "summary_table",
    "write_files",
]

# Files written by ``save_evaluation`` inside the output folder.
METRICS_FILE = "metrics.json"
TABLE_FILE = "metrics.md"
PER_IMAGE_FILE = "per_image.csv"
FIGURE_FILE = "examples.png"
OUTPUT_FILES = (METRICS_FILE, TABLE_FILE, PER_IMAGE_FILE, FIGURE_FILE)

METRIC_LABELS = {
    "psnr": "PSNR (dB) ↑",
    "ssim": "SSIM ↑",
    "nmse": "NMSE ↓",
    "rmse": "RMSE ↓",
    "mae": "MAE ↓",
    "rmse_db": "RMSE (dB of path gain) ↓",
    "mae_db": "MAE (dB of path gain) ↓",
}


@dataclass
class EvaluationResult:
    """What an evaluation measured on ``N`` maps: the content of every file :func:`save_evaluation` writes.

    Args:
        metrics: the content of ``metrics.json``. A VAE's evaluation holds for every metric name a summary
            (``mean``, ``std``, ``min``, ``max``, ``p5`` ... ``p95``, ``count``), plus ``baseline``,
            ``per_simulation`` (the same per simulation) and ``settings``; another evaluation puts what it needs.
        per_image: ``{metric: (N,) float64}``, the evaluated method's score of each map, in ``names`` order.
        names: map names, e.g. ``"12_3"``.
        simulations: the simulation of each map, e.g. ``"IRT4"``.
        indices: each map's index in the dataset that was evaluated.
        table: ``metrics.md``, markdown tables of the summaries.
        compared_per_image: ``{method: {metric: (N,) float64}}`` of what the evaluated method is compared with, on
            the same maps and pixels (a VAE: ``"baseline"``, the resize baseline with as many values as the latent;
            construction: the ceiling and the baselines). ``per_image.csv`` adds their columns as
            ``<method>_<metric>``.
        figure: the matplotlib figure of example maps (None when not drawn).
    """

    metrics: Dict[str, Any]
    per_image: Dict[str, torch.Tensor]
    names: List[str]
    simulations: List[str]
    indices: List[int]
    table: str = ""
    compared_per_image: Dict[str, Dict[str, torch.Tensor]] = field(default_factory=dict)
    figure: Any = field(default=None, repr=False)

    @property
    def baseline_per_image(self) -> Dict[str, torch.Tensor]:
        """``{metric: (N,)}`` of the resize baseline (a VAE's evaluation)."""
        return self.compared_per_image.get("baseline", {})


def summarize_per_simulation(per_image: Mapping[str, torch.Tensor], simulations: Sequence[str]) -> Dict[str, Any]:
    """``{simulation: summaries}`` of the maps of each simulation (``"unknown"`` for maps without one), sorted."""
    summaries: Dict[str, Any] = {}
    for simulation in sorted(set(simulations)):
        chosen = torch.tensor([name == simulation for name in simulations])
        chosen_scores = {name: values[chosen] for name, values in per_image.items()}
        summaries[simulation or "unknown"] = summarize_metrics(chosen_scores)
    return summaries


# ----------------------------------------------------------------------------------------------------------------
# metrics.md
def format_number(value: float) -> str:
    """A score for a table: four decimals, or three significant digits in exponent form when tiny or huge."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4f}"


def table_metric_names(per_image: Mapping[str, Any]) -> List[str]:
    """The metrics of ``per_image`` that tables show, in its order."""
    return [name for name in per_image if name in METRIC_LABELS]


def summary_table(summaries: Mapping[str, Mapping[str, float]], metric_names: Sequence[str]) -> List[str]:
    """Markdown rows, one per metric: mean, std, p5, median, p95, min and max of ``{metric: summary}``."""
    lines = ["| metric | mean | std | p5 | median | p95 | min | max |", "|---|---|---|---|---|---|---|---|"]
    for name in metric_names:
        stats = summaries[name]
        row = [stats[key] for key in ("mean", "std", "p5", "p50", "p95", "min", "max")]
        lines.append(f"| {METRIC_LABELS[name]} | " + " | ".join(format_number(value) for value in row) + " |")
    return lines


def means_table(
    rows: Sequence[Tuple[Sequence[Any], Mapping[str, Mapping[str, float]]]],
    metric_names: Sequence[str],
    columns: Sequence[str] = ("method",),
) -> List[str]:
    """Markdown rows of mean scores side by side: one row per ``(leading cells, {metric: summary})``.

    ``columns`` names the leading cells (e.g. ``("method",)`` or ``("simulation", "maps")``).
    """
    lines = [
        "| " + " | ".join([*columns, *(METRIC_LABELS[name] for name in metric_names)]) + " |",
        "|" + "---|" * (len(columns) + len(metric_names)),
    ]
    for cells, summaries in rows:
        means = [format_number(summaries[name]["mean"]) for name in metric_names]
        lines.append("| " + " | ".join([*(str(cell) for cell in cells), *means]) + " |")
    return lines


def format_markdown_table(result: EvaluationResult) -> str:
    """``metrics.md`` of a VAE's evaluation: the summaries overall, the means per simulation, the model beside the
    resize baseline, and the noise floor when there was a reference trace."""
    metric_names = table_metric_names(result.per_image)
    settings = result.metrics["settings"]
    data = f" of {settings['data']}" if settings.get("data") else ""  # the folder, its split, ...
    how = "posterior sample" if settings["sample_posterior"] else "posterior mean"
    lines = [f"Reconstruction of {settings['num_images']} maps{data} ({settings['pixels']} pixels, {how}).", ""]
    lines += summary_table(result.metrics, metric_names)
    per_simulation = result.metrics["per_simulation"]
    if len(per_simulation) > 1 or (per_simulation and "unknown" not in per_simulation):
        rows = [((name, summary[metric_names[0]]["count"]), summary) for name, summary in per_simulation.items()]
        lines += ["", "Mean per simulation:", ""] + means_table(rows, metric_names, ("simulation", "maps"))
    baseline = result.metrics.get("baseline")
    if baseline:
        lines += _baseline_lines(result, baseline, metric_names)
    floor = result.metrics.get("noise_floor")
    if floor:
        paired = settings.get("maps_with_reference")
        on = f" on the {paired} of {settings['maps_in_data']} maps it holds" if paired is not None else ""
        lines += [
            "",
            f"Scored against an independent trace ({settings.get('reference_simulation', 'reference')}){on}: the "
            f"input trace itself, the Monte Carlo noise floor, is at RMSE {format_number(floor['rmse']['mean'])} "
            f"(PSNR {floor['psnr']['mean']:.2f} dB); the reconstruction is at RMSE "
            f"{format_number(result.metrics['rmse']['mean'])} (PSNR {result.metrics['psnr']['mean']:.2f} dB).",
        ]
    return "\n".join(lines) + "\n"


def _baseline_lines(result: EvaluationResult, baseline: Mapping[str, Any], metric_names: List[str]) -> List[str]:
    """The model against the resize baseline with the same number of values, and the gap in one sentence."""
    gap = baseline["psnr_gap_db"]
    rows = [
        (("model", baseline["latent_values_per_map"]), result.metrics),
        ((f"resize {baseline['height']}x{baseline['width']}, bicubic back", baseline["values_per_map"]), baseline),
    ]
    return [
        "",
        f"Against the resize baseline with the same number of values ({baseline['method']}), on the same maps and "
        f"pixels: the model is {gap['mean']:+.2f} dB PSNR (std {gap['std']:.2f} dB over maps) and "
        f"{baseline['ssim_gap']:+.4f} SSIM from it, and better on {baseline['maps_where_model_wins']} of "
        f"{gap['count']} maps.",
        "",
    ] + means_table(rows, metric_names, ("codec", "values per map"))


# ----------------------------------------------------------------------------------------------------------------
# examples.png
@dataclass
class ExampleMaps:
    """One map of the figure, on the data's ``[0, 1]`` scale.

    Args:
        target (`np.ndarray` of shape `(H, W)`): the true map.
        prediction (`np.ndarray` of shape `(H, W)`): the predicted map (reconstruction, constructed map).
        mask (`np.ndarray` of shape `(H, W)`, *optional*): True where pixels were scored; the error panel leaves the
            others blank.
    """

    target: np.ndarray
    prediction: np.ndarray
    mask: Optional[np.ndarray] = None


def example_positions(psnr: torch.Tensor) -> List[Tuple[str, int]]:
    """Positions (into the evaluated list) of the best, median and worst map by PSNR."""
    finite = torch.nan_to_num(psnr, nan=-math.inf)
    order = torch.argsort(finite, descending=True, stable=True).tolist()
    return [("best", order[0]), ("median", order[len(order) // 2]), ("worst", order[-1])]


def plot_examples(
    result: EvaluationResult,
    load_example: Callable[[int], ExampleMaps],
    db_range: Optional[Tuple[float, float]] = RADIOMAPSEER_DB_RANGE,
    labels: Tuple[str, str] = ("input", "reconstruction"),
) -> Any:
    """Figure with the best, median and worst map by PSNR: true map | prediction | absolute error, in dB.

    Args:
        result: the scores; ``per_image["psnr"]`` and ``["ssim"]`` pick and caption the maps.
        load_example: the maps of a dataset index (``result.indices[position]``) as :class:`ExampleMaps`.
        db_range: (dB at 0, dB at 1) for the panels and colour bars; None shows the ``[0, 1]`` values.
        labels: what the true map and the prediction are called in the titles.

    Returns:
        A matplotlib ``Figure`` (drawn without a display).
    """
    db_min, db_max = db_range if db_range is not None else (0.0, 1.0)
    unit = "dB" if db_range is not None else "value"
    examples = example_positions(result.per_image["psnr"])
    figure, axes = figure_grid(len(examples), 3, (11.5, 3.4 * len(examples)))
    for row, (label, position) in enumerate(examples):
        maps = load_example(result.indices[position])
        target_db = unit_to_db(np.asarray(maps.target), (db_min, db_max))
        output_db = unit_to_db(np.asarray(maps.prediction), (db_min, db_max))
        error_db = abs(output_db - target_db)
        if maps.mask is not None:
            error_db[~np.asarray(maps.mask, dtype=bool)] = float("nan")
        scored = error_db[~np.isnan(error_db)]
        mean_error = float(scored.mean()) if scored.size else float("nan")
        max_error = max(float(scored.max()) if scored.size else 0.0, 1e-6)
        psnr_value = float(result.per_image["psnr"][position])
        ssim_value = float(result.per_image["ssim"][position])
        simulation = f" ({result.simulations[position]})" if result.simulations[position] else ""
        panels = [
            (target_db, f"{label}: {result.names[position]}{simulation} {labels[0]}", "viridis", (db_min, db_max)),
            (output_db, f"{labels[1]}, PSNR {psnr_value:.2f} dB, SSIM {ssim_value:.3f}", "viridis", (db_min, db_max)),
            (error_db, f"|error|, mean {mean_error:.3g} {unit}", "magma", (0.0, max_error)),
        ]
        for column, (image, title, colormap, limits) in enumerate(panels):
            draw_panel(figure, axes[row, column], image, title, colormap, limits, unit)
    return figure


def figure_grid(rows: int, columns: int, figsize: Tuple[float, float]) -> Tuple[Any, np.ndarray]:
    """A matplotlib ``Figure`` drawn without a display (constrained layout) and its ``(rows, columns)`` axes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, layout="constrained")
    return figure, figure.subplots(rows, columns, squeeze=False)


def draw_panel(
    figure: Any,
    axis: Any,
    image: np.ndarray,
    title: str,
    colormap: str,
    limits: Tuple[float, float],
    unit: Optional[str],
) -> None:
    """One map `(H, W)` of an examples figure: shown between ``limits``, titled, without ticks, with a colour bar
    labelled ``unit`` (none when ``unit`` is None)."""
    shown = axis.imshow(image, cmap=colormap, vmin=limits[0], vmax=limits[1])
    axis.set_title(title, fontsize=9)
    axis.set_xticks([])
    axis.set_yticks([])
    if unit is not None:
        figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.02).set_label(unit, fontsize=8)


# ----------------------------------------------------------------------------------------------------------------
# the files
def check_output_dir(
    output_dir: Union[str, os.PathLike],
    overwrite: bool,
    files: Sequence[str] = OUTPUT_FILES,
    what: str = "output_dir",
) -> None:
    """Raise before any work when ``output_dir`` cannot take the results (a file, or earlier results).

    Args:
        files: the names an evaluation writes there (default: :func:`save_evaluation`'s).
        what: how the messages name the folder (``"output_dir"``, ``"--output_dir"``).

    Raises:
        NotAFolderError: ``output_dir`` is a file.
        OutputExistsError: it holds one of ``files`` already and ``overwrite`` is False.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotAFolderError(f"{what} {output_dir} exists and is not a folder")
    existing = [name for name in files if (output_dir / name).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{what} {output_dir} already holds {', '.join(existing)}; pass --overwrite to replace them"
        )


def save_evaluation(
    result: EvaluationResult, output_dir: Union[str, os.PathLike], overwrite: bool = False
) -> Dict[str, Path]:
    """Write ``metrics.json``, ``metrics.md``, ``per_image.csv`` and (when drawn) ``examples.png`` into ``output_dir``.

    ``per_image.csv`` has one row per map: ``index, name, simulation``, every metric of ``result.per_image``, then
    ``<method>_<metric>`` for every method of ``result.compared_per_image``. Every file is written to a temporary
    name and moved into place, so an interrupted save leaves the earlier files whole.

    Returns:
        ``{file name: path}`` of what was written.

    Raises:
        OutputExistsError: results are already there and ``overwrite`` is False (see :func:`check_output_dir`).
    """
    check_output_dir(output_dir, overwrite)
    # Render everything in memory first, so that a failing step writes nothing.
    contents = {
        METRICS_FILE: metrics_json(result.metrics),
        TABLE_FILE: result.table.encode(),
        PER_IMAGE_FILE: _per_image_csv(result).encode(),
        FIGURE_FILE: figure_png(result.figure) if result.figure is not None else None,
    }
    return write_files(output_dir, contents)


def metrics_json(metrics: Mapping[str, Any]) -> bytes:
    """``metrics.json``'s bytes: indented JSON with inf and nan as strings (:func:`json_safe`)."""
    return (json.dumps(json_safe(metrics), indent=2) + "\n").encode()


def figure_png(figure: Any, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def write_files(output_dir: Union[str, os.PathLike], contents: Mapping[str, Optional[bytes]]) -> Dict[str, Path]:
    """Writes ``{file name: bytes}`` into ``output_dir`` (created if needed), each file to a temporary name moved
    into place, so an interrupted write leaves the earlier files whole; ``None`` contents are skipped.

    Returns:
        ``{file name: path}`` of what was written.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written: Dict[str, Path] = {}
    for file_name, content in contents.items():
        if content is None:
            continue
        with atomic_open(output_dir / file_name, "wb") as file:
            file.write(content)
        written[file_name] = output_dir / file_name
    return written


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A CSV file's text, ``\\n`` line ends: the header row, then ``rows``. Scores go in as ``repr(float)``, which
    reads back exactly (``"nan"``, ``"inf"`` included)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue()


def _per_image_csv(result: EvaluationResult) -> str:
    columns = dict(result.per_image)
    for method, scores in result.compared_per_image.items():
        columns.update({f"{method}_{name}": values for name, values in scores.items()})
    maps = enumerate(zip(result.indices, result.names, result.simulations))
    rows = (
        [index, name, simulation, *(repr(float(values[position])) for values in columns.values())]
        for position, (index, name, simulation) in maps
    )
    return csv_text(["index", "name", "simulation", *columns], rows)


def json_safe(value: Any) -> Any:
    """JSON has no inf/nan: write them as the strings "inf", "-inf" and "nan" (Python's float() reads them back)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
