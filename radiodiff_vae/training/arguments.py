"""The flags every training script shares (the run's size, optimizer, learning-rate schedule, precision, EMA, logging
and validation, checkpoints and resume, the Hub) and their checks.

A script passes the defaults that are its own (a VAE and a diffusion model train at different rates) and the help
texts that say more about it, then adds its own flags to the groups it gets back::

    parser = training_parser("Train ... with accelerate.")
    groups = add_training_arguments(
        parser, defaults=dict(learning_rate=1e-4, ...), optimizer="AdamW", hub_model_id_example="user/radiodiff"
    )
    groups.training.add_argument("--max_train_seconds", ...)
    ...
    args = parse_args_with_config(parser, input_args)  # radiodiff_vae.training.config
    check_training_arguments(args, parser, positive=["ray_samples"], hub_model_id_example="user/radiodiff")
"""

import argparse
import math
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence

from ..errors import InvalidArgumentError, OneLineArgumentParser
from .lr_schedule import SCHEDULER_NAMES

# the seeds numpy's and torch's generators both accept
SEED_RANGE = (0, 2**32 - 1)

# The defaults each script chooses (no value suits both a VAE-GAN and a diffusion model), and those they share.
SCRIPT_DEFAULTS = (
    "output_dir", "train_batch_size", "gradient_accumulation_steps", "max_train_steps", "learning_rate",
    "lr_scheduler", "lr_end", "max_grad_norm", "logging_steps", "tracker_project_name", "validation_steps",
    "checkpointing_steps",
)  # fmt: skip
SHARED_DEFAULTS: Dict[str, Any] = dict(
    seed=42, lr_warmup_steps=0, lr_power=1.0, lr_num_cycles=1, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
    adam_weight_decay=0.0, mixed_precision=None, ema_decay=0.9999, report_to="tensorboard", logging_dir="logs",
    num_validation_maps=16, num_validation_images=4, checkpoints_total_limit=3, resume_from_checkpoint=None,
    hub_model_id=None,
)  # fmt: skip
# How each optimizer applies --adam_weight_decay.
WEIGHT_DECAY_KINDS = {"Adam": "L2", "AdamW": "decoupled"}

# The checks of the shared flags: values that must be > 0 (>= 1 for integers), and >= 0.
POSITIVE = (
    "train_batch_size", "gradient_accumulation_steps", "max_train_steps", "logging_steps", "validation_steps",
    "checkpointing_steps", "num_validation_maps", "lr_num_cycles", "learning_rate", "ema_decay", "adam_epsilon",
    "lr_power",
)  # fmt: skip
NON_NEGATIVE = ("lr_warmup_steps", "num_validation_images", "adam_weight_decay")


class TrainingGroups(NamedTuple):
    """The help groups :func:`add_training_arguments` fills; a script adds its own flags of each kind to them."""

    training: argparse._ArgumentGroup
    logging: argparse._ArgumentGroup
    checkpoints: argparse._ArgumentGroup
    hub: argparse._ArgumentGroup


def add_auto_switch(group: argparse._ArgumentGroup, flag: str, help: str) -> None:
    """A switch that is ``on``, ``off`` or ``auto`` (the script decides at start-up, as ``help`` says)."""
    group.add_argument(flag, type=str, default="auto", choices=["auto", "on", "off"], help=help)


def training_parser(description: str) -> argparse.ArgumentParser:
    """A training script's parser: errors as one line, defaults in ``--help``, no abbreviated flags, ``--config``."""
    parser = OneLineArgumentParser(
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # a mistyped flag is an error, not silently another flag (--learning_rat)
    )
    parser.add_argument("--config", type=str, default=None, help="YAML file of flag values; flags given here win.")
    return parser


