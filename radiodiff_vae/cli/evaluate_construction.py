"""``radiodiff-vae evaluate-construction PIPELINE --output_dir OUT``: score radio-map construction from city maps.

PIPELINE is a ``RadioDiffPipeline`` folder (``save_pretrained``, e.g. what ``examples/train_radiodiff.py`` writes) or
a Hub id. Every test map is constructed from its city (building mask + transmitter) and scored against the true map,
with the baselines beside it on the same maps: ``ceiling`` (the pipeline's VAE reconstructing the true map),
``log_distance`` (path gain ``a + b log10 d`` fitted on training maps) and ``direct`` (``--direct_model``, a
``RadioUNetPipeline`` folder). The data flags are those of ``radiodiff-vae evaluate``.

Examples::

    # unseen synthetic cities (the default data: cities 10001.. never trained on), at 64 x 64, pipeline at 1 step
    radiodiff-vae evaluate-construction ./radiodiff-quickstart --output_dir eval-construction --resolution 64 \\
        --synthetic_num_maps 16 --synthetic_num_tx 4 --num_inference_steps 1 --direct_model ./direct-quickstart
    # RadioMapSeer's test cities; the log-distance line is fitted on 512 maps of its training split
    radiodiff-vae evaluate-construction user/radiodiff --output_dir eval-rms --data_dir /data/RadioMapSeer --split test
    # a make-raytraced folder (every map is a test map): take the fit of an earlier run on the training source
    radiodiff-vae evaluate-construction ./radiodiff --output_dir eval-munich --data_dir munich_maps \\
        --simulation sionna --log_distance_fit eval-construction/metrics.json

Writes ``OUT/metrics.json`` (for each method the means of nmse, rmse, psnr, ssim, rmse_db, mae, mae_db and the map
count; the pipeline's steps and maps per second; the log-distance fit), ``OUT/metrics.md``, ``OUT/per_map.csv`` (one
row per map and method) and ``OUT/examples.png``.
"""

import argparse
import json
import math
from pathlib import Path
from typing import Any, Optional

from .arguments import SPLITS, add_data_arguments, add_device_arguments, data_source_from_args, dataset_from_args
from .evaluation_arguments import (
    add_figure_arguments,
    add_output_arguments,
    check_at_least_one,
    db_range_from_args,
    device_and_dtype,
    print_report,
)

DEFAULT_FIT_MAPS = 512


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate-construction",
        help="Score a RadioDiffPipeline's construction of radio maps against the ceiling and the baselines.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pipeline", help="A RadioDiffPipeline folder (save_pretrained) or a Hub id.")
    add_output_arguments(parser, "metrics.json, metrics.md, per_map.csv, examples.png")
    parser.add_argument(
        "--num_inference_steps", type=int, default=None, help="Sampling steps of the pipeline (default: its own)."
    )
    parser.add_argument(
        "--direct_model", default=None, help="A RadioUNetPipeline folder (or Hub id), scored as 'direct'."
    )
    add_device_arguments(parser)
    parser.add_argument("--max_maps", type=int, default=None, help="Score this many maps spread over the data.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the pipeline's noise (default 0).")
    parser.add_argument(
        "--fit_maps",
        type=int,
        default=DEFAULT_FIT_MAPS,
        help=f"Training maps the log-distance line is fitted on, spread over the split (default {DEFAULT_FIT_MAPS}; "
        "0: all of a folder's or dataset's split).",
    )
    parser.add_argument(
        "--fit_split",
        default="train",
        choices=SPLITS,
        help="Split of the same source that the log-distance fit reads (default train; synthetic maps: cities "
        "1.., the training runs' cities, with --synthetic_seed and --synthetic_num_tx).",
    )
    parser.add_argument(
        "--log_distance_fit",
        default=None,
        metavar="FILE",
        help="Take the log-distance fit from this JSON file instead of fitting: an earlier run's metrics.json or a "
        "LogDistanceFit.to_dict() file.",
    )
    add_figure_arguments(parser, "dB errors and the figure")
    add_data_arguments(parser)
    parser.set_defaults(func=run)


def read_log_distance_fit(path: str) -> Any:
    """The :class:`~radiodiff_vae.baseline.LogDistanceFit` saved in ``path``: a ``to_dict`` file or the
    ``metrics.json`` of an earlier ``evaluate-construction`` run (its ``log_distance.fit``)."""
    from radiodiff_vae.baseline import LogDistanceFit
    from radiodiff_vae.errors import InputNotFoundError, InvalidArgumentError

    file = Path(path)
    if not file.is_file():
        raise InputNotFoundError(f"--log_distance_fit {path}: no such file")
    try:
        content = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgumentError(f"--log_distance_fit {path} is not a JSON file ({error})") from error
    if isinstance(content, dict) and isinstance(content.get("log_distance"), dict) and "fit" in content["log_distance"]:
        content = content["log_distance"]["fit"]  # an earlier run's metrics.json
    if not isinstance(content, dict):
        raise InvalidArgumentError(f"--log_distance_fit {path} must hold a JSON object, got {type(content).__name__}")
    try:
        return LogDistanceFit.from_dict(content)
    except (TypeError, ValueError) as error:
        raise InvalidArgumentError(f"--log_distance_fit {path}: {error}") from error


