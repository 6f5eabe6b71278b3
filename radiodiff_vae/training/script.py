"""What every training script of the package does around its loop: run from the command line with bad input as one
line, the folders checked before any work, the accelerator with its logging and seed, the trackers' configuration,
the Hugging Face Hub repository and upload, the final model written atomically, and the one-line message of a CUDA
out-of-memory error.

A script built on them (``examples/train_vae.py``, ``examples/train_radiodiff.py``)::

    def parse_args(input_args=None):
        ...                                                     # radiodiff_vae.training.arguments
        resume_path = check_paths(args)                         # then the script's own checks of the checkpoint
        return args

    def main(args):                                             # returns the exit code
        accelerator = make_accelerator(args)
        ...
        repo_id = create_hub_repo(args.hub_model_id, args.hub_private_repo) if args.push_to_hub else None
        accelerator.init_trackers("my-project", config=tracker_config(args))
        ...                                                     # the loop
        save_final_model(model, args.output_dir)
        push_output_folder(args.output_dir, repo_id, "Upload a model trained with my_script.py")

    if __name__ == "__main__":
        sys.exit(run_command_line(parse_args, main, prog="my_script.py"))
"""

import argparse
import contextlib
import logging
import os
import sys
from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Sequence, Tuple

from accelerate.logging import get_logger

from ..atomic import atomic_directory, atomic_write_json
from ..errors import MapFileError, check_output_folder, is_user_error, one_line, show_traceback
from . import checkpointing
from .state import epoch_length, resume_position

logger = get_logger(__name__, log_level="INFO")

# What a run writes into its output folder beside the model and is never uploaded: checkpoints, tracker logs,
# validation grids, debug traces, staging folders, and the output folder's lock.
HUB_IGNORE_PATTERNS = [
    "checkpoint-*", "checkpoint-*/**", "logs/**", "validation/**", "test/**", "debug/**", "*.tmp", "*.tmp/**", ".*",
    "*.lock", "*.owner",
]  # fmt: skip


def is_rank_zero() -> bool:
    """Whether this is the first process of a launch, before any ``Accelerator`` exists (torchrun's ``RANK``)."""
    return int(os.environ.get("RANK", "0")) == 0


def check_paths(args: argparse.Namespace) -> Optional[str]:
    """Checks the folders a run reads and writes before anything is written: ``--output_dir`` writable and not in
    use, the RadioMapSeer layout of ``--data_dir``, and the ``--resume_from_checkpoint`` folder (found, complete).

    Returns:
        The checkpoint the run resumes from, or None for a fresh start; the script then checks that it holds the
        models its flags build (:func:`radiodiff_vae.training.checkpointing.check_checkpoint_architecture`).
    """
    check_output_folder(args.output_dir, "--output_dir")
    if is_rank_zero():  # the other processes of a launch may start after rank 0 took the lock
        checkpointing.check_output_not_locked(args.output_dir)
    if args.data_dir is not None:
        from ..data.radiomapseer import check_radiomapseer_folder

        check_radiomapseer_folder(args.data_dir, args.simulation)
    return checkpointing.resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)


