#!/usr/bin/env python
"""Train a RadioVAE with the two-phase VAE-GAN schedule of the RadioDiff report (sections 4-5).

Phase 1 (steps < --disc_start): reconstruction (L1 + MSE + LPIPS under a learned variance) + KL only; the
discriminator does not run. Phase 2: the PatchGAN discriminator joins with an adaptive weight. One autoencoder
forward per micro-batch feeds both the generator and the discriminator objectives.

Launch lines (docs/training.md explains every flag):

    # quick start: tiny model, synthetic maps, CPU, ~5 minutes
    accelerate launch --cpu examples/train_vae.py --config examples/configs/quickstart.yaml

    # the report's configuration on RadioMapSeer, one GPU
    accelerate launch examples/train_vae.py --config examples/configs/radiodiff_vae.yaml \
        --data_dir /data/RadioMapSeer --output_dir runs/radiodiff-vae

    # 8 GPUs on one node (DDP), or 2 nodes x 8 GPUs
    accelerate launch --multi_gpu --num_processes 8 examples/train_vae.py --config ... --data_dir ...
    accelerate launch --multi_gpu --num_machines 2 --num_processes 16 --machine_rank $RANK \
        --main_process_ip $MASTER --main_process_port 29500 examples/train_vae.py --config ... --data_dir ...

    # resume the newest complete checkpoint of a run (starts fresh when there is none)
    accelerate launch examples/train_vae.py --config ... --resume_from_checkpoint latest

Bad flags, configuration files, data folders and checkpoints are refused before any work with one line
``train_vae.py: error: ...`` and exit code 2 (``accelerate launch -q`` keeps the launcher's own traceback out).
"""

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from radiodiff_vae.atomic import atomic_write_json, make_files_shareable
from radiodiff_vae.baseline import baseline_for_model
from radiodiff_vae.errors import (
    USER_ERRORS,
    MapFileError,
    OneLineArgumentParser,
    check_output_folder,
    one_line,
    show_traceback,
)
from radiodiff_vae.losses.vae_gan import RadioVAELoss
from radiodiff_vae.models.autoencoder_radio import PRESETS, RadioVAE
from radiodiff_vae.models.normalization import group_norm_in_autocast_dtype, group_norm_keeps_channels_last
from radiodiff_vae.models.checks import check_size_divisible
from radiodiff_vae.training import (
    SCHEDULER_NAMES,
    LogWindow,
    NonFiniteGuard,
    NonFiniteLossError,
    TensorState,
    ThroughputMeter,
    TrainingProgress,
    Validator,
    VAEGANStep,
    build_lr_scheduler,
    checkpointing,
    compile_for_training,
    debug,
    measure_scaling_factor,
    parse_args_with_config,
    peak_memory_mib,
    save_png,
    spread_subset,
)
from radiodiff_vae.training.validation import BASELINE_KEYS

logger = get_logger(__name__, log_level="INFO")

TRACKER_PROJECT_NAME = "radiodiff-vae"
# Written into output_dir next to the model; never uploaded by --push_to_hub.
HUB_IGNORE_PATTERNS = [
    "checkpoint-*", "checkpoint-*/**", "logs/**", "validation/**", "debug/**", "*.tmp", "*.tmp/**", "*.lock"
]  # fmt: skip
# the seeds numpy's and torch's generators both accept
SEED_RANGE = (0, 2**32 - 1)