def fit_source_and_split(args: argparse.Namespace) -> Any:
    """(DataSource, split, one line) of the log-distance fit's training maps: the test maps' source, its
    ``--fit_split``; synthetic maps: the training runs' cities ``1 ..``, enough of them for ``--fit_maps``."""
    from dataclasses import replace

    from radiodiff_vae.errors import InvalidArgumentError

    source = data_source_from_args(args)
    if source.kind == "synthetic":
        # Synthetic cities have no end: "all" (0) takes the default number.
        cities = math.ceil((args.fit_maps or DEFAULT_FIT_MAPS) / source.synthetic_tx)
        if source.first_map_id <= cities:
            raise InvalidArgumentError(
                f"--synthetic_first_map {source.first_map_id} makes the test cities overlap the log-distance fit's "
                f"training cities 1-{cities}; test on cities after {cities} (the default, 10001, is) or lower "
                "--fit_maps"
            )
        source = replace(source, first_map_id=1, synthetic_maps=cities)
        return source, args.fit_split, source.describe()
    if args.split == "all" or args.fit_split == "all":
        raise InvalidArgumentError(
            f"--split {args.split} with --fit_split {args.fit_split} would fit the log-distance line on test maps of "
            f"{source.describe(args.split)}; pass --log_distance_fit FILE (e.g. the metrics.json of a run on the "
            "training source)"
        )
    if args.fit_split == args.split:
        raise InvalidArgumentError(
            f"--fit_split {args.fit_split} is the test split: the log-distance line must be fitted on other maps"
        )
    return source, args.fit_split, source.describe(args.fit_split)


def run(args: argparse.Namespace) -> int:
    from radiodiff_vae.errors import InvalidArgumentError
    from radiodiff_vae.evaluation.construction import (
        check_construction_inputs,
        check_construction_output_dir,
        evaluate_construction,
        load_construction_pipeline,
        save_construction,
    )
    from radiodiff_vae.models.checks import check_size_divisible

    # Every check that needs no model runs first, so a typo costs no loading time and writes nothing.
    check_at_least_one(args, "batch_size", "max_maps", "num_inference_steps")
    if args.fit_maps < 0:
        raise InvalidArgumentError(f"--fit_maps must be 0 (all) or more, got {args.fit_maps}")
    db_range = db_range_from_args(args)
    check_construction_output_dir(args.output_dir, args.overwrite)
    fit = read_log_distance_fit(args.log_distance_fit) if args.log_distance_fit is not None else None
    if args.split is None:
        args.split = data_source_from_args(args).default_split("test")  # reads a folder's listing at most
    fit_source, fit_split, fit_data = fit_source_and_split(args) if fit is None else (None, None, None)
    device, dtype = device_and_dtype(args)
    pipeline = load_construction_pipeline(args.pipeline, "RadioDiffPipeline", device, dtype, what="PIPELINE")
    direct: Optional[Any] = None
    if args.direct_model is not None:
        direct = load_construction_pipeline(args.direct_model, "RadioUNetPipeline", device, dtype, "--direct_model")
    if args.resolution is not None:
        for flag, model in (("PIPELINE", pipeline), ("--direct_model", direct)):
            if model is not None:
                check_size_divisible(args.resolution, None, model.size_divisor, "--resolution", owner=f"{flag}'s")
    dataset, data = dataset_from_args(args)
    check_construction_inputs(pipeline, dataset, direct=direct)
    fit_dataset = fit_source.open(fit_split) if fit_source is not None else None

    result = evaluate_construction(
        pipeline,
        dataset,
        train_dataset_for_fit=fit_dataset,
        log_distance=fit,
        fit_maps=args.fit_maps or None,
        direct=direct,
        num_inference_steps=args.num_inference_steps,
        batch_size=args.batch_size,
        seed=args.seed,
        device=device,
        max_maps=args.max_maps,
        db_range=db_range,
        draw_figure=not args.no_figure,
        settings={
            "data": data,
            "pipeline": str(args.pipeline),
            "direct_model": args.direct_model,
            "log_distance_fit": args.log_distance_fit or fit_data,
            "dtype": args.dtype,
        },
    )
    print_report(result.table, save_construction(result, args.output_dir, overwrite=args.overwrite))
    return 0
