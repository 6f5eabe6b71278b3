"""The ``radiodiff-vae`` command line.

Each sub-command lives in its own module, which defines ``register(subparsers)``: it adds its parser and sets
``func`` to the function that runs it. Heavy imports (torch models, datasets) happen inside that function so that
``radiodiff-vae --help`` answers at once.
"""

import argparse
import importlib
import sys
from typing import Optional, Sequence

# module name -> the sub-commands it registers (for the record; each module adds its own parsers)
SUBCOMMAND_MODULES = (
    "radiodiff_vae.cli.make_synthetic",  # make-synthetic
    "radiodiff_vae.cli.make_raytraced",  # make-raytraced
    "radiodiff_vae.cli.evaluate",  # evaluate
    "radiodiff_vae.cli.codec",  # encode, decode
    "radiodiff_vae.cli.convert",  # convert-original
    "radiodiff_vae.cli.export",  # export-diffusers
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as error:
        # Bad input is reported in one line, without a traceback.
        print(f"radiodiff-vae {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