def add_training_arguments(
    parser: argparse.ArgumentParser,
    defaults: Mapping[str, Any],
    help_texts: Optional[Mapping[str, str]] = None,
    optimizer: str = "Adam",
    hub_model_id_example: str = "user/NAME",
) -> TrainingGroups:
    """Adds the shared training flags to ``parser`` in four groups (training; logging and validation; checkpoints;
    Hugging Face Hub), checked by :func:`check_training_arguments`.

    Args:
        parser: the script's parser (:func:`training_parser`).
        defaults (`Mapping[str, Any]`): the script's values of :data:`SCRIPT_DEFAULTS` (all of them), and of any of
            :data:`SHARED_DEFAULTS` it sets otherwise; keyed by flag name without dashes.
        help_texts (`Mapping[str, str]`, *optional*): help texts that replace the shared ones, by flag name.
        optimizer (`str`, defaults to `"Adam"`): ``Adam`` or ``AdamW``, the optimizer the ``--adam_*`` flags set.
        hub_model_id_example (`str`): the repository id ``--hub_model_id``'s help (and its check) shows.

    Returns:
        :class:`TrainingGroups`.
    """
    missing = [name for name in SCRIPT_DEFAULTS if name not in defaults]
    unknown = [name for name in defaults if name not in SCRIPT_DEFAULTS and name not in SHARED_DEFAULTS]
    if missing or unknown or optimizer not in WEIGHT_DECAY_KINDS:
        raise TypeError(
            f"add_training_arguments needs defaults for {list(SCRIPT_DEFAULTS)} and an optimizer among "
            f"{list(WEIGHT_DECAY_KINDS)}; missing {missing}, unknown {unknown}, optimizer {optimizer!r}"
        )
    values = {**SHARED_DEFAULTS, **defaults}
    texts = dict(
        output_dir="Model, checkpoints, logs.",
        learning_rate=f"Initial learning rate ({optimizer}).",
        adam_beta1=f"{optimizer} beta1.",
        adam_beta2=f"{optimizer} beta2.",
        adam_epsilon=f"{optimizer} epsilon.",
        adam_weight_decay=f"{optimizer} ({WEIGHT_DECAY_KINDS[optimizer]}) weight decay.",
        max_grad_norm="Clip the gradient norm; 0: off.",
        mixed_precision="Autocast precision (weights stay fp32); default: the accelerate config's.",
        use_ema="Keep an exponential moving average of the weights.",
        checkpoints_total_limit="Keep the newest N checkpoints; 0 keeps all.",
        push_to_hub="Upload the final model folder.",
        hub_model_id=f"Repository id, e.g. {hub_model_id_example}.",
    )  # fmt: skip
    texts.update(help_texts or {})

    def add(group: argparse._ArgumentGroup, name: str, kind: type, text: Optional[str] = None, **kwargs) -> None:
        group.add_argument(f"--{name}", type=kind, default=values[name], help=texts.get(name, text), **kwargs)

    training = parser.add_argument_group("training")
    add(training, "output_dir", str)
    add(training, "seed", int, "Seed of initialisation, data order and noise.")
    add(training, "train_batch_size", int, "Maps per process per micro-batch.")
    add(training, "gradient_accumulation_steps", int, "Micro-batches per step.")
    add(training, "max_train_steps", int, "Optimizer steps in total.")
    add(training, "learning_rate", float)
    add(training, "lr_scheduler", str, "Learning-rate schedule.", choices=SCHEDULER_NAMES)
    add(training, "lr_end", float, "Final learning rate of the polynomial decay.")
    add(training, "lr_power", float, "Power of the polynomial decay.")
    add(training, "lr_warmup_steps", int, "Linear warm-up steps.")
    add(training, "lr_num_cycles", int, "Cycles of cosine_with_restarts.")
    for name in ("adam_beta1", "adam_beta2", "adam_epsilon", "adam_weight_decay", "max_grad_norm"):
        add(training, name, float)
    add(training, "mixed_precision", str, choices=["no", "fp16", "bf16"])
    training.add_argument("--allow_tf32", action="store_true", help="Allow TF32 matmuls on Ampere+ GPUs.")
    training.add_argument("--use_ema", action="store_true", help=texts["use_ema"])
    add(training, "ema_decay", float, "EMA decay (with --use_ema).")

    logs = parser.add_argument_group("logging and validation")
    add(logs, "logging_steps", int, "Log the averaged losses every N steps.")
    add(logs, "report_to", str, "accelerate tracker(s): tensorboard, wandb, comet_ml, all, or none.")
    add(logs, "logging_dir", str, "Tracker folder, relative to --output_dir.")
    add(logs, "tracker_project_name", str, "Tracker run name.")
    add(logs, "validation_steps", int, "Validate every N steps (and at the end).")
    add(logs, "num_validation_maps", int, "Validation maps scored (spread).")
    add(logs, "num_validation_images", int, "Rows of the validation image grid.")

    checkpoints = parser.add_argument_group("checkpoints")
    add(checkpoints, "checkpointing_steps", int, "Save a checkpoint every N steps.")
    add(checkpoints, "checkpoints_total_limit", int)
    add(
        checkpoints, "resume_from_checkpoint", str,
        "'latest' (newest complete checkpoint in --output_dir, or a fresh start) or a checkpoint-N folder.",
    )  # fmt: skip

    hub = parser.add_argument_group("Hugging Face Hub")
    hub.add_argument("--push_to_hub", action="store_true", help=texts["push_to_hub"])
    add(hub, "hub_model_id", str)
    hub.add_argument("--hub_private_repo", action="store_true", help="Create the repository as private.")
    return TrainingGroups(training, logs, checkpoints, hub)