# ------------------------------------------------------------------------------------------------------------------
# arguments
def add_auto_switch(group: argparse._ArgumentGroup, flag: str, help: str) -> None:
    """A switch that is ``on``, ``off`` or ``auto`` (decided by the device at start-up)."""
    group.add_argument(flag, type=str, default="auto", choices=["auto", "on", "off"], help=help)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        description="Train a RadioVAE (VAE-GAN, two phases) with accelerate.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # a mistyped flag is an error, not silently another flag (--learning_rat)
    )
    parser.add_argument("--config", type=str, default=None, help="YAML file of flag values; flags given here win.")

    model = parser.add_argument_group("model")
    model.add_argument("--preset", type=str, default="radiodiff-vae", choices=sorted(PRESETS), help="Architecture.")
    model.add_argument(
        "--latent_channels",
        type=int,
        default=None,
        help="Channels of the latent instead of the preset's 3 (the report's section 7.2 suggests 4-8, more detail).",
    )
    model.add_argument(
        "--pretrained_model_name_or_path",
        type=str,
        default=None,
        help="Continue from a saved RadioVAE (folder or Hub id) instead of a freshly initialised --preset.",
    )
    model.add_argument(
        "--load_training_state",
        action="store_true",
        help="With a local --pretrained_model_name_or_path written by `radiodiff-vae convert-original`: also load its "
        "discriminator and logvar (discriminator.safetensors, logvar.safetensors).",
    )
    model.add_argument("--gradient_checkpointing", action="store_true", help="Trade compute for activation memory.")
    model.add_argument(
        "--gradient_checkpointing_scope",
        type=str,
        default="full_resolution",
        choices=["full_resolution", "all"],
        help="With --gradient_checkpointing: recompute only the full-resolution levels (encoder's first, decoder's "
        "last; most of the memory for a fraction of the compute) or every level.",
    )
    model.add_argument("--use_ema", action="store_true", help="Keep an exponential moving average of the weights.")
    model.add_argument("--ema_decay", type=float, default=0.9999, help="EMA decay (with --use_ema).")

    data = parser.add_argument_group("data (RadioMapSeer with --data_dir, a Hugging Face dataset, or synthetic)")
    data.add_argument("--data_dir", type=str, default=None, help="RadioMapSeer root (gain/, png/).")
    data.add_argument("--simulation", type=str, default="IRT4", help="RadioMapSeer simulation folder under gain/.")
    data.add_argument(
        "--split_scheme", type=str, default="radiodiff", choices=["radiodiff", "disjoint"], help="RadioMapSeer split."
    )
    data.add_argument("--num_tx", type=int, default=None, help="Transmitters per map of --data_dir (default: all).")
    data.add_argument(
        "--dataset_name",
        type=str,
        default=None,
        help="Hugging Face dataset id, a save_to_disk folder, or a RadioMapSeer-layout folder.",
    )
    data.add_argument(
        "--validation_split", type=str, default="validation", help="Split of --dataset_name used for validation."
    )
    data.add_argument("--synthetic_num_maps", type=int, default=256, help="Synthetic cities for training.")
    data.add_argument("--synthetic_num_tx", type=int, default=4, help="Transmitters per synthetic city.")
    data.add_argument(
        "--synthetic_num_workers",
        type=int,
        default=0,
        help="Processes that generate the synthetic maps at start-up (0: the main process; the maps are the same).",
    )
    data.add_argument(
        "--resolution", type=int, default=None, help="Train at this size (maps are resized); default: native size."
    )
    data.add_argument("--random_flip", action="store_true", help="Random horizontal flips of the training maps.")
    data.add_argument("--max_train_samples", type=int, default=None, help="Truncate the training set (debugging).")
    data.add_argument("--dataloader_num_workers", type=int, default=0, help="Data-loading worker processes.")

    training = parser.add_argument_group("training")
    training.add_argument("--output_dir", type=str, default="radiodiff-vae-output", help="Model, checkpoints, logs.")
    training.add_argument("--seed", type=int, default=42, help="Seed of initialisation, data order and noise.")
    training.add_argument("--train_batch_size", type=int, default=8, help="Maps per process per micro-batch.")
    training.add_argument("--gradient_accumulation_steps", type=int, default=2, help="Micro-batches per step.")
    training.add_argument("--max_train_steps", type=int, default=150_000, help="Optimizer steps in total.")
    training.add_argument("--learning_rate", type=float, default=5e-6, help="Initial learning rate (both models).")
    training.add_argument(
        "--disc_learning_rate", type=float, default=None, help="Discriminator learning rate (default: --learning_rate)."
    )
    training.add_argument(
        "--lr_scheduler", type=str, default="polynomial", choices=SCHEDULER_NAMES, help="Learning-rate schedule."
    )
    training.add_argument("--lr_end", type=float, default=5e-7, help="Final learning rate of the polynomial decay.")
    training.add_argument("--lr_power", type=float, default=1.0, help="Power of the polynomial decay.")
    training.add_argument("--lr_warmup_steps", type=int, default=0, help="Linear warm-up steps.")
    training.add_argument("--lr_num_cycles", type=int, default=1, help="Cycles of cosine_with_restarts.")
    training.add_argument("--adam_beta1", type=float, default=0.9, help="Adam beta1.")
    training.add_argument("--adam_beta2", type=float, default=0.999, help="Adam beta2.")
    training.add_argument("--adam_epsilon", type=float, default=1e-8, help="Adam epsilon.")
    training.add_argument("--adam_weight_decay", type=float, default=0.0, help="Adam (L2) weight decay.")
    training.add_argument(
        "--max_grad_norm",
        type=float,
        default=0.0,
        help="Clip the gradient norm of each group (autoencoder, logvar, discriminator) to this; 0: off (the report).",
    )
    training.add_argument(
        "--mixed_precision",
        type=str,
        default=None,
        choices=["no", "fp16", "bf16"],
        help="Autocast precision (weights stay fp32); default: the accelerate config's. The report trains in fp32.",
    )
    training.add_argument("--allow_tf32", action="store_true", help="Allow TF32 matmuls on Ampere+ GPUs.")
    add_auto_switch(
        training,
        "--channels_last",
        "Autoencoder, LPIPS and discriminator in channels-last memory layout (no NCHW <-> NHWC transposes around "
        "cuDNN's convolutions); auto: on with CUDA when torch's GroupNorm keeps channels-last there (not in torch "
        "2.11: its copies cost more than channels-last saves, docs/benchmarks.md), off on a CPU.",
    )
    add_auto_switch(
        training,
        "--autocast_group_norm",
        "The autoencoder's GroupNorms normalise in the autocast dtype (bf16/fp16; statistics still accumulated in "
        "fp32) instead of fp32, which CUDA autocast picks: less activation memory and traffic; auto: on with "
        "--mixed_precision bf16 or fp16.",
    )
    add_auto_switch(
        training,
        "--cudnn_benchmark",
        "torch.backends.cudnn.benchmark: time cuDNN's algorithms once per input shape; auto: on with CUDA when "
        "every training batch has the same size.",
    )
    training.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the autoencoder's levels, the LPIPS trunk and the discriminator (fuses GroupNorm + SiLU "
        "and the element-wise work; the first steps take longer while it compiles).",
    )
    training.add_argument(
        "--max_nonfinite_steps",
        type=int,
        default=10,
        help="Stop after this many consecutive optimizer steps with a non-finite loss or gradient (each is skipped).",
    )

    loss = parser.add_argument_group("VAE-GAN loss")
    loss.add_argument("--disc_start", type=int, default=50_001, help="First step of phase 2 (discriminator on).")
    loss.add_argument("--disc_factor", type=float, default=0.5, help="Adversarial factor in phase 2.")
    loss.add_argument("--disc_ramp_steps", type=int, default=0, help="Ramp the factor up over these steps.")
    loss.add_argument("--disc_weight", type=float, default=0.5, help="Multiplier of the adaptive GAN weight.")
    loss.add_argument("--kl_weight", type=float, default=1e-6, help="Weight of the KL term.")
    loss.add_argument(
        "--perceptual_weight", type=float, default=1.0, help="LPIPS weight; 0 needs no VGG16 weights (CPU, offline)."
    )
    loss.add_argument("--logvar_init", type=float, default=0.0, help="Initial log-variance of the likelihood.")
    loss.add_argument(
        "--freeze_logvar", action="store_true", help="Keep logvar fixed (what the original trainer did in effect)."
    )
    loss.add_argument("--gan_loss", type=str, default="hinge", choices=["hinge", "vanilla"], help="GAN objective.")
    loss.add_argument("--disc_num_layers", type=int, default=3, help="Stride-2 layers of the PatchGAN.")
    loss.add_argument("--disc_base_channels", type=int, default=64, help="Filters of the PatchGAN's first layer.")
    loss.add_argument("--disc_use_actnorm", action="store_true", help="ActNorm instead of BatchNorm in the PatchGAN.")

    logs = parser.add_argument_group("logging and validation")
    logs.add_argument("--logging_steps", type=int, default=100, help="Log the averaged losses every N steps.")
    logs.add_argument(
        "--report_to",
        type=str,
        default="tensorboard",
        help="accelerate tracker(s): tensorboard, wandb, comet_ml, all, or none.",
    )
    logs.add_argument("--logging_dir", type=str, default="logs", help="Tracker folder, relative to --output_dir.")
    logs.add_argument("--tracker_project_name", type=str, default=TRACKER_PROJECT_NAME, help="Tracker run name.")
    logs.add_argument("--validation_steps", type=int, default=5000, help="Validate every N steps (and at the end).")
    logs.add_argument("--num_validation_maps", type=int, default=16, help="Validation maps scored (spread).")
    logs.add_argument("--num_validation_images", type=int, default=4, help="Rows of the validation image grid.")
    logs.add_argument(
        "--scaling_factor_maps", type=int, default=64, help="Training maps whose latents set scaling_factor = 1/std."
    )

    checkpoints = parser.add_argument_group("checkpoints")
    checkpoints.add_argument("--checkpointing_steps", type=int, default=5000, help="Save a checkpoint every N steps.")
    checkpoints.add_argument(
        "--checkpoints_total_limit",
        type=int,
        default=3,
        help="Keep the newest N checkpoints, plus the last one before --disc_start; 0 keeps all.",
    )
    checkpoints.add_argument(
        "--resume_from_checkpoint",
        type=str,
        default=None,
        help="'latest' (newest complete checkpoint in --output_dir, or a fresh start) or a checkpoint-N folder.",
    )

    hub = parser.add_argument_group("Hugging Face Hub")
    hub.add_argument("--push_to_hub", action="store_true", help="Upload the final model folder.")
    hub.add_argument("--hub_model_id", type=str, default=None, help="Repository id, e.g. user/radiodiff-vae.")
    hub.add_argument("--hub_private_repo", action="store_true", help="Create the repository as private.")

    return parser


