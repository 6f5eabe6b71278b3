"""The ``radiodiff-vae`` command line.

Each sub-command lives in its own module, which defines ``register(subparsers)``: it adds its parser and sets
``func`` to the function that runs it. Heavy imports (torch models, datasets) happen inside that function so that
``radiodiff-vae --help`` answers at once.
"""

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

from radiodiff_vae.errors import OneLineArgumentParser, check_output_folder, is_user_error, one_line, show_traceback

# module name -> the sub-commands it registers (for the record; each module adds its own parsers)
SUBCOMMAND_MODULES = (
    "radiodiff_vae.cli.make_synthetic",  # make-synthetic
    "radiodiff_vae.cli.make_raytraced",  # make-raytraced
    "radiodiff_vae.cli.evaluate",  # evaluate
    "radiodiff_vae.cli.evaluate_construction",  # evaluate-construction
    "radiodiff_vae.cli.codec",  # encode, decode
    "radiodiff_vae.cli.convert",  # convert-original
    "radiodiff_vae.cli.export",  # export-diffusers
    "radiodiff_vae.cli.export_original",  # export-original
)


# sub-command -> the flag of the folder it writes into, checked before any work (encode: the folder of --output)
OUTPUT_FOLDER_FLAGS = {
    "evaluate": "output_dir",
    "evaluate-construction": "output_dir",
    "decode": "output_dir",
    "convert-original": "output_dir",
    "make-synthetic": "out",
    "encode": "output",
}


def check_output_folders(args: argparse.Namespace) -> None:
    """An unwritable output folder is one line before the model loads or a map is read."""
    flag = OUTPUT_FOLDER_FLAGS.get(args.command)
    path = getattr(args, flag, None) if flag else None
    if path is None:
        return
    if args.command == "encode":
        path = os.path.dirname(os.path.abspath(path))
    check_output_folder(path, f"--{flag}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="radiodiff-vae",
        description="RadioDiff VAE tools: synthetic radio maps, evaluation, latent encoding, checkpoint conversion.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_output_folders(args)
        return int(args.func(args) or 0)
    except Exception as error:
        # Bad input (radiodiff_vae.errors.InputError) and the OSErrors of the user's paths (missing, unwritable, a
        # full disk) are one line; anything else is a bug and keeps its traceback.
        if show_traceback() or not is_user_error(error):
            raise
        print(f"radiodiff-vae {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