def make_accelerator(args: argparse.Namespace) -> Any:
    """The run's ``Accelerator`` (accumulation, precision, trackers, and the seedable data order that makes a
    mid-epoch resume exact), the log on stdout, TF32, and the seed."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
        # The shuffling of epoch e depends on (seed, e) only, which makes resuming mid-epoch exact.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    # Logs go to stdout: stderr is for what went wrong (one line for bad input), warnings and the progress bar.
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, stream=sys.stdout)
    for noisy in ("diffusers", "datasets", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING if accelerator.is_local_main_process else logging.ERROR)
    logger.info(accelerator.state, main_process_only=False)
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    set_seed(args.seed)
    return accelerator


def start_trackers(accelerator: Any, args: argparse.Namespace) -> None:
    """The trackers of ``--report_to`` under ``--tracker_project_name``, and ``training_args.json`` in
    ``--output_dir`` (the flags the run used, its resolved defaults included); main process only."""
    if accelerator.is_main_process:
        accelerator.init_trackers(args.tracker_project_name, config=tracker_config(args))
        atomic_write_json(os.path.join(args.output_dir, "training_args.json"), vars(args))


@contextlib.contextmanager
def hold_output_dir(accelerator: Any, args: argparse.Namespace) -> Iterator[Tuple[Optional[str], Optional[str]]]:
    """Holds the lock of ``--output_dir`` for the run (everything it writes happens inside; the lock's files go with
    the lock) and yields ``(resume_path, hub_repo_id)``: the checkpoint to resume from (None for a fresh start) and,
    on the main process with ``--push_to_hub``, the Hub repository, created now so that a wrong
    ``--resume_from_checkpoint``, a missing login or a wrong name fails before any expensive work."""
    with checkpointing.lock_output_dir(accelerator, args.output_dir):
        resume_path = checkpointing.resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
        pushes = args.push_to_hub and accelerator.is_main_process
        yield resume_path, create_hub_repo(args.hub_model_id, args.hub_private_repo) if pushes else None


class LoopStart(NamedTuple):
    """Where a run's loop starts: its optimizer step, the epoch and the micro-batches of it already trained on
    (``accelerator.skip_first_batches``), and the epochs ``--max_train_steps`` needs."""

    global_step: int
    first_epoch: int
    batches_to_skip: int
    num_epochs: int


def resume_from(
    accelerator: Any, resume_path: Optional[str], progress: Any, num_batches: int, max_train_steps: int, ema: Any = None
) -> LoopStart:
    """Loads the checkpoint ``resume_path`` (the weights, optimizers, schedulers, random states, and the registered
    ``progress`` and ``ema``; nothing for a fresh start, ``resume_path`` None) and places the loop over a prepared
    DataLoader of ``num_batches`` micro-batches after the step it holds."""
    if resume_path is not None:
        logger.info(f"Resuming from {resume_path}")
        checkpointing.load_checkpoint(accelerator, resume_path, progress)
        if ema is not None:
            ema.to(accelerator.device)  # accelerate loads registered objects onto the CPU
    accumulation = accelerator.gradient_accumulation_steps
    steps_per_epoch, num_epochs = epoch_length(num_batches, accumulation, max_train_steps)
    first_epoch, batches_to_skip = resume_position(progress.global_step, steps_per_epoch, accumulation)
    return LoopStart(progress.global_step, first_epoch, batches_to_skip, num_epochs)


def tracker_config(args: argparse.Namespace) -> Dict[str, Any]:
    """``args`` with values TensorBoard's hparams accept (numbers, strings, booleans; anything else as text)."""
    simple = (int, float, str, bool)
    return {key: value if isinstance(value, simple) else str(value) for key, value in vars(args).items()}


def create_hub_repo(repo_id: str, private: bool = False) -> str:
    """Creates (or finds) the Hub repository ``repo_id`` and returns its full ``user/name``. Call it before training,
    so that a missing login or a wrong name fails at once, not after the run."""
    from huggingface_hub import HfApi

    from ..hub_id import check_repo_id

    check_repo_id(repo_id)
    return HfApi().create_repo(repo_id, private=private or None, exist_ok=True).repo_id


def push_output_folder(output_dir: str, repo_id: str, commit_message: str) -> None:
    """Uploads a finished run's folder in one commit: the model, its card and sample, ``training_args.json``; not its
    checkpoints, logs, grids or lock (:data:`HUB_IGNORE_PATTERNS`)."""
    from huggingface_hub import HfApi

    HfApi().upload_folder(
        repo_id=repo_id, folder_path=output_dir, commit_message=commit_message, ignore_patterns=HUB_IGNORE_PATTERNS
    )


def save_final_model(model, output_dir: str) -> None:
    """``model.save_pretrained`` (safetensors) into ``output_dir``, beside the run's checkpoints and logs: each file
    replaces its namesake atomically, ``config.json`` last (:func:`radiodiff_vae.atomic.atomic_directory` with
    ``merge``), so a reader never sees a half-written file nor a config describing other weights."""
    with atomic_directory(output_dir, merge=True, last=("config.json",)) as staging:
        model.save_pretrained(staging, safe_serialization=True)


