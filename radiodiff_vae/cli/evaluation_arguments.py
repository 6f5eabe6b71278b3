"""What the evaluation commands (``evaluate``, ``evaluate-construction``) share besides the model, device and data
flags of :mod:`.arguments`: the output folder and figure flags, their checks, and the report printed at the end."""

import argparse
from typing import Any, Mapping, Tuple

from ..errors import InvalidArgumentError
from .arguments import DTYPES, resolve_device


def add_output_arguments(parser: argparse.ArgumentParser, files: str) -> None:
    """``--output_dir`` (required) and ``--overwrite``; ``files`` says what the command writes there."""
    parser.add_argument("--output_dir", required=True, help=f"Folder for {files}.")
    parser.add_argument("--overwrite", action="store_true", help="Replace earlier results in --output_dir.")


def add_figure_arguments(parser: argparse.ArgumentParser, db_use: str) -> None:
    """``--db_range`` (the maps' dB scale, for ``db_use``) and ``--no_figure``."""
    parser.add_argument(
        "--db_range",
        nargs=2,
        type=float,
        default=None,
        metavar=("DB_AT_0", "DB_AT_1"),
        help=f"Path gain in dB at pixel 0 and 1, for {db_use} (default RadioMapSeer's -147 -47).",
    )
    parser.add_argument("--no_figure", action="store_true", help="Skip examples.png.")


def check_at_least_one(args: argparse.Namespace, *flags: str) -> None:
    """Raises an InvalidArgumentError naming the first of ``flags`` that is given and below 1."""
    for flag in flags:
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise InvalidArgumentError(f"--{flag} must be at least 1, got {value}")


def db_range_from_args(args: argparse.Namespace) -> Tuple[float, float]:
    """``--db_range`` as (dB at 0, dB at 1), RadioMapSeer's when not given; checked low < high."""
    from radiodiff_vae.data.conventions import RADIOMAPSEER_DB_RANGE

    db_range = tuple(args.db_range) if args.db_range is not None else RADIOMAPSEER_DB_RANGE
    if not db_range[1] > db_range[0]:
        raise InvalidArgumentError(f"--db_range needs DB_AT_0 < DB_AT_1, got {db_range[0]} {db_range[1]}")
    return db_range


def device_and_dtype(args: argparse.Namespace) -> Tuple[Any, Any]:
    """``(torch.device, torch.dtype)`` of ``--device`` and ``--dtype`` (:func:`~.arguments.add_device_arguments`)."""
    import torch

    return resolve_device(args.device), getattr(torch, DTYPES[args.dtype])


def print_report(table: str, written: Mapping[str, Any]) -> None:
    """The markdown table of the results, then one line listing the files written."""
    print(table)
    print("wrote " + ", ".join(str(path) for path in written.values()))
