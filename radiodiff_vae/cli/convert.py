"""``radiodiff-vae convert-original CHECKPOINT --output_dir DIR``: an original RadioDiff VAE checkpoint -> RadioVAE.

Examples::

    # the trainer's checkpoint (model-50.pt), its live weights
    radiodiff-vae convert-original results/radio_Vae/model-50.pt --output_dir radiodiff-vae-f4
    # the EMA weights of the same file (what RadioDiff's own init_from_ckpt silently prefers)
    radiodiff-vae convert-original results/radio_Vae/model-50.pt --output_dir radiodiff-vae-f4-ema --use_ema
    # a file that also pickles Python objects: only if you trust where it came from
    radiodiff-vae convert-original old.ckpt --output_dir vae --trust_pickle

Writes a ``radiodiff-ldm-f4`` RadioVAE folder (``RadioVAE.from_pretrained(DIR)``, ``scaling_factor`` 0.3 unless
``--scaling_factor`` says otherwise) with a model card, plus ``discriminator.safetensors`` and ``logvar.safetensors``
to continue training (``--no_training_state`` leaves them out). Channel counts, resnets per level and latent channels are read from the
tensors (RadioDiff's own checkpoints: 128/256/512, 2, 3). Every tensor's name and shape is checked; the first
mismatch is named and nothing is written. ``radiodiff-vae export-original`` goes the other way.
"""

import argparse
import math
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert-original",
        help="Convert a checkpoint of the original RadioDiff code into a radiodiff-ldm-f4 RadioVAE folder.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "checkpoint", help="The original checkpoint: trainer dict, Lightning {'state_dict'} or state dict."
    )
    parser.add_argument("--output_dir", required=True, help="Folder to write (must not exist or be empty).")
    parser.add_argument(
        "--use_ema", action="store_true", help="Take the EMA weights ('ema' -> 'ema_model.*') instead of 'model'."
    )
    parser.add_argument(
        "--no_training_state",
        action="store_true",
        help="Do not write the discriminator and logvar (they are only needed to continue training).",
    )
    parser.add_argument(
        "--trust_pickle",
        action="store_true",
        help="Allow torch.load(weights_only=False) if the file holds pickled objects. Runs code from the file.",
    )
    parser.add_argument(
        "--sample_size", type=int, default=320, help="Training resolution for the config (default 320)."
    )
    parser.add_argument(
        "--scaling_factor",
        type=float,
        default=0.3,
        help="Latent scale for the config (default 0.3, RadioDiff's scale_factor; a file written by export-original "
        "records its own in the .yaml beside it).",
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace a non-empty --output_dir.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radiodiff_vae.conversion.original import convert_original_checkpoint, describe
    from radiodiff_vae.errors import InvalidArgumentError

    if args.sample_size < 1:
        raise InvalidArgumentError(f"--sample_size must be a positive number of pixels, got {args.sample_size}")
    if not math.isfinite(args.scaling_factor) or args.scaling_factor <= 0:
        raise InvalidArgumentError(f"--scaling_factor must be a positive number, got {args.scaling_factor}")
    result = convert_original_checkpoint(
        args.checkpoint,
        args.output_dir,
        use_ema=args.use_ema,
        include_training_state=not args.no_training_state,
        trust_pickle=args.trust_pickle,
        sample_size=args.sample_size,
        scaling_factor=args.scaling_factor,
        overwrite=args.overwrite,
    )
    print(describe(result, args.checkpoint))
    print(f"Wrote {result.output_dir}: RadioVAE.from_pretrained({str(result.output_dir)!r})")
    return 0
