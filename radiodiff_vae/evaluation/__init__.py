"""Evaluation: predicted radio maps against true ones -> metrics, a markdown table, a per-map CSV and a figure.

Three modules, one job each:

* :mod:`.loading`: which maps are scored (a seeded subset, pairs with an independent trace), checked against the
  model before any work. Models load with ``from_pretrained``.
* :mod:`.scoring`: per-map scores of a prediction against the truth (:func:`score_maps`, :class:`MapScores`), a
  VAE's batch with its resize baseline (:func:`score_batch`, also the training script's validation) and the whole
  job for a VAE (:func:`evaluate_vae`).
* :mod:`.reporting`: :class:`EvaluationResult` and its files (:func:`save_evaluation`): ``metrics.json``,
  ``metrics.md``, ``per_image.csv``, ``examples.png``.

Maps are scored on the ``[0, 1]`` scale of the data (``data.conventions.model_to_unit`` of the model's ``[-1, 1]``),
predictions clamped to that range, as radio-map papers do. ``radiodiff-vae evaluate`` runs :func:`evaluate_vae` and
:func:`save_evaluation`.

Example::

    from radiodiff_vae import RadioVAE
    from radiodiff_vae.data import SyntheticRadioMaps
    from radiodiff_vae.evaluation import evaluate_vae, save_evaluation

    result = evaluate_vae(RadioVAE.from_pretrained("my-vae"), SyntheticRadioMaps(8, 4), batch_size=8)
    print(result.table)
    save_evaluation(result, "eval-out")  # metrics.json, metrics.md, per_image.csv, examples.png
"""

from .loading import ReferencePairs, batch_strings, check_maps_fit_model, item_names, subsample
from .reporting import (
    OUTPUT_FILES,
    EvaluationResult,
    ExampleMaps,
    check_output_dir,
    example_positions,
    figure_png,
    format_markdown_table,
    format_number,
    means_table,
    plot_examples,
    save_evaluation,
    summarize_per_simulation,
    summary_table,
    write_files,
)
from .scoring import BatchScores, MapScores, encode_latents, evaluate_vae, reconstruct, score_batch, score_maps

__all__ = [
    "OUTPUT_FILES",
    "BatchScores",
    "EvaluationResult",
    "ExampleMaps",
    "MapScores",
    "ReferencePairs",
    "batch_strings",
    "check_maps_fit_model",
    "check_output_dir",
    "encode_latents",
    "evaluate_vae",
    "example_positions",
    "figure_png",
    "format_markdown_table",
    "format_number",
    "item_names",
    "means_table",
    "plot_examples",
    "reconstruct",
    "save_evaluation",
    "score_batch",
    "score_maps",
    "subsample",
    "summarize_per_simulation",
    "summary_table",
    "write_files",
]