def parse_args(input_args: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parses flags (and ``--config``) and checks every value before any work starts."""
    args = parse_args_with_config(build_parser(), input_args)
    validate_args(args)
    if args.checkpoints_total_limit == 0:
        args.checkpoints_total_limit = None  # keep all
    check_paths(args)
    return args


def validate_args(args: argparse.Namespace) -> None:
    """Raises a ValueError naming the flag for any value the run could only fail on later."""
    positive = [
        "train_batch_size",
        "gradient_accumulation_steps",
        "max_train_steps",
        "logging_steps",
        "validation_steps",
        "checkpointing_steps",
        "num_validation_maps",
        "scaling_factor_maps",
        "synthetic_num_maps",
        "synthetic_num_tx",
        "max_nonfinite_steps",
        "lr_num_cycles",
        "disc_num_layers",
        "disc_base_channels",
    ]
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    non_negative = ["disc_start", "disc_ramp_steps", "lr_warmup_steps", "dataloader_num_workers"]
    for name in non_negative + ["num_validation_images", "synthetic_num_workers"]:
        if getattr(args, name) < 0:
            raise ValueError(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.latent_channels is not None and args.pretrained_model_name_or_path is not None:
        raise ValueError("--latent_channels applies to a new --preset model, not to --pretrained_model_name_or_path")
    for name in ["max_train_samples", "num_tx", "resolution", "latent_channels"]:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1 when given, got {value}")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 0:
        raise ValueError(
            f"--checkpoints_total_limit must be >= 1, or 0 to keep all, got {args.checkpoints_total_limit}"
        )
    parser = build_parser()
    # float("nan") passes every comparison below: refuse non-finite values of all float flags first
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if action.type is float and value is not None and not math.isfinite(value):
            raise ValueError(f"{action.option_strings[0]} must be a finite number, got {value}")
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        raise ValueError(f"--seed must be between {SEED_RANGE[0]} and 2**32 - 1 = {SEED_RANGE[1]}, got {args.seed}")
    for name in ["adam_beta1", "adam_beta2"]:
        if not 0 <= getattr(args, name) < 1:
            raise ValueError(f"--{name} must be in [0, 1), got {getattr(args, name)}")
    for name in ["adam_epsilon", "lr_power"]:
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name} must be > 0, got {getattr(args, name)}")
    for name in ["adam_weight_decay", "kl_weight", "perceptual_weight", "disc_factor", "disc_weight"]:
        if getattr(args, name) < 0:
            raise ValueError(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.resolution is not None and args.pretrained_model_name_or_path is None:
        factor = 2 ** PRESETS[args.preset]["num_downsamples"]
        check_size_divisible(args.resolution, None, factor, "--resolution", owner=f"the {args.preset} preset's")
    discriminator_min = 3 * 2**args.disc_num_layers  # NLayerDiscriminator.min_input_size
    if args.resolution is not None and args.resolution < discriminator_min:
        raise ValueError(
            f"--resolution {args.resolution} is below the discriminator's minimum {discriminator_min} for "
            f"--disc_num_layers {args.disc_num_layers}; pass a larger --resolution or fewer --disc_num_layers"
        )
    for name in ["learning_rate", "ema_decay"]:
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name} must be > 0, got {getattr(args, name)}")
    if args.disc_learning_rate is not None and not args.disc_learning_rate > 0:
        raise ValueError(f"--disc_learning_rate must be > 0, got {args.disc_learning_rate}")
    if not args.ema_decay < 1:
        raise ValueError(f"--ema_decay must be < 1, got {args.ema_decay}")
    if args.max_grad_norm < 0:
        raise ValueError(f"--max_grad_norm must be >= 0 (0 disables clipping), got {args.max_grad_norm}")
    # the discriminator's schedule ends at the same fraction of its own rate, so one check covers both
    if args.lr_scheduler == "polynomial" and not 0 <= args.lr_end < args.learning_rate:
        raise ValueError(
            f"--lr_end must be >= 0 and below the learning rate ({args.learning_rate}) for the polynomial schedule, "
            f"got {args.lr_end}"
        )
    if args.data_dir is not None and args.dataset_name is not None:
        raise ValueError("give either --data_dir (RadioMapSeer) or --dataset_name (Hugging Face), not both")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise FileNotFoundError(f"--data_dir {args.data_dir!r} is not a folder (expected the RadioMapSeer root)")
    if args.data_dir is None and args.dataset_name is None:
        if args.random_flip:
            raise ValueError(
                "--random_flip applies to RadioMapSeer (--data_dir) or --dataset_name maps, not to the synthetic "
                "generator"
            )
        for name in ["simulation", "split_scheme", "validation_split"]:
            if getattr(args, name) != parser.get_default(name):
                raise ValueError(
                    f"--{name} {getattr(args, name)!r} applies to --data_dir or --dataset_name maps; without either "
                    "the run trains on synthetic maps"
                )
    if args.num_tx is not None and args.data_dir is None:
        given = f"--dataset_name {args.dataset_name}" if args.dataset_name else "synthetic maps (--synthetic_num_tx)"
        raise ValueError(f"--num_tx applies to RadioMapSeer (--data_dir) only, got it with {given}")
    if args.load_training_state and (
        args.pretrained_model_name_or_path is None or not os.path.isdir(args.pretrained_model_name_or_path)
    ):
        raise ValueError(
            "--load_training_state needs --pretrained_model_name_or_path to be a local folder (a converted "
            f"checkpoint), got {args.pretrained_model_name_or_path!r}"
        )
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (e.g. user/radiodiff-vae)")


def check_paths(args: argparse.Namespace) -> None:
    """Checks the folders a run reads and writes before anything is written: --output_dir writable, the
    RadioMapSeer layout of --data_dir, and the --resume_from_checkpoint folder (complete, intact, and of the
    architecture the flags build)."""
    check_output_folder(args.output_dir, "--output_dir")
    if _is_rank_zero():  # the other processes of a launch may start after rank 0 took the lock
        checkpointing.check_output_not_locked(args.output_dir)
    if args.data_dir is not None:
        from radiodiff_vae.data.radiomapseer import check_radiomapseer_folder

        check_radiomapseer_folder(args.data_dir, args.simulation)
    resume_path = checkpointing.resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    if resume_path is not None:
        check_checkpoint_architecture(args, resume_path)


def _is_rank_zero() -> bool:
    # before the Accelerator exists, torchrun's environment says which process this is
    return int(os.environ.get("RANK", "0")) == 0


def check_checkpoint_architecture(args: argparse.Namespace, checkpoint: str) -> None:
    """Raises a ValueError naming the keys in which the checkpoint's saved models differ from what the flags build
    (the load hook checks again, but only after the run has started writing)."""
    if args.pretrained_model_name_or_path is None:
        expected_vae = dict(PRESETS[args.preset])
    else:
        config = os.path.join(args.pretrained_model_name_or_path, "config.json")
        expected_vae = _read_json(config) if os.path.isfile(config) else {}
    expected = {
        "vae": expected_vae,
        "discriminator": {
            "num_layers": args.disc_num_layers,
            "base_channels": args.disc_base_channels,
            "use_actnorm": args.disc_use_actnorm,
        },
    }
    for subfolder, wanted in expected.items():
        saved = _read_json(os.path.join(checkpoint, subfolder, "config.json"))
        # sample_size follows the data and scaling_factor is measured at the end: neither is architecture
        comparable = [key for key in wanted if key in saved and key not in ("sample_size", "scaling_factor")]
        changed = sorted(key for key in comparable if _comparable(saved[key]) != _comparable(wanted[key]))
        if changed:
            differences = ", ".join(f"{key} {saved[key]!r} there, {wanted[key]!r} here" for key in changed)
            raise ValueError(
                f"--resume_from_checkpoint {checkpoint}: its {subfolder} has another architecture ({differences}); "
                "resume with the flags of the run that wrote it"
            )


def _read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a JSON object, got a {type(content).__name__}")
    return content


# ------------------------------------------------------------------------------------------------------------------
# data
@dataclass
class RunData:
    """The run's maps: training, validation (spread over the validation split) and, for RadioMapSeer, maps outside
    training (RadioUNet's disjoint test split); with one-line descriptions for logs and the model card."""

    train: Dataset
    validation: Dataset
    source: str  # e.g. "RadioMapSeer /data (IRT4, split scheme radiodiff)"
    label: str  # a short dataset name for the card's model-index
    validation_kind: str  # how the validation maps relate to the training maps
    test: Optional[Dataset] = None  # maps no training split of either scheme holds, or None


def build_datasets(args: argparse.Namespace) -> RunData:
    """The training maps, ``--num_validation_maps`` validation maps spread over the validation split (items are
    ordered map by map, so the first N would be one or a few cities) and, for RadioMapSeer, as many test maps. The
    flags become a ``radiodiff_vae.data.sources.DataSource``, as ``radiodiff-vae evaluate``'s do."""
    from dataclasses import replace

    from radiodiff_vae.data import RadioMapSeer
    from radiodiff_vae.data.sources import DataSource

    synthetic = args.data_dir is None and args.dataset_name is None
    source = DataSource(
        data_dir=args.data_dir, dataset_name=args.dataset_name, simulations=args.simulation,
        split_scheme=args.split_scheme, num_tx=args.num_tx,
        resolution=(args.resolution or 64) if synthetic else args.resolution,
        synthetic_maps=args.synthetic_num_maps, synthetic_tx=args.synthetic_num_tx, seed=args.seed,
        num_workers=args.synthetic_num_workers, show_progress=False,
    )  # fmt: skip
    train = source.open("train", flip=args.random_flip)
    test = None
    if synthetic:
        # Held out: cities numbered after the training ones, one transmitter each.
        validation = replace(
            source, synthetic_maps=args.num_validation_maps, synthetic_tx=1, first_map_id=args.synthetic_num_maps + 1,
            num_workers=0,
        ).open()  # fmt: skip
        description = f"synthetic maps ({args.synthetic_num_maps} cities x {args.synthetic_num_tx} transmitters)"
        label, kind = "synthetic", "held-out validation maps (cities not in training)"
    elif args.data_dir is not None:
        validation = source.open("val")
        description = f"RadioMapSeer {args.data_dir} ({args.simulation}, split scheme {args.split_scheme})"
        label = f"RadioMapSeer-{args.simulation}"
    else:
        validation = source.open(args.validation_split)
        description = f"dataset {args.dataset_name} (train / {args.validation_split})"
        label = args.dataset_name
    if isinstance(validation, RadioMapSeer):
        overlap = args.split_scheme == "radiodiff"  # the original code's split: validation lies inside train
        kind = "validation maps that overlap the training maps" if overlap else "held-out validation maps"
        kind += f" (split scheme {args.split_scheme})"
        # Positions 601.. of the shuffled maps: in no training split of either scheme (RadioUNet's test split).
        try:
            test = RadioMapSeer(
                validation.root, validation.simulation, "test", "disjoint", resolution=args.resolution,
                num_tx=validation.num_tx,
            )  # fmt: skip
        except (ValueError, FileNotFoundError) as error:
            # A partial folder can hold no test map (ValueError), or test maps without their gain or transmitter
            # files (FileNotFoundError): validate without them.
            logger.warning(f"no maps outside training to score at the end: {error}")
    elif not synthetic:
        kind = f"maps of the {args.validation_split!r} split"
    if args.max_train_samples is not None and args.max_train_samples < len(train):
        train = torch.utils.data.Subset(train, range(args.max_train_samples))
    validation = spread_subset(validation, args.num_validation_maps)
    test = spread_subset(test, args.num_validation_maps) if test is not None and len(test) else None
    if len(train) == 0 or len(validation) == 0:
        raise ValueError(
            f"{description}: {len(train)} training and {len(validation)} validation maps; need at least one of each"
        )
    return RunData(train, validation, description, label, kind, test)


def collate_maps(items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Stacks items into ``pixel_values`` `(B, 1, H, W)` in [-1, 1] and ``name``. The items are at ``--resolution``
    already: every dataset of the script resizes its maps as it reads them (RadioMapSeer, 🤗 datasets) or makes them
    at that size (synthetic).

    The maps' values are checked here, on the host, so that the training step's forward needs no device sync
    (``check_values=False``). Raises a MapFileError naming the maps with NaN or inf values.
    """
    pixel_values = torch.stack([item["pixel_values"] for item in items]).float()  # (B, 1, H, W)
    finite = torch.isfinite(pixel_values).flatten(1).all(dim=1)  # (B,)
    if not bool(finite.all()):
        bad = [str(item["name"]) for item, ok in zip(items, finite.tolist()) if not ok]
        raise MapFileError(f"map(s) {', '.join(bad)}: expected finite values in [-1, 1], got NaN or inf")
    return {"pixel_values": pixel_values, "name": [str(item["name"]) for item in items]}


def out_of_memory_message(args: argparse.Namespace, device: Optional[torch.device]) -> str:
    """One line for a CUDA out-of-memory error: what ran, on how much memory, and the flags that lower it."""
    memory = "unknown"
    if device is not None and device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        memory = f"{properties.total_memory / 2**30:.1f} GiB ({properties.name})"
    precision = args.mixed_precision or "the accelerate config's"
    remedies = []
    if not args.gradient_checkpointing:
        remedies.append("--gradient_checkpointing (about 8 GiB at batch 8 and 320x320 in bf16, docs/benchmarks.md)")
    elif args.gradient_checkpointing_scope != "all":
        remedies.append("--gradient_checkpointing_scope all")
    if args.train_batch_size > 1:
        smaller = max(1, args.train_batch_size // 2)
        accumulation = args.gradient_accumulation_steps * args.train_batch_size // smaller
        remedies.append(
            f"--train_batch_size {smaller} --gradient_accumulation_steps {accumulation} (the same maps per step)"
        )
    if args.mixed_precision not in ("bf16", "fp16"):
        remedies.append("--mixed_precision bf16")
    size = f"{args.resolution}x{args.resolution}" if args.resolution else "the maps' own size"
    model = args.preset if args.pretrained_model_name_or_path is None else args.pretrained_model_name_or_path
    return (
        f"CUDA out of memory training {model} at batch {args.train_batch_size}, {size}, precision {precision}, on a "
        f"GPU with "
        f"{memory}; lower the memory with " + ("; or ".join(remedies) if remedies else "a smaller --resolution")
    )


def check_map_size(pixel_values: torch.Tensor, vae: RadioVAE, discriminator_min: int, source: str) -> None:
    height, width = pixel_values.shape[-2:]
    check_size_divisible(height, width, vae.downsample_factor, f"{source}: the map size", remedy="pass --resolution")
    if min(height, width) < discriminator_min:
        raise ValueError(
            f"{source}: maps are {height}x{width}, smaller than the discriminator's minimum {discriminator_min}; "
            f"pass a larger --resolution or fewer --disc_num_layers"
        )


# ------------------------------------------------------------------------------------------------------------------
# logging and saving
def tracker_config(args: argparse.Namespace) -> Dict[str, Any]:
    """``args`` with values TensorBoard's hparams accept (numbers, strings, booleans)."""
    config = {}
    for key, value in vars(args).items():
        config[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return config


def save_final_model(vae: RadioVAE, output_dir: str) -> None:
    """``save_pretrained`` (safetensors) into ``output_dir``: written to a temporary folder, then each file moved in
    with ``os.replace``, so a reader never sees a half-written file."""
    staging = tempfile.mkdtemp(prefix=".final-model-", suffix=".tmp", dir=output_dir)
    try:
        vae.save_pretrained(staging, safe_serialization=True)
        # weights first: a config.json next to old weights would describe the wrong file for a moment, not vice versa
        names = sorted(os.listdir(staging), key=lambda name: name == "config.json")
        make_files_shareable(staging)  # safetensors writes owner-only files; the model folder is meant to be shared
        for name in names:
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    finally:
        if os.path.isdir(staging):
            for name in os.listdir(staging):
                os.remove(os.path.join(staging, name))
            os.rmdir(staging)


def create_hub_repo(args: argparse.Namespace) -> str:
    """Creates (or finds) the ``--hub_model_id`` repository; called before training so that a missing login or a
    wrong name fails at once, not after the run."""
    from radiodiff_vae.hub import ensure_hub_repo

    return ensure_hub_repo(args.hub_model_id, private=args.hub_private_repo or None)


def push_folder_to_hub(output_dir: str, repo_id: str) -> None:
    """Uploads the final model, card, sample and arguments in ``output_dir`` (no checkpoints, logs or grids)."""
    from radiodiff_vae.hub import push_to_hub

    push_to_hub(
        output_dir,
        repo_id,
        commit_message="Upload RadioVAE trained with examples/train_vae.py",
        ignore_patterns=HUB_IGNORE_PATTERNS,
    )


def _comparable(value: Any) -> Any:
    # config.json turns tuples into lists
    return list(value) if isinstance(value, (list, tuple)) else value


# ------------------------------------------------------------------------------------------------------------------
# the run
def build_loss(args: argparse.Namespace, vae: RadioVAE) -> RadioVAELoss:
    """The VAE-GAN objective of the flags (and, with --load_training_state, the converted discriminator/logvar)."""
    loss_fn = RadioVAELoss(
        kl_weight=args.kl_weight,
        perceptual_weight=args.perceptual_weight,
        logvar_init=args.logvar_init,
        learn_logvar=not args.freeze_logvar,
        disc_start=args.disc_start,
        disc_factor_max=args.disc_factor,
        disc_ramp_steps=args.disc_ramp_steps,
        disc_weight=args.disc_weight,
        gan_loss=args.gan_loss,
        disc_in_channels=vae.config.in_channels,
        disc_num_layers=args.disc_num_layers,
        disc_base_channels=args.disc_base_channels,
        disc_use_actnorm=args.disc_use_actnorm,
    )
    if args.load_training_state:
        from radiodiff_vae.conversion.original import load_training_state

        load_training_state(loss_fn, args.pretrained_model_name_or_path)
        logger.info(f"loaded the discriminator and logvar of {args.pretrained_model_name_or_path}")
    return loss_fn


def register_checkpoint_hooks(accelerator: Accelerator) -> None:
    """Checkpoints hold the models as save_pretrained folders (vae/, discriminator/); loading refuses a folder
    saved with another configuration."""

    def save_model_hook(models: List[torch.nn.Module], weights: List[Dict[str, torch.Tensor]], folder: str) -> None:
        for index in reversed(range(len(models))):
            model = accelerator.unwrap_model(models[index])
            subfolder = "vae" if isinstance(model, RadioVAE) else "discriminator"
            if accelerator.is_main_process:
                model.save_pretrained(os.path.join(folder, subfolder), safe_serialization=True)
            if weights:  # empty under DeepSpeed, which saves the models itself
                weights.pop(index)

    def load_model_hook(models: List[torch.nn.Module], folder: str) -> None:
        while models:
            model = accelerator.unwrap_model(models.pop())
            subfolder = "vae" if isinstance(model, RadioVAE) else "discriminator"
            saved = type(model).from_pretrained(folder, subfolder=subfolder)
            changed = sorted(
                key
                for key in model.config
                if not key.startswith("_") and _comparable(saved.config.get(key)) != _comparable(model.config[key])
            )
            if changed:
                raise ValueError(
                    f"{folder}/{subfolder} was saved with a different configuration ({', '.join(changed)}); "
                    "resume with the flags of the run that wrote it"
                )
            model.load_state_dict(saved.state_dict(), strict=True)
            del saved

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)


def step_records(result, max_grad_norm: float) -> Dict[str, torch.Tensor]:
    """The per-optimizer-step logs: gradient norms and, with clipping on, clip ratios (norm / max_norm; > 1 means
    the group was clipped)."""
    records = {f"grad_norm_{name}": norm for name, norm in result.grad_norms.items()}
    if max_grad_norm > 0:
        records.update({f"clip_ratio_{name}": norm / max_grad_norm for name, norm in result.grad_norms.items()})
    return records


def save_final_outputs(args, accelerator, raw_vae, data, collate, validate, global_step, hub_repo_id) -> None:
    """The end of a run (main process): scaling factor, final validation (and the maps outside training), model,
    sample grid, model card, upload."""
    scaling_factor = measure_scaling_factor(
        raw_vae, data.train, collate, args.scaling_factor_maps, args.train_batch_size, accelerator.device, args.seed
    )
    raw_vae.register_to_config(scaling_factor=scaling_factor)
    final_metrics, grid = validate(global_step, logger)
    description = (
        f"Trained with `examples/train_vae.py` for {global_step} steps on {data.source}; the metrics are "
        f"those of {len(data.validation)} {data.validation_kind}."
    )
    if data.test is not None:
        test_metrics, _ = Validator(
            accelerator, raw_vae, data.test, collate, args.train_batch_size, 0, args.output_dir,
            "maps outside training (RadioUNet's disjoint test split)", prefix="test",
        )(global_step, logger)  # fmt: skip
        scores = ", ".join(
            f"{key} {value:.4f}" for key, value in sorted(test_metrics.items()) if key not in BASELINE_KEYS
        )
        description += (
            f" On {len(data.test)} maps outside training (RadioUNet's disjoint test split, comparable with the "
            f"literature): {scores}; the resize baseline there has PSNR {test_metrics['baseline_psnr']:.2f} dB "
            f"(gap {test_metrics['psnr_gap_db']:+.2f} dB)."
        )
    save_final_model(raw_vae, args.output_dir)
    sample = os.path.join(args.output_dir, "sample.png")
    if grid is not None:
        save_png(grid, sample)
    from radiodiff_vae.hub import save_model_card

    # the maps as validation saw them (at --resolution when it is given)
    size = collate([data.validation[0]])["pixel_values"].shape[-2:]
    baseline = baseline_for_model(raw_vae, *size)
    save_model_card(
        args.output_dir,
        raw_vae,
        training_args=vars(args),
        metrics={key: value for key, value in final_metrics.items() if key not in BASELINE_KEYS},
        baseline={
            "method": baseline.describe(),
            "psnr": final_metrics["baseline_psnr"],
            "ssim": final_metrics["baseline_ssim"],
        },
        sample_image=sample if grid is not None else None,
        repo_id=hub_repo_id,
        description=description,
        eval_dataset=data.label,
        eval_split="validation",
    )
    logger.info(
        f"saved the {'EMA ' if args.use_ema else ''}model to {args.output_dir} (scaling_factor "
        f"{scaling_factor:.4f})"
    )
    if args.push_to_hub:
        push_folder_to_hub(args.output_dir, hub_repo_id)
        logger.info(f"uploaded {args.output_dir} to the Hub repository {hub_repo_id}")


def main(input_args: Optional[Sequence[str]] = None) -> int:
    args = parse_args(input_args)
    tracing, diverging_steps = debug.trace_requested(), debug.nonfinite_steps()  # the tests' hooks

    # ---- accelerator, logging, seed
    logging_dir = os.path.join(args.output_dir, args.logging_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=logging_dir),
        # The shuffling of epoch e depends on (seed, e) only, which makes resuming mid-epoch exact.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("diffusers", "datasets", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING if accelerator.is_local_main_process else logging.ERROR)
    logger.info(accelerator.state, main_process_only=False)
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    set_seed(args.seed)

    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        output_lock = checkpointing.acquire_output_lock(args.output_dir)  # noqa: F841 (held until main returns)
        checkpointing.remove_temporary_checkpoints(args.output_dir)
    accelerator.wait_for_everyone()
    # Before any expensive work: a wrong --resume_from_checkpoint or Hub repository fails here.
    resume_path = checkpointing.resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    hub_repo_id = create_hub_repo(args) if args.push_to_hub and accelerator.is_main_process else None

    # ---- data (the main process first: it fills the datasets cache the others then read)
    with accelerator.main_process_first():
        data = build_datasets(args)
    collate = collate_maps  # a module-level function: data-loading workers can pickle it
    train_dataloader = DataLoader(
        data.train,
        batch_size=args.train_batch_size,
        shuffle=True,
        collate_fn=collate,
        num_workers=args.dataloader_num_workers,
        drop_last=len(data.train) >= args.train_batch_size * accelerator.num_processes,
    )

    # ---- models, loss, optimizers, schedulers
    probe = collate([data.train[0]])["pixel_values"]  # (1, 1, H, W)
    if args.pretrained_model_name_or_path is not None:
        vae = RadioVAE.from_pretrained(args.pretrained_model_name_or_path)
    else:
        overrides = {} if args.latent_channels is None else {"latent_channels": args.latent_channels}
        vae = RadioVAE.from_preset(args.preset, sample_size=int(probe.shape[-1]), **overrides)
    loss_fn = build_loss(args, vae)
    discriminator = loss_fn.discriminator
    check_map_size(probe, vae, discriminator.min_input_size, data.source)
    if args.gradient_checkpointing:
        vae.enable_gradient_checkpointing(full_resolution_only=args.gradient_checkpointing_scope == "full_resolution")
        loss_fn.enable_gradient_checkpointing()
    on_cuda = accelerator.device.type == "cuda"
    channels_last = args.channels_last == "on" or (
        args.channels_last == "auto" and on_cuda and group_norm_keeps_channels_last(accelerator.device)
    )
    if channels_last:
        vae.to(memory_format=torch.channels_last)
        loss_fn.to(memory_format=torch.channels_last)
    if args.autocast_group_norm == "on" or (
        args.autocast_group_norm == "auto" and accelerator.mixed_precision in ("bf16", "fp16")
    ):
        group_norm_in_autocast_dtype(vae)
    if args.compile:
        compile_for_training(vae, loss_fn)
    loss_fn.to(accelerator.device)
    loose_parameters = loss_fn.trainable_autoencoder_parameters()  # [logvar] unless --freeze_logvar

    ema = None
    if args.use_ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(vae.parameters(), decay=args.ema_decay, model_cls=RadioVAE, model_config=vae.config)
        ema.to(accelerator.device)

    adam = dict(betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon, weight_decay=args.adam_weight_decay)
    disc_lr = args.disc_learning_rate or args.learning_rate
    optimizer_ae = torch.optim.Adam(list(vae.parameters()) + loose_parameters, lr=args.learning_rate, **adam)
    optimizer_disc = torch.optim.Adam(discriminator.parameters(), lr=disc_lr, **adam)
    # A prepared scheduler steps once per process per optimizer step, hence the factor. The discriminator's
    # schedule starts at --disc_start: it enters phase 2 at its full rate and decays over the steps it trains.
    processes = accelerator.num_processes
    schedule = dict(
        num_warmup_steps=args.lr_warmup_steps * processes,
        num_training_steps=args.max_train_steps * processes,
        power=args.lr_power,
        num_cycles=args.lr_num_cycles,
    )
    scheduler_ae = build_lr_scheduler(args.lr_scheduler, optimizer_ae, lr_end=args.lr_end, **schedule)
    scheduler_disc = build_lr_scheduler(
        args.lr_scheduler,
        optimizer_disc,
        lr_end=args.lr_end * disc_lr / args.learning_rate,
        start_step=min(args.disc_start, args.max_train_steps - 1) * processes,
        **schedule,
    )

    # ---- one prepare
    vae, discriminator, optimizer_ae, optimizer_disc, scheduler_ae, scheduler_disc, train_dataloader = (
        accelerator.prepare(
            vae, discriminator, optimizer_ae, optimizer_disc, scheduler_ae, scheduler_disc, train_dataloader
        )
    )
    raw_vae: RadioVAE = accelerator.unwrap_model(vae)

    # ---- checkpoint contents: models as save_pretrained folders, plus step counters, logvar and EMA
    register_checkpoint_hooks(accelerator)
    guard = NonFiniteGuard(args.max_nonfinite_steps)
    progress = TrainingProgress(guard)
    accelerator.register_for_checkpointing(progress)
    if loose_parameters:
        accelerator.register_for_checkpointing(TensorState({"logvar": loss_fn.logvar}))
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    # ---- trackers
    if accelerator.is_main_process:
        accelerator.init_trackers(args.tracker_project_name, config=tracker_config(args))
        atomic_write_json(os.path.join(args.output_dir, "training_args.json"), vars(args))

    # ---- resume
    if resume_path is not None:
        logger.info(f"Resuming from {resume_path}")
        accelerator.load_state(resume_path)
        expected = checkpointing.checkpoint_step(resume_path)
        if progress.global_step != expected:
            raise ValueError(f"{resume_path} holds step {progress.global_step}, its name says {expected}")
        if ema is not None:
            ema.to(accelerator.device)  # accelerate loads registered objects onto the CPU
    global_step = progress.global_step

    steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    num_epochs = math.ceil(args.max_train_steps / steps_per_epoch)
    images_per_step = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(
        f"{data.source}: {len(data.train)} training maps, {len(data.validation)} {data.validation_kind}; "
        f"{accelerator.num_processes} process(es) x batch {args.train_batch_size} x accumulation "
        f"{args.gradient_accumulation_steps} = {images_per_step} maps per step; {args.max_train_steps} steps "
        f"(phase 2 from step {args.disc_start}); starting at step {global_step}"
    )

    # ---- loop
    same_size_batches = train_dataloader.drop_last or len(data.train) % args.train_batch_size == 0
    torch.backends.cudnn.benchmark = args.cudnn_benchmark == "on" or (
        args.cudnn_benchmark == "auto" and on_cuda and same_size_batches
    )
    train_step = VAEGANStep(
        accelerator, vae, discriminator, loss_fn, optimizer_ae, optimizer_disc, scheduler_ae, scheduler_disc,
        guard, max_grad_norm=args.max_grad_norm, seed=args.seed, channels_last=channels_last,
    )  # fmt: skip
    validate = Validator(
        accelerator, raw_vae, data.validation, collate, args.train_batch_size, args.num_validation_images,
        args.output_dir, data.validation_kind, ema=ema,
    )  # fmt: skip
    window, meter = LogWindow(), ThroughputMeter()
    names_seen: List[str] = []
    last_checkpoint = resume_path
    progress_bar = tqdm(
        total=args.max_train_steps, initial=global_step, desc="steps", disable=not accelerator.is_local_main_process
    )
    try:
        for epoch in range(global_step // steps_per_epoch, num_epochs):
            if global_step >= args.max_train_steps:
                break
            train_dataloader.set_epoch(epoch)
            batches_done = (global_step % steps_per_epoch) * args.gradient_accumulation_steps
            resuming = epoch == global_step // steps_per_epoch and batches_done
            loader = accelerator.skip_first_batches(train_dataloader, batches_done) if resuming else train_dataloader
            for batch in loader:
                if tracing:
                    names_seen.extend(batch["name"])
                diverge = global_step in diverging_steps  # the tests' way to exercise the non-finite guard
                with debug.nonfinite_generator_objective(loss_fn) if diverge else contextlib.nullcontext():
                    result = train_step(batch["pixel_values"], global_step)  # (B, 1, H, W) in [-1, 1]
                window.add_micro_batch(result.logs, result.finite)
                if not result.sync:
                    continue
                # ---- one optimizer step done
                if result.applied and ema is not None:
                    ema.step(raw_vae.parameters())
                global_step += 1
                progress.global_step = global_step
                meter.update(images_per_step)
                progress_bar.update(1)
                if guard.exhausted:
                    raise NonFiniteLossError(guard.describe_streak(global_step - 1))
                window.add_step(step_records(result, args.max_grad_norm))
                phase = 2 if result.adversarial else 1

                if global_step % args.logging_steps == 0 or global_step == args.max_train_steps:
                    record = {f"train/{key}": value for key, value in window.summary(accelerator).items()}
                    record.update(
                        {
                            "train/phase": phase,
                            "train/lr_autoencoder": scheduler_ae.get_last_lr()[0],
                            "train/lr_discriminator": scheduler_disc.get_last_lr()[0],
                            "train/images_per_second": meter.images_per_second,
                            "train/seconds_per_step": meter.seconds_per_step,
                            "train/peak_memory_mib": peak_memory_mib(accelerator.device),
                            "train/nonfinite_steps_skipped": guard.total,
                            "train/epoch": epoch,
                        }
                    )
                    accelerator.log(record, step=global_step)
                    progress_bar.set_postfix(
                        phase=phase, loss=f"{record['train/total']:.4g}", rec=f"{record['train/rec']:.4f}",
                        skipped=guard.total, refresh=False,
                    )  # fmt: skip
                    window.reset()
                    meter.reset()

                if global_step % args.checkpointing_steps == 0:
                    last_checkpoint = checkpointing.save_checkpoint(
                        accelerator,
                        args.output_dir,
                        global_step,
                        total_limit=args.checkpoints_total_limit,
                        keep_step=args.disc_start,
                        metadata={"phase_of_last_step": phase},
                    )
                    logger.info(f"saved {last_checkpoint}")

                if global_step % args.validation_steps == 0 and global_step < args.max_train_steps:
                    if accelerator.is_main_process:
                        validate(global_step, logger)
                    accelerator.wait_for_everyone()

                if global_step >= args.max_train_steps:
                    break
    except NonFiniteLossError as error:
        progress_bar.close()
        message = (
            f"stopping: {error}. The weights were not updated by those steps; the last good checkpoint is "
            f"{last_checkpoint or '(none saved yet)'}. See docs/training.md, 'Training instability'."
        )
        logger.error(message, main_process_only=True)
        accelerator.end_training()
        return 3
    progress_bar.close()

    # ---- the end: (EMA) weights, scaling factor, final validation, model card, upload
    accelerator.wait_for_everyone()
    if tracing:
        debug.write_trace(args.output_dir, accelerator, raw_vae, discriminator, loss_fn, names_seen, global_step, guard)
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(raw_vae.parameters())
            validate.ema = None  # the weights are the EMA's from here on
        save_final_outputs(args, accelerator, raw_vae, data, collate, validate, global_step, hub_repo_id)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


def run_from_command_line(input_args: Optional[Sequence[str]] = None) -> int:
    """``main`` with bad input reported as one line ``train_vae.py: error: ...`` and exit code 2, no traceback.

    A map file that fails while training names itself and the checkpoint to resume from; a run that fails before
    writing anything but the folder and its lock leaves no folder behind.
    """
    parser = build_parser()
    output_dir = None
    try:
        output_dir = parse_args_with_config(build_parser(), input_args).output_dir
    except USER_ERRORS:
        pass  # main parses again and reports it
    created = output_dir is not None and not os.path.exists(output_dir)
    try:
        return main(input_args)
    except torch.OutOfMemoryError:
        if show_traceback():
            raise
        args = parse_args_with_config(build_parser(), input_args)
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
        parser.exit(1, f"{parser.prog}: error: {out_of_memory_message(args, device)}\n")
    except USER_ERRORS as error:
        if show_traceback():
            raise
        message = one_line(error)
        if isinstance(error, MapFileError) and output_dir is not None:
            latest = checkpointing.find_latest_checkpoint(output_dir)
            message += (
                f"; the checkpoints are intact: fix or remove the file and resume from {latest} "
                "(--resume_from_checkpoint latest)"
                if latest
                else "; no checkpoint was saved yet"
            )
        if created and _is_rank_zero() and os.path.isdir(output_dir):
            if set(os.listdir(output_dir)) <= checkpointing.LOCK_FILES:
                shutil.rmtree(output_dir, ignore_errors=True)
        # Every process of a launch fails on bad flags alike: one of them says so.
        if _is_rank_zero() or isinstance(error, MapFileError):
            parser.exit(2, f"{parser.prog}: error: {message}\n")
        parser.exit(2)


if __name__ == "__main__":
    sys.exit(run_from_command_line())
