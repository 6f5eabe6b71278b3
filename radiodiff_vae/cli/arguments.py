"""Flags shared by the ``radiodiff-vae`` commands: the model, the device, and the data (``evaluate``, ``encode``).

The data flags become a :class:`radiodiff_vae.data.sources.DataSource`, the one place that turns "a RadioMapSeer
folder, a 🤗 dataset or synthetic maps" into a dataset, which the training script uses too.
"""

import argparse
from typing import Any, Tuple

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
SPLITS = ("train", "validation", "test", "all")
# Synthetic cities are numbered; training runs use 1..N (and N+1.. for validation), so by default evaluation and
# encoding read cities from here on, which no run with fewer synthetic cities has trained on.
HELD_OUT_FIRST_MAP = 10001


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


def check_resolution_fits_model(vae: Any, resolution: Any) -> None:
    """Reject ``--resolution`` before any map is read when the model cannot take maps of that size."""
    from radiodiff_vae.baseline import downsample_factor_of
    from radiodiff_vae.models.checks import check_size_divisible

    if resolution is not None:
        check_size_divisible(resolution, None, downsample_factor_of(vae), "--resolution")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The data flags of ``evaluate`` and ``encode``: RadioMapSeer, a 🤗 dataset, or synthetic maps."""
    group = parser.add_argument_group("data (default: synthetic maps)")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--data_dir", default=None, help="A folder in RadioMapSeer's layout (holds gain/, png/).")
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
    group.add_argument("--num_tx", type=int, default=None, help="Transmitters per map of --data_dir (default all).")
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


def data_source_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~radiodiff_vae.data.sources.DataSource` the data flags name (checked, nothing read yet)."""
    from radiodiff_vae.data.sources import DataSource

    return DataSource(
        data_dir=args.data_dir,
        dataset_name=args.dataset_name,
        simulations=tuple(args.simulation),
        split_scheme=args.split_scheme,
        num_tx=args.num_tx,
        resolution=args.resolution,
        synthetic_maps=args.synthetic_maps,
        synthetic_tx=args.synthetic_tx,
        seed=args.data_seed,
        first_map_id=args.synthetic_first_map,
    )


def dataset_from_args(args: argparse.Namespace) -> Tuple[Any, str]:
    """Open the maps the data flags name: -> (dataset, one line describing them for the report).

    Sets ``args.split`` when it was not given (:meth:`DataSource.default_split`: ``"all"`` for a folder that is not
    RadioMapSeer's 700 maps, else ``"test"``). Raises FileNotFoundError / ValueError on bad flags before reading.
    """
    source = data_source_from_args(args)
    if args.split is None:
        args.split = source.default_split("test")
    return source.open(args.split), source.describe(args.split)