def check_training_arguments(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    positive: Sequence[str] = (),
    non_negative: Sequence[str] = (),
    hub_model_id_example: str = "user/NAME",
) -> None:
    """Raises an InvalidArgumentError naming the flag for any value of the shared flags (and of the script's
    ``positive`` and ``non_negative`` ones) the run could only fail on later; then turns
    ``--checkpoints_total_limit 0`` into None (keep all).

    Every float flag of ``parser`` must be finite: ``nan`` passes every comparison.
    """
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if action.type is float and value is not None and not math.isfinite(value):
            raise InvalidArgumentError(f"{action.option_strings[0]} must be a finite number, got {value}")
    for name in (*POSITIVE, *positive):
        if not getattr(args, name) > 0:
            bound = ">= 1" if isinstance(getattr(args, name), int) else "> 0"
            raise InvalidArgumentError(f"--{name} must be {bound}, got {getattr(args, name)}")
    for name in (*NON_NEGATIVE, *non_negative):
        if getattr(args, name) < 0:
            raise InvalidArgumentError(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 0:
        raise InvalidArgumentError(
            f"--checkpoints_total_limit must be >= 1, or 0 to keep all, got {args.checkpoints_total_limit}"
        )
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        raise InvalidArgumentError(
            f"--seed must be between {SEED_RANGE[0]} and 2**32 - 1 = {SEED_RANGE[1]}, got {args.seed}"
        )
    for name in ["adam_beta1", "adam_beta2"]:
        if not 0 <= getattr(args, name) < 1:
            raise InvalidArgumentError(f"--{name} must be in [0, 1), got {getattr(args, name)}")
    if not args.ema_decay < 1:
        raise InvalidArgumentError(f"--ema_decay must be < 1, got {args.ema_decay}")
    if args.max_grad_norm < 0:
        raise InvalidArgumentError(f"--max_grad_norm must be >= 0 (0 disables clipping), got {args.max_grad_norm}")
    # a second schedule (train_vae.py's discriminator) ends at the same fraction of its own rate: one check covers it
    if args.lr_scheduler == "polynomial" and not 0 <= args.lr_end < args.learning_rate:
        raise InvalidArgumentError(
            f"--lr_end must be >= 0 and below the learning rate ({args.learning_rate}) for the polynomial schedule, "
            f"got {args.lr_end}"
        )
    if args.push_to_hub and not args.hub_model_id:
        raise InvalidArgumentError(f"--push_to_hub needs --hub_model_id (e.g. {hub_model_id_example})")
    if args.checkpoints_total_limit == 0:
        args.checkpoints_total_limit = None  # keep all
