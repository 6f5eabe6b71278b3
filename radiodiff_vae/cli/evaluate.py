"""``radiodiff-vae evaluate MODEL --output_dir OUT``: score a trained VAE on radio maps.

Examples::

    # the synthetic generator (default data): a quick sanity check of any model
    radiodiff-vae evaluate ./my-vae --output_dir eval-synthetic --synthetic_maps 16 --resolution 256
    # RadioMapSeer's test maps, two simulations, non-building pixels only
    radiodiff-vae evaluate ./my-vae --output_dir eval-rms --data_dir /data/RadioMapSeer \\
        --simulation IRT4 DPM --split test --split_scheme disjoint --non_building_only --num_samples 500
    # a 🤗 dataset
    radiodiff-vae evaluate user/radiodiff-vae --output_dir eval-hub --dataset_name user/radio-maps --split test

Writes ``OUT/metrics.json`` (mean, std, min, max and percentiles of psnr, ssim, nmse, rmse, mae, rmse_db, mae_db,
overall and per simulation), ``OUT/metrics.md``, ``OUT/per_image.csv`` and ``OUT/examples.png``.
"""

import argparse
import os
from typing import Any

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
SPLITS = ("train", "validation", "test", "all")
# Synthetic cities are numbered; training runs use 1..N (and N+1.. for validation), so by default evaluation and
# encoding read cities from here on, which no run with fewer synthetic cities has trained on.
HELD_OUT_FIRST_MAP = 10001


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The data flags shared by ``evaluate`` and ``encode``: RadioMapSeer, a 🤗 dataset, or synthetic maps."""
    group = parser.add_argument_group("data (default: synthetic maps)")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--data_dir", default=None, help="RadioMapSeer root (holds gain/, png/).")
    source.add_argument("--dataset_name", default=None, help="A 🤗 dataset id or a local dataset folder.")
    group.add_argument(
        "--simulation",
        nargs="+",
        default=["IRT4"],
        help="RadioMapSeer simulation(s) under gain/, e.g. IRT4 DPM (default IRT4); several are scored separately.",
    )
    group.add_argument(
        "--split",
        default=None,
        choices=SPLITS,
        help="Which split to read; 'all': every map of a --data_dir folder (default: 'test' for RadioMapSeer as "
        "distributed, maps 1-700, and for --dataset_name; 'all' for any other folder, e.g. make-raytraced's).",
    )
    group.add_argument(
        "--split_scheme",
        default=None,
        choices=("radiodiff", "disjoint"),
        help="RadioMapSeer split rule (default: the loader's, 'radiodiff'); 'disjoint' compares with RadioUNet papers.",
    )
    group.add_argument("--num_tx", type=int, default=None, help="Transmitters per map to read (default all).")
    group.add_argument("--resolution", type=int, default=None, help="Resize maps to this size (default native).")
    group.add_argument("--synthetic_maps", type=int, default=8, help="Synthetic city layouts (default 8).")
    group.add_argument("--synthetic_tx", type=int, default=4, help="Transmitters per synthetic layout (default 4).")
    group.add_argument("--data_seed", type=int, default=0, help="Seed of the synthetic generator (default 0).")
    group.add_argument(
        "--synthetic_first_map",
        type=int,
        default=HELD_OUT_FIRST_MAP,
        help=f"Number of the first synthetic city (default {HELD_OUT_FIRST_MAP}: cities no training run with fewer "
        "synthetic cities has seen, whatever its seed).",
    )


def dataset_from_args(args: argparse.Namespace) -> Any:
    """Open the dataset the data flags name; raise FileNotFoundError / ValueError on bad flags before reading."""
    from torch.utils.data import ConcatDataset

    if args.resolution is not None and args.resolution < 1:
        raise ValueError(f"--resolution must be a positive number of pixels, got {args.resolution}")
    if args.data_dir is not None:
        if not os.path.isdir(args.data_dir):
            raise FileNotFoundError(f"--data_dir {args.data_dir} is not a folder")
        from radiodiff_vae.data import RadioMapSeer

        if args.split is None:
            args.split = default_folder_split(args.data_dir, args.simulation[0])
        options = {"split": args.split, "num_tx": args.num_tx, "resolution": args.resolution}
        if args.split_scheme is not None:
            options["split_scheme"] = args.split_scheme
        parts = [RadioMapSeer(args.data_dir, simulation=simulation, **options) for simulation in args.simulation]
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)
    if args.dataset_name is not None:
        from radiodiff_vae.data import load_radio_dataset

        args.split = args.split or "test"
        if args.split == "all":
            raise ValueError("--split all reads every map of a --data_dir folder; a --dataset_name has its own splits")
        if len(args.simulation) > 1:
            raise ValueError(f"--dataset_name reads one simulation at a time, got --simulation {args.simulation}")
        options = {"split": args.split, "resolution": args.resolution, "simulation": args.simulation[0]}
        if args.split_scheme is not None:
            options["split_scheme"] = args.split_scheme
        return load_radio_dataset(args.dataset_name, **options)
    from radiodiff_vae.data import SyntheticRadioMaps

    if args.synthetic_maps < 1 or args.synthetic_tx < 1:
        raise ValueError(
            f"--synthetic_maps and --synthetic_tx must be at least 1, got {args.synthetic_maps} and {args.synthetic_tx}"
        )
    if args.synthetic_first_map < 1:
        raise ValueError(f"--synthetic_first_map must be >= 1, got {args.synthetic_first_map}")
    return SyntheticRadioMaps(
        args.synthetic_maps,
        args.synthetic_tx,
        seed=args.data_seed,
        resolution=args.resolution,
        first_map_id=args.synthetic_first_map,
    )


def default_folder_split(data_dir: str, simulation: str) -> str:
    """``"test"`` for RadioMapSeer as distributed (maps 1-700), ``"all"`` for any other folder in its layout."""
    from radiodiff_vae.data.layout import list_map_ids
    from radiodiff_vae.data.radiomapseer import check_radiomapseer_folder
    from radiodiff_vae.data.splits import is_radiomapseer_numbered

    _, buildings_dir, _ = check_radiomapseer_folder(data_dir, simulation)
    return "test" if is_radiomapseer_numbered(list_map_ids(buildings_dir)) else "all"


def describe_data(args: argparse.Namespace) -> str:
    if args.data_dir is not None:
        scheme = f", {args.split_scheme} split" if args.split_scheme else ""
        if args.split == "all":
            return f"{args.data_dir} ({'+'.join(args.simulation)}, every map of the folder: --split all)"
        return f"RadioMapSeer {args.data_dir} ({'+'.join(args.simulation)}, {args.split}{scheme})"
    if args.dataset_name is not None:
        return f"dataset {args.dataset_name} ({args.split})"
    first, last = args.synthetic_first_map, args.synthetic_first_map + args.synthetic_maps - 1
    return f"synthetic (cities {first}-{last} x {args.synthetic_tx} tx, seed {args.data_seed})"


def check_resolution_fits_model(vae: Any, resolution: Any) -> None:
    """Reject ``--resolution`` before any map is read when the model cannot take maps of that size."""
    from radiodiff_vae.evaluation import downsample_factor_of
    from radiodiff_vae.models.checks import check_size_divisible

    if resolution is not None:
        check_size_divisible(resolution, None, downsample_factor_of(vae), "--resolution")


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """The positional MODEL of every command that loads a RadioVAE (see `radiodiff_vae.evaluation.load_vae`)."""
    parser.add_argument("model", help="A save_pretrained folder (or a training checkpoint with vae/) or a Hub id.")


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available).")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="Model weights dtype (default fp32).")
    parser.add_argument("--batch_size", type=int, default=8, help="Maps per forward pass (default 8).")


def resolve_device(name: str) -> Any:
    """``auto`` -> cuda when available; reject a CUDA device this machine does not have."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r} is not a torch device ({error})") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for CUDA, but torch sees no CUDA device on this machine")
    return device


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
        "report the input's own score against it, the Monte Carlo noise floor (needs --data_dir).",
    )
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers (default 0).")
    add_data_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from radiodiff_vae.data.conventions import RADIOMAPSEER_DB_RANGE
    from radiodiff_vae.evaluation import check_output_dir, evaluate_vae, load_vae, save_evaluation

    # Every check that needs no model runs first, so a typo costs no loading time and writes nothing.
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.num_samples is not None and args.num_samples < 1:
        raise ValueError(f"--num_samples must be at least 1, got {args.num_samples}")
    if args.num_workers < 0:
        raise ValueError(f"--num_workers must be 0 or more, got {args.num_workers}")
    db_range = tuple(args.db_range) if args.db_range is not None else RADIOMAPSEER_DB_RANGE
    if not db_range[1] > db_range[0]:
        raise ValueError(f"--db_range needs DB_AT_0 < DB_AT_1, got {db_range[0]} {db_range[1]}")
    if args.reference_simulation is not None and (args.data_dir is None or len(args.simulation) != 1):
        raise ValueError("--reference_simulation needs --data_dir and one --simulation (trace A; it is trace B)")
    check_output_dir(args.output_dir, args.overwrite)
    device = resolve_device(args.device)
    vae = load_vae(args.model, device=device, dtype=getattr(torch, DTYPES[args.dtype]))
    check_resolution_fits_model(vae, args.resolution)
    dataset = dataset_from_args(args)
    if args.reference_simulation is not None:
        from radiodiff_vae.evaluation import ReferencePairs

        reference_args = argparse.Namespace(**{**vars(args), "simulation": [args.reference_simulation]})
        dataset = ReferencePairs(dataset, dataset_from_args(reference_args))

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
            "data": describe_data(args),
            "dtype": args.dtype,
            "device": str(device),
            "reference_simulation": args.reference_simulation,
        },
    )
    written = save_evaluation(result, args.output_dir, overwrite=args.overwrite)
    print(result.table)
    print("wrote " + ", ".join(str(path) for path in written.values()))
    return 0

