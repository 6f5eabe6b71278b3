"""``radiodiff-vae export-original MODEL --output FILE``: a RadioVAE -> a checkpoint of the original RadioDiff code.

Examples::

    radiodiff-vae export-original outputs/radiodiff-ldm-f4 --output model-vae.pt
    # then, in RadioDiff's configs/radio_train.yaml: model.first_stage.ckpt_path: model-vae.pt (see model-vae.yaml)

Writes ``torch.save({"model": state_dict})`` with exactly the tensors of the original first stage under their
CompVis names (``encoder.down.0.block.0.norm1.weight``, ...; 204 for the ``radiodiff-ldm-f4`` preset) and no
``ema`` entry, so RadioDiff's ``init_from_ckpt`` takes these weights; ``radiodiff-vae convert-original FILE`` gives
them back bit for bit. Beside it, ``FILE`` with the suffix ``.yaml`` holds the config entries the original needs
for this VAE (``first_stage: {embed_dim, lossconfig, ddconfig, ckpt_path}``, ``scale_factor``); they are also
printed. A folder written by ``convert-original`` also gives its ``loss.logvar`` and ``loss.discriminator.*``
(``--no_training_state`` leaves them out). A layout the original code cannot build (the report's
``radiodiff-vae`` preset: transposed convs, three downsamplings, no attention) is refused in one line.
"""

import argparse
from pathlib import Path
from typing import Any

from .arguments import add_model_argument, load_model


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export-original",
        help="Write a radiodiff-ldm-f4 RadioVAE as a first-stage checkpoint of the original RadioDiff code.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_argument(parser)
    parser.add_argument("--output", required=True, help="The .pt/.ckpt/.pth file to write.")
    parser.add_argument(
        "--config_output",
        default=None,
        help="Where to write the YAML config entries for RadioDiff (default: --output with the suffix .yaml).",
    )
    parser.add_argument(
        "--no_training_state",
        action="store_true",
        help="Leave out loss.logvar and loss.discriminator.* even when MODEL's folder has them.",
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace existing --output / --config_output files.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radiodiff_vae.conversion.original import (
        check_export_targets,
        default_config_path,
        describe_export,
        export_original_checkpoint,
        original_first_stage_config,
        read_training_state,
    )

    config_output = args.config_output or default_config_path(args.output)
    check_export_targets(args.output, config_output, args.overwrite)  # before the model loads
    model = load_model(args.model)  # the config of another class (an AutoencoderKL folder) is refused here
    original_first_stage_config(model.config)  # refuses a layout before the training state is read

    discriminator = logvar = None
    if not args.no_training_state and Path(args.model).is_dir():
        discriminator, logvar = read_training_state(args.model)
    result = export_original_checkpoint(
        model,
        args.output,
        discriminator=discriminator,
        logvar=logvar,
        config_output=config_output,
        overwrite=args.overwrite,
        source_name=str(args.model),
    )
    print(describe_export(result))
    print(result.config_text, end="")
    return 0