def out_of_memory_message(
    model: str,
    batch_size: int,
    gradient_accumulation_steps: int,
    mixed_precision: Optional[str],
    resolution: Optional[int] = None,
    device: Any = None,
    remedies: Sequence[str] = (),
) -> str:
    """One line for a CUDA out-of-memory error: what ran, on how much memory, and the flags that lower it.

    Args:
        model (`str`): what was trained (a preset or a model path).
        batch_size, gradient_accumulation_steps, mixed_precision, resolution: the run's flags (``--train_batch_size``
            ...); ``mixed_precision`` None means the accelerate config's, ``resolution`` None the maps' own size.
        device (`torch.device`, *optional*): the GPU, for its memory and name.
        remedies (`Sequence[str]`): the script's own remedies first (e.g. its gradient-checkpointing flag); halving
            the batch at the same maps per step, and bf16, follow.
    """
    import torch

    memory = "unknown"
    if device is not None and torch.device(device).type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        memory = f"{properties.total_memory / 2**30:.1f} GiB ({properties.name})"
    remedies = list(remedies)
    if batch_size > 1:
        smaller = max(1, batch_size // 2)
        accumulation = gradient_accumulation_steps * batch_size // smaller
        remedies.append(
            f"--train_batch_size {smaller} --gradient_accumulation_steps {accumulation} (the same maps per step)"
        )
    if mixed_precision not in ("bf16", "fp16"):
        remedies.append("--mixed_precision bf16")
    size = f"{resolution}x{resolution}" if resolution else "the maps' own size"
    precision = mixed_precision or "the accelerate config's"
    return (
        f"CUDA out of memory training {model} at batch {batch_size}, {size}, precision {precision}, on a GPU with "
        f"{memory}; lower the memory with " + ("; or ".join(remedies) if remedies else "a smaller --resolution")
    )


def run_command_line(
    parse_args: Callable[[Optional[Sequence[str]]], argparse.Namespace],
    main: Callable[[argparse.Namespace], int],
    prog: str,
    input_args: Optional[Sequence[str]] = None,
    out_of_memory: Optional[Callable[[argparse.Namespace, Any], str]] = None,
) -> int:
    """Runs ``main(parse_args(input_args))`` as a command: bad input (:func:`radiodiff_vae.errors.is_user_error`) is
    one line ``PROG: error: ...`` and exit code 2, a CUDA out-of-memory error one line and exit code 1; any other
    exception is a bug and keeps its traceback.

    A map file that fails while training names itself and the checkpoint to resume from; a run that fails before
    writing anything into the ``args.output_dir`` it created leaves no folder behind. Every process of a launch
    fails alike on bad flags: the first one says so.

    Args:
        parse_args: flags -> namespace (with ``output_dir``), raising typed errors on bad values.
        main: the run; returns the exit code. It must release the output folder's lock before it returns or raises.
        prog (`str`): the command's name in the message.
        out_of_memory: ``(args, device) -> str``, the line for a CUDA out-of-memory error (see
            :func:`out_of_memory_message`); without it the error keeps its traceback.
    """
    try:
        args = parse_args(input_args)
    except Exception as error:
        _exit_on_user_error(error, prog)
        raise
    created = not os.path.exists(args.output_dir)
    try:
        return main(args)
    except Exception as error:
        import torch

        if isinstance(error, torch.OutOfMemoryError) and out_of_memory is not None and not show_traceback():
            device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
            _exit(1, f"{prog}: error: {out_of_memory(args, device)}")
        message = one_line(error)
        if isinstance(error, MapFileError):
            latest = checkpointing.find_latest_checkpoint(args.output_dir)
            message += (
                f"; the checkpoints are intact: fix or remove the file and resume from {latest} "
                "(--resume_from_checkpoint latest)"
                if latest
                else "; no checkpoint was saved yet"
            )
        if is_user_error(error) and created and is_rank_zero() and os.path.isdir(args.output_dir):
            if not os.listdir(args.output_dir):  # the lock's files went with the lock
                os.rmdir(args.output_dir)
        _exit_on_user_error(error, prog, message, everyone=isinstance(error, MapFileError))
        raise


def _exit(code: int, line: Optional[str]) -> None:
    if line:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    sys.exit(code)


def _exit_on_user_error(error: Exception, prog: str, message: Optional[str] = None, everyone: bool = False) -> None:
    """Exits with code 2 and one line for bad input; returns (for the caller to re-raise) for anything else."""
    if not is_user_error(error) or show_traceback():
        return
    line = f"{prog}: error: {message or one_line(error)}"
    _exit(2, line if everyone or is_rank_zero() else None)
