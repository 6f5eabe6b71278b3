"""What every training script of the package does around its loop: run from the command line with bad input as one
line, the trackers' configuration, the Hugging Face Hub repository and upload, the final model written atomically,
and the one-line message of a CUDA out-of-memory error.

A script built on them (``examples/train_vae.py``)::

    def main(args):                                             # returns the exit code
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
import os
import sys
from typing import Any, Callable, Dict, Optional, Sequence

from ..atomic import atomic_directory
from ..errors import MapFileError, is_user_error, one_line, show_traceback
from . import checkpointing

# What a run writes into its output folder beside the model and is never uploaded: checkpoints, tracker logs,
# validation grids, debug traces, staging folders, and the output folder's lock.
HUB_IGNORE_PATTERNS = [
    "checkpoint-*", "checkpoint-*/**", "logs/**", "validation/**", "test/**", "debug/**", "*.tmp", "*.tmp/**", ".*",
    "*.lock", "*.owner",
]  # fmt: skip


def is_rank_zero() -> bool:
    """Whether this is the first process of a launch, before any ``Accelerator`` exists (torchrun's ``RANK``)."""
    return int(os.environ.get("RANK", "0")) == 0


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
