"""Atomic training checkpoints: ``output_dir/checkpoint-N`` folders written by ``accelerator.save_state``.

A checkpoint is first written to ``checkpoint-N.tmp``; once every process has finished writing, the main process
adds a completion marker (``checkpoint_complete.json``) and renames the folder to ``checkpoint-N`` with
``os.replace``, which is atomic on one filesystem. So a process killed while saving leaves at worst a ``*.tmp``
folder, which ``latest`` never picks and the next run deletes. ``checkpoint-N`` folders without the marker (copied
by hand, or written by another tool) are also never picked by ``latest``.

With several nodes, ``output_dir`` must be on a filesystem that every node sees (as ``accelerator.save_state``
itself assumes): each process writes its own random-number state into the shared folder.
"""

import json
import logging
import os
import re
import shutil
import time
from typing import Any, Dict, List, Optional, Tuple

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TEMPORARY_SUFFIX = ".tmp"
COMPLETE_MARKER = "checkpoint_complete.json"
MARKER_FORMAT_VERSION = 1

_COMPLETE_NAME = re.compile(r"^checkpoint-(\d+)$")
_TEMPORARY_NAME = re.compile(r"^checkpoint-\d+(\.[A-Za-z0-9_]+)*\.tmp$")


def checkpoint_dir(output_dir: str, step: int) -> str:
    """The folder of the checkpoint taken after ``step`` optimizer steps."""
    if step < 0:
        raise ValueError(f"a checkpoint step must be >= 0, got {step}")
    return os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")


def checkpoint_step(path: str) -> Optional[int]:
    """``.../checkpoint-12`` -> 12; None for any other name (``checkpoint-12.tmp`` included)."""
    match = _COMPLETE_NAME.match(os.path.basename(os.path.normpath(path)))
    return int(match.group(1)) if match else None


def read_checkpoint_marker(path: str) -> Optional[Dict[str, Any]]:
    """The completion marker's content, or None when the folder is not a complete checkpoint."""
    marker = os.path.join(path, COMPLETE_MARKER)
    step = checkpoint_step(path)
    if step is None or not os.path.isfile(marker):
        return None
    try:
        with open(marker, "r", encoding="utf-8") as handle:
            content = json.load(handle)
    except (OSError, json.JSONDecodeError):
        return None
    # A marker copied from another checkpoint does not make this one complete.
    if not isinstance(content, dict) or content.get("step") != step:
        return None
    return content


def is_complete_checkpoint(path: str) -> bool:
    return read_checkpoint_marker(path) is not None


def list_checkpoints(output_dir: str) -> List[Tuple[int, str]]:
    """Complete checkpoints in ``output_dir`` as ``(step, path)``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        step = checkpoint_step(name)
        if step is None or not os.path.isdir(path):
            continue
        if is_complete_checkpoint(path):
            found.append((step, path))
        else:
            logger.warning("ignoring %s: it has no completion marker (%s)", path, COMPLETE_MARKER)
    return sorted(found)


def find_latest_checkpoint(output_dir: str) -> Optional[str]:
    """The complete checkpoint with the highest step, or None."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def resolve_resume_checkpoint(resume_from_checkpoint: Optional[str], output_dir: str) -> Optional[str]:
    """Turns ``--resume_from_checkpoint`` into a checkpoint folder.

    ``None`` -> None (fresh run); ``"latest"`` -> the newest complete checkpoint in ``output_dir`` or None when there
    is none yet (so one command line both starts and resumes a run); otherwise a path, or a folder name inside
    ``output_dir``, which must be a complete checkpoint.

    Raises:
        FileNotFoundError: the named checkpoint does not exist.
        ValueError: it exists but is not a complete checkpoint.
    """
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        return find_latest_checkpoint(output_dir)
    candidates = [resume_from_checkpoint, os.path.join(output_dir, resume_from_checkpoint)]
    path = next((candidate for candidate in candidates if os.path.isdir(candidate)), None)
    if path is None:
        raise FileNotFoundError(
            f"--resume_from_checkpoint {resume_from_checkpoint!r}: no such folder (looked at {candidates[0]!r} and "
            f"{candidates[1]!r}); pass 'latest' or a checkpoint-N folder"
        )
    if checkpoint_step(path) is None:
        raise ValueError(f"--resume_from_checkpoint {path!r}: expected a folder named checkpoint-N")
    if not is_complete_checkpoint(path):
        raise ValueError(
            f"--resume_from_checkpoint {path!r}: the checkpoint is incomplete (no valid {COMPLETE_MARKER}); it was "
            "probably interrupted while saving"
        )
    return path


def remove_temporary_checkpoints(output_dir: str) -> List[str]:
    """Deletes ``checkpoint-N*.tmp`` folders left by interrupted saves. Call on the main process only."""
    removed = []
    if not os.path.isdir(output_dir):
        return removed
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        if _TEMPORARY_NAME.match(name) and os.path.isdir(path):
            shutil.rmtree(path)
            removed.append(path)
            logger.info("removed %s, left by an interrupted save", path)
    return removed


def prune_checkpoints(output_dir: str, total_limit: Optional[int]) -> List[str]:
    """Keeps the ``total_limit`` newest complete checkpoints and deletes the older ones (None keeps all)."""
    if total_limit is None:
        return []
    if total_limit < 1:
        raise ValueError(f"checkpoints_total_limit must be >= 1 or None, got {total_limit}")
    checkpoints = list_checkpoints(output_dir)
    removed = []
    for _, path in checkpoints[: max(0, len(checkpoints) - total_limit)]:
        shutil.rmtree(path)
        removed.append(path)
        logger.info("removed %s (checkpoints_total_limit=%d)", path, total_limit)
    return removed


def _write_marker(folder: str, content: Dict[str, Any]) -> None:
    marker = os.path.join(folder, COMPLETE_MARKER)
    partial = marker + ".partial"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, marker)


def save_checkpoint(
    accelerator,
    output_dir: str,
    step: int,
    total_limit: Optional[int] = None,
    metadata: Optional[Dict[str, Any]] = None,
) -> str:
    """Saves ``accelerator.save_state`` atomically as ``output_dir/checkpoint-{step}``. Call on every process.

    Older checkpoints beyond ``total_limit`` are deleted only after the new one is complete, so an interrupted save
    never costs a good checkpoint.

    Returns:
        The path of the new checkpoint.
    """
    final_path = checkpoint_dir(output_dir, step)
    temporary_path = final_path + TEMPORARY_SUFFIX
    if accelerator.is_main_process:
        if os.path.isdir(temporary_path):
            shutil.rmtree(temporary_path)
        os.makedirs(temporary_path)
    accelerator.wait_for_everyone()

    accelerator.save_state(temporary_path)
    accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        marker = {
            "format": MARKER_FORMAT_VERSION,
            "step": step,
            "num_processes": accelerator.num_processes,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if metadata:
            marker["metadata"] = metadata
        _write_marker(temporary_path, marker)
        superseded = None
        if os.path.isdir(final_path):
            # os.replace cannot replace a non-empty folder: move the old one aside first (still a *.tmp name, so
            # never picked by `latest`, and removed by the next run if we die here).
            superseded = final_path + ".old" + TEMPORARY_SUFFIX
            if os.path.isdir(superseded):
                shutil.rmtree(superseded)
            os.replace(final_path, superseded)
        os.replace(temporary_path, final_path)
        if superseded is not None:
            shutil.rmtree(superseded)
        prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final_path
