"""``radiodiff-vae evaluate MODEL --output_dir OUT``: score a trained VAE on radio maps.

Examples::

    # the synthetic generator (default data): a quick sanity check of any model
    radiodiff-vae evaluate ./my-vae --output_dir eval-synthetic --synthetic_maps 16 --resolution 256
    # RadioMapSeer's test maps, two simulations, non-building pixels only
    radiodiff-vae evaluate ./my-vae --output_dir eval-rms --data_dir /data/RadioMapSeer \\
        --simulation IRT4 DPM --split test --split_scheme disjoint --non_building_only --num_samples 500
    # every map of a folder that is not RadioMapSeer (make-raytraced, make-synthetic): --split all, the default there
    radiodiff-vae evaluate ./my-vae --output_dir eval-munich --data_dir munich_maps --simulation sionna \
        --reference_simulation sionna_repeat1
    # a 🤗 dataset
    radiodiff-vae evaluate user/radiodiff-vae --output_dir eval-hub --dataset_name user/radio-maps --split test

Writes ``OUT/metrics.json`` (mean, std, min, max and percentiles of psnr, ssim, nmse, rmse, mae, rmse_db, mae_db,
overall and per simulation), ``OUT/metrics.md``, ``OUT/per_image.csv`` and ``OUT/examples.png``.
"""

import argparse
from typing import Any

from .arguments import (
    DTYPES,
    add_data_arguments,
    add_device_arguments,
    add_model_argument,
    check_resolution_fits_model,
    data_source_from_args,
    dataset_from_args,
    load_model,
    resolve_device,
)
from ..errors import InvalidArgumentError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="Score a trained VAE: metrics.json, a markdown table and a figure.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_argument(parser)
    parser.add_argument("--output_dir", required=True, help="Folder for metrics.json, metrics.md, examples.png.")
    parser.add_argument("--overwrite", action="store_true", help="Replace earlier results in --output_dir.")
    add_device_arguments(parser)
    parser.add_argument("--num_samples", type=int, default=None, help="Score a seeded random subset of this size.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the subset and of posterior draws (default 0).")
    parser.add_argument(
        "--sample_posterior", action="store_true", help="Decode a posterior draw instead of the posterior mean."
    )
    parser.add_argument(
        "--non_building_only", action="store_true", help="Score only pixels outside buildings (needs building masks)."
    )
    parser.add_argument(
        "--db_range",
        nargs=2,
        type=float,
        default=None,
        metavar=("DB_AT_0", "DB_AT_1"),
        help="Path gain in dB at pixel 0 and 1, for dB errors and colour bars (default RadioMapSeer's -147 -47).",
    )
    parser.add_argument("--no_figure", action="store_true", help="Skip examples.png.")
    parser.add_argument(
        "--reference_simulation",
        default=None,
        help="Score against this independent trace of the same maps (e.g. sionna_repeat1 of make-raytraced) and "
        "report the input's own score against it, the Monte Carlo noise floor (needs --data_dir); when it holds "
        "some of the maps, those are scored.",
    )
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers (default 0).")
    add_data_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from radiodiff_vae.data.conventions import RADIOMAPSEER_DB_RANGE
    from radiodiff_vae.evaluation import check_output_dir, evaluate_vae, save_evaluation

    # Every check that needs no model runs first, so a typo costs no loading time and writes nothing.
    if args.batch_size < 1:
        raise InvalidArgumentError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.num_samples is not None and args.num_samples < 1:
        raise InvalidArgumentError(f"--num_samples must be at least 1, got {args.num_samples}")
    if args.num_workers < 0:
        raise InvalidArgumentError(f"--num_workers must be 0 or more, got {args.num_workers}")
    db_range = tuple(args.db_range) if args.db_range is not None else RADIOMAPSEER_DB_RANGE
    if not db_range[1] > db_range[0]:
        raise InvalidArgumentError(f"--db_range needs DB_AT_0 < DB_AT_1, got {db_range[0]} {db_range[1]}")
    if args.reference_simulation is not None and (args.data_dir is None or len(args.simulation) != 1):
        raise InvalidArgumentError("--reference_simulation needs --data_dir and one --simulation (trace A; it is trace B)")
    check_output_dir(args.output_dir, args.overwrite)
    device = resolve_device(args.device)
    vae = load_model(args.model, device, getattr(torch, DTYPES[args.dtype]))
    check_resolution_fits_model(vae, args.resolution)
    dataset, data = dataset_from_args(args)
    reference = {}
    if args.reference_simulation is not None:
        from radiodiff_vae.evaluation import ReferencePairs

        trace_b = data_source_from_args(argparse.Namespace(**{**vars(args), "simulation": [args.reference_simulation]}))
        dataset = ReferencePairs(dataset, trace_b.open(args.split, skip_missing=True))
        reference = {"maps_with_reference": len(dataset), "maps_in_data": dataset.num_data_maps}

    result = evaluate_vae(
        vae,
        dataset,
        batch_size=args.batch_size,
        num_samples=args.num_samples,
        seed=args.seed,
        sample_posterior=args.sample_posterior,
        non_building_only=args.non_building_only,
        db_range=db_range,
        num_workers=args.num_workers,
        draw_figure=not args.no_figure,
        settings={
            "model": str(args.model),
            "data": data,
            "dtype": args.dtype,
            "device": str(device),
            "reference_simulation": args.reference_simulation,
            **reference,
        },
    )
    written = save_evaluation(result, args.output_dir, overwrite=args.overwrite)
    print(result.table)
    print("wrote " + ", ".join(str(path) for path in written.values()))
    return 0

