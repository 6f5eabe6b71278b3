"""Helpers of the training scripts (``examples/train_vae.py``, ``examples/train_radiodiff.py``): the flags they
share (:mod:`.arguments`), configuration files, atomic checkpoints and their model folders, the step counter, the
training clock and the resume arithmetic, learning-rate schedule, the VAE-GAN step, its logging window, non-finite-step
guard, repeatable step noise, throughput meter, validation; and, in :mod:`.script`, what a script does around its
loop (one-line errors, the folders checked, the accelerator, trackers, the Hub, the final model)."""

from .arguments import add_auto_switch, add_training_arguments, check_training_arguments, training_parser

from .checkpointing import (
    find_latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    remove_temporary_checkpoints,
    resolve_resume_checkpoint,
    save_checkpoint,
)
from .compilation import compile_for_training
from .config import load_yaml_config, parse_args_with_config
from .gradients import clip_grad_norms, step_optimizers
from .log_window import LogWindow
from .lr_schedule import SCHEDULER_NAMES, build_lr_scheduler
from .meter import ThroughputMeter, peak_memory_mib
from .nonfinite import NonFiniteGuard, NonFiniteLossError
from .seeding import step_generator
from .state import TrainingClock, TrainingProgress, epoch_length, resume_position
from .step import StepOutput, VAEGANStep
from .validation import (
    Validator,
    evaluate_reconstructions,
    measure_scaling_factor,
    save_png,
    spread_indices,
    spread_subset,
)
from .visualization import make_reconstruction_grid

__all__ = [
    "LogWindow",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "SCHEDULER_NAMES",
    "ThroughputMeter",
    "StepOutput",
    "TrainingClock",
    "TrainingProgress",
    "VAEGANStep",
    "Validator",
    "add_auto_switch",
    "add_training_arguments",
    "build_lr_scheduler",
    "check_training_arguments",
    "clip_grad_norms",
    "compile_for_training",
    "epoch_length",
    "evaluate_reconstructions",
    "find_latest_checkpoint",
    "list_checkpoints",
    "load_yaml_config",
    "make_reconstruction_grid",
    "measure_scaling_factor",
    "parse_args_with_config",
    "peak_memory_mib",
    "prune_checkpoints",
    "remove_temporary_checkpoints",
    "resolve_resume_checkpoint",
    "resume_position",
    "save_checkpoint",
    "save_png",
    "spread_indices",
    "spread_subset",
    "step_generator",
    "step_optimizers",
    "training_parser",
]
