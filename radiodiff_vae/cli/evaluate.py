"""``radiodiff-vae evaluate MODEL --output_dir OUT``: score a trained VAE on radio maps.

Examples::

    # the synthetic generator (default data): a quick sanity check of any model
    radiodiff-vae evaluate ./my-vae --output_dir eval-synthetic --synthetic_num_maps 16 --resolution 256
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
    add_data_arguments,
    add_deprecated_alias,
    add_device_arguments,
    add_model_argument,
    check_resolution_fits_model,
    data_source_from_args,
    dataset_from_args,
    load_model,
)
from .evaluation_arguments import (
    add_figure_arguments,
    add_output_arguments,
    check_at_least_one,
    db_range_from_args,
    device_and_dtype,
    print_report,
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
    add_output_arguments(parser, "metrics.json, metrics.md, examples.png")
    add_device_arguments(parser)
    parser.add_argument("--num_samples", type=int, default=None, help="Score a seeded random subset of this size.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the subset and of posterior draws (default 0).")
    parser.add_argument(
        "--sample_posterior", action="store_true", help="Decode a posterior draw instead of the posterior mean."
    )
    parser.add_argument(
        "--non_building_only", action="store_true", help="Score only pixels outside buildings (needs building masks)."
    )
    add_figure_arguments(parser, "dB errors and colour bars")
    parser.add_argument(
        "--reference_simulation",
        default=None,
        help="Score against this independent trace of the same maps (e.g. sionna_repeat1 of make-raytraced) and "
        "report the input's own score against it, the Monte Carlo noise floor (needs --data_dir); when it holds "
        "some of the maps, those are scored.",
    )
    parser.add_argument("--dataloader_num_workers", type=int, default=0, help="DataLoader workers (default 0).")
    add_deprecated_alias(parser, "--num_workers", "--dataloader_num_workers", type=int)
    add_data_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radiodiff_vae.evaluation import check_output_dir, evaluate_vae, save_evaluation

    # Every check that needs no model runs first, so a typo costs no loading time and writes nothing.
    check_at_least_one(args, "batch_size", "num_samples")
    if args.dataloader_num_workers < 0:
        raise InvalidArgumentError(f"--dataloader_num_workers must be 0 or more, got {args.dataloader_num_workers}")
    db_range = db_range_from_args(args)
    if args.reference_simulation is not None and (args.data_dir is None or len(args.simulation) != 1):
        raise InvalidArgumentError(
            "--reference_simulation needs --data_dir and one --simulation (trace A; it is trace B)"
        )
    check_output_dir(args.output_dir, args.overwrite)
    device, dtype = device_and_dtype(args)
    vae = load_model(args.model, device, dtype)
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
        num_workers=args.dataloader_num_workers,
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
    print_report(result.table, save_evaluation(result, args.output_dir, overwrite=args.overwrite))
    return 0

