"""``radiodiff-vae export-diffusers MODEL --output_dir DIR``: a RadioVAE -> a ``diffusers.AutoencoderKL`` folder.

Examples::

    radiodiff-vae export-diffusers radiodiff-vae-f4 --output_dir radiodiff-vae-f4-autoencoderkl
    python -c "from diffusers import AutoencoderKL; AutoencoderKL.from_pretrained('radiodiff-vae-f4-autoencoderkl')"

Only layouts that ``AutoencoderKL`` can build export (the ``radiodiff-ldm-f4`` preset and converted original
checkpoints); the report's ``radiodiff-vae`` layout is refused with the config values that stand in the way. The
folder appears complete or not at all. ``RadioVAE.from_autoencoder_kl(DIR)`` reads it back.
"""

import argparse
from typing import Any

from .arguments import add_model_argument, load_model


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export-diffusers",
        help="Write a RadioVAE as a diffusers.AutoencoderKL folder (same weights, same outputs).",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_argument(parser)
    parser.add_argument("--output_dir", required=True, help="Folder to write (must not exist or be empty).")
    parser.add_argument("--overwrite", action="store_true", help="Replace a non-empty --output_dir.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radiodiff_vae.atomic import atomic_directory

    model = load_model(args.model)  # the config of another class (an AutoencoderKL folder) is refused here
    autoencoder = model.to_autoencoder_kl()  # refuses an inexpressible layout before anything is written
    with atomic_directory(args.output_dir, overwrite=args.overwrite) as staging:
        autoencoder.save_pretrained(staging, safe_serialization=True)
    print(f"Wrote {args.output_dir}: diffusers.AutoencoderKL.from_pretrained({str(args.output_dir)!r})")
    return 0
