"""Atomic training checkpoints: ``output_dir/checkpoint-N`` folders written by ``accelerator.save_state``.

A checkpoint is first written to ``checkpoint-N.tmp``; once every process has finished writing, the main process
adds a completion marker (``checkpoint_complete.json``) and renames the folder to ``checkpoint-N`` with
``os.replace``, which is atomic on one filesystem. So a process killed while saving leaves at worst a ``*.tmp``
folder, which ``latest`` never picks and the next run deletes. ``checkpoint-N`` folders without the marker (copied
by hand, or written by another tool) are also never picked by ``latest``.

The marker records the size and SHA-256 of every file of the checkpoint, verified before a resume: a checkpoint
damaged after it was written (a disk error, a partial copy between machines) is refused, naming the file, and
``latest`` falls back to the newest intact one. Pruning renames a checkpoint to ``checkpoint-N.pruned.tmp`` before
deleting it, so a process killed while pruning leaves a ``*.tmp`` folder, which the next run deletes. A lock file in
``output_dir`` (``filelock``, so on every platform) keeps two runs from writing into one folder.

With several nodes, ``output_dir`` must be on a filesystem that every node sees (as ``accelerator.save_state``
itself assumes): each process writes its own random-number state into the shared folder.
"""

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
from typing import Any, Dict, List, Optional, Tuple

from filelock import FileLock, Timeout

from ..atomic import make_files_shareable
from ..errors import DamagedCheckpointError, NoSpaceLeftError, OutputFolderInUseError

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TEMPORARY_SUFFIX = ".tmp"
COMPLETE_MARKER = "checkpoint_complete.json"
# 2: the marker lists every file with its size and SHA-256 ("files"); markers of format 1 are trusted unverified.
MARKER_FORMAT_VERSION = 2
LOCK_FILE = "train_vae.lock"  # held with filelock.FileLock for the whole run
OWNER_FILE = "train_vae.owner"  # PID and host of the lock's holder, for the message; empty after a clean end
LOCK_FILES = frozenset({LOCK_FILE, OWNER_FILE})
PRUNED_SUFFIX = ".pruned" + TEMPORARY_SUFFIX
# A failed write with less free space than this is reported as a full disk: torch reports ENOSPC as an iostream
# RuntimeError without an errno, and the space a failed write leaves is what did not fit of its last file.
_FULL_DISK_BYTES = 64 << 20

_VERIFIED = set()  # (real path, (inode, size, mtime) of each file) of checkpoints verified by this process
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


def file_manifest(folder: str) -> Dict[str, Dict[str, Any]]:
    """``{relative path: {"size": bytes, "sha256": hex}}`` of every file under ``folder`` except the marker."""
    manifest = {}
    for directory, subdirectories, names in os.walk(folder):
        subdirectories.sort()
        for name in sorted(names):
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, folder).replace(os.sep, "/")
            if relative in (COMPLETE_MARKER, COMPLETE_MARKER + ".partial"):
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 22):
                    digest.update(chunk)
            manifest[relative] = {"size": os.path.getsize(path), "sha256": digest.hexdigest()}
    return manifest


def verify_checkpoint(path: str) -> None:
    """Checks the files of a complete checkpoint against the sizes and checksums its marker records.

    Raises:
        DamagedCheckpointError: a file is missing, has another size or another checksum (the message names it).
        ValueError: ``path`` is not a complete checkpoint.
    """
    marker = read_checkpoint_marker(path)
    if marker is None:
        raise ValueError(f"{path} is not a complete checkpoint (no valid {COMPLETE_MARKER})")
    recorded = marker.get("files")
    if recorded is None:  # format 1: nothing to verify against
        return
    for relative, expected in sorted(recorded.items()):
        file_path = os.path.join(path, relative)
        if not os.path.isfile(file_path):
            raise DamagedCheckpointError(f"{path} is damaged: {relative} is missing")
        size = os.path.getsize(file_path)
        if size != expected["size"]:
            raise DamagedCheckpointError(
                f"{path} is damaged: {relative} has {size} bytes, {expected['size']} when it was written"
            )
    # The script checks a checkpoint before any work and again when it loads it: hash it once, unless a file changed.
    stats = [os.stat(os.path.join(path, relative)) for relative in sorted(recorded)]
    key = (os.path.realpath(path), tuple((stat.st_ino, stat.st_size, stat.st_mtime_ns) for stat in stats))
    if key in _VERIFIED:
        return
    # Sizes first (cheap), checksums only when every size matches.
    actual = file_manifest(path)
    for relative, expected in sorted(recorded.items()):
        if actual[relative]["sha256"] != expected["sha256"]:
            raise DamagedCheckpointError(
                f"{path} is damaged: the checksum of {relative} differs from when it was written"
            )
    _VERIFIED.add(key)


def find_latest_checkpoint(output_dir: str) -> Optional[str]:
    """The intact complete checkpoint with the highest step, or None. A damaged newer one is skipped with a warning
    that names it."""
    for _, path in reversed(list_checkpoints(output_dir)):
        try:
            verify_checkpoint(path)
        except DamagedCheckpointError as error:
            logger.warning("%s; falling back to an older checkpoint", error)
            continue
        return path
    return None


def _previous_checkpoint_hint(path: str) -> str:
    step = checkpoint_step(path)
    output_dir = os.path.dirname(os.path.normpath(path))
    older = [candidate for candidate_step, candidate in list_checkpoints(output_dir) if candidate_step < step]
    for candidate in reversed(older):
        try:
            verify_checkpoint(candidate)
        except DamagedCheckpointError:
            continue
        return f"resume from the previous checkpoint, {candidate}"
    return "no older intact checkpoint exists in the same folder; start a fresh run"


def resolve_resume_checkpoint(resume_from_checkpoint: Optional[str], output_dir: str) -> Optional[str]:
    """Turns ``--resume_from_checkpoint`` into a checkpoint folder.

    ``None`` -> None (fresh run); ``"latest"`` -> the newest intact complete checkpoint in ``output_dir`` or None when
    there is none yet (so one command line both starts and resumes a run); otherwise a path, or a folder name inside
    ``output_dir``, which must be a complete, intact checkpoint.

    Raises:
        FileNotFoundError: the named checkpoint does not exist.
        DamagedCheckpointError: its files do not match its marker (the message names the file and the checkpoint to
            resume from instead).
        ValueError: it exists but is not a complete checkpoint.
    """
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        latest = find_latest_checkpoint(output_dir)
        complete = list_checkpoints(output_dir)
        if latest is None and complete:
            # Starting afresh here would later prune the damaged checkpoints the user may still want to repair.
            raise DamagedCheckpointError(
                f"--resume_from_checkpoint latest: every checkpoint in {output_dir} is damaged (newest: "
                f"{complete[-1][1]}); repair or remove them, or pick another --output_dir"
            )
        return latest
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
            f"--resume_from_checkpoint {path!r}: the checkpoint is incomplete (no valid {COMPLETE_MARKER}, or one "
            "naming another step); it was probably interrupted while saving"
        )
    try:
        verify_checkpoint(path)
    except DamagedCheckpointError as error:
        raise DamagedCheckpointError(f"--resume_from_checkpoint: {error}; {_previous_checkpoint_hint(path)}") from None
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


def _delete_checkpoint(path: str) -> None:
    """Renames first, deletes after: a process killed half-way leaves a ``*.tmp`` folder the next run removes, never
    a half-deleted ``checkpoint-N``."""
    trash = path + PRUNED_SUFFIX
    if os.path.isdir(trash):
        shutil.rmtree(trash)
    os.replace(path, trash)
    shutil.rmtree(trash)


def prune_checkpoints(output_dir: str, total_limit: Optional[int], keep_step: Optional[int] = None) -> List[str]:
    """Keeps the ``total_limit`` newest complete checkpoints and deletes the older ones (None keeps all).

    Args:
        keep_step (`int`, *optional*): also keep the newest checkpoint whose step is at most this one (the training
            script passes ``--disc_start``: the last checkpoint of phase 1, to restart phase 2 from). It does not
            count towards ``total_limit``.
    """
    if total_limit is None:
        return []
    if total_limit < 1:
        raise ValueError(f"checkpoints_total_limit must be >= 1 or None, got {total_limit}")
    checkpoints = list_checkpoints(output_dir)
    protected = None
    if keep_step is not None:
        protected = next((path for step, path in reversed(checkpoints) if step <= keep_step), None)
    removed = []
    for _, path in checkpoints[: max(0, len(checkpoints) - total_limit)]:
        if path == protected:
            continue
        _delete_checkpoint(path)
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


def _make_tree_shareable(folder: str) -> None:
    # safetensors writes owner-only (0600) files; one rule for the whole checkpoint: the umask's
    for directory, _, _ in os.walk(folder):
        make_files_shareable(directory)


def _full_disk(error: BaseException, folder: str) -> bool:
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        # safetensors: "I/O error: No space left on device (os error 28)"
        if "No space left on device" in str(error) or "os error 28" in str(error):
            return True
        error = error.__cause__ or error.__context__
    try:
        return shutil.disk_usage(folder).free < _FULL_DISK_BYTES
    except OSError:
        return False


def _write_failed(error: Exception, temporary_path: str, step: int, output_dir: str) -> Exception:
    """The one-line error for a checkpoint that could not be written; the half-written folder is removed."""
    full = _full_disk(error, output_dir)
    shutil.rmtree(temporary_path, ignore_errors=True)
    previous = find_latest_checkpoint(output_dir)
    intact = f"the previous checkpoint is intact ({previous})" if previous else "no earlier checkpoint exists"
    name = f"{CHECKPOINT_PREFIX}{step}"
    if full:
        return NoSpaceLeftError(f"no space left on device while writing {name} in {output_dir}; {intact}")
    if isinstance(error, PermissionError) or getattr(error, "errno", None) == errno.EROFS:
        return PermissionError(f"cannot write {name} in {output_dir}: it is not writable ({error}); {intact}")
    return error


def save_checkpoint(
    accelerator,
    output_dir: str,
    step: int,
    total_limit: Optional[int] = None,
    metadata: Optional[Dict[str, Any]] = None,
    keep_step: Optional[int] = None,
) -> str:
    """Saves ``accelerator.save_state`` atomically as ``output_dir/checkpoint-{step}``. Call on every process.

    Older checkpoints beyond ``total_limit`` are deleted only after the new one is complete, so an interrupted save
    never costs a good checkpoint; ``keep_step`` protects one of them (see :func:`prune_checkpoints`).

    Returns:
        The path of the new checkpoint.

    Raises:
        NoSpaceLeftError: the disk filled up; the half-written checkpoint is removed, the previous ones are intact.
        PermissionError: ``output_dir`` became unwritable.
    """
    final_path = checkpoint_dir(output_dir, step)
    temporary_path = final_path + TEMPORARY_SUFFIX
    try:
        if accelerator.is_main_process:
            if os.path.isdir(temporary_path):
                shutil.rmtree(temporary_path)
            os.makedirs(temporary_path)
        accelerator.wait_for_everyone()

        accelerator.save_state(temporary_path)
        accelerator.wait_for_everyone()

        if accelerator.is_main_process:
            _make_tree_shareable(temporary_path)
            marker = {
                "format": MARKER_FORMAT_VERSION,
                "step": step,
                "num_processes": accelerator.num_processes,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": file_manifest(temporary_path),
            }
            if metadata:
                marker["metadata"] = metadata
            _write_marker(temporary_path, marker)
    except Exception as error:  # KeyboardInterrupt and kills leave the *.tmp folder for the next run
        raised = _write_failed(error, temporary_path, step, output_dir)
        if raised is error:
            raise
        raise raised from None
    if accelerator.is_main_process:
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
        prune_checkpoints(output_dir, total_limit, keep_step=keep_step)
    accelerator.wait_for_everyone()
    return final_path


# ------------------------------------------------------------------------------------------------------------------
# one run per output folder
class OutputLock:
    """An exclusive ``filelock.FileLock`` on ``output_dir/train_vae.lock``; ``train_vae.owner`` names its holder's
    PID and host.

    The operating system releases the lock when its process dies, however it dies, so the lock of a killed run is
    taken over without a question; the owner file only serves the message. The lock is advisory and, on some network
    filesystems, local to one machine: with several nodes only the main process locks.
    """

    def __init__(self, lock: FileLock, owner_path: str):
        self.path = lock.lock_file
        self.owner_path = owner_path
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            with open(self.owner_path, "w", encoding="utf-8"):
                pass  # an empty owner file: the run ended cleanly
            self._lock.release()
            self._lock = None

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> "OutputLock":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _in_use_error(output_dir: str) -> OutputFolderInUseError:
    try:
        with open(os.path.join(output_dir, OWNER_FILE), "r", encoding="utf-8") as handle:
            owner = handle.read().strip()
    except FileNotFoundError:
        owner = ""
    return OutputFolderInUseError(
        f"--output_dir {output_dir} is in use by another training run "
        f"({owner or 'a process that did not write its PID yet'}); wait for it to finish, stop it, or pick another "
        "--output_dir"
    )


def _try_lock(output_dir: str) -> FileLock:
    lock = FileLock(os.path.join(output_dir, LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise _in_use_error(output_dir) from None
    return lock


def check_output_not_locked(output_dir: str) -> None:
    """Raises OutputFolderInUseError when a live run holds the lock of ``output_dir``; writes nothing (the check
    before any work; :func:`acquire_output_lock` then takes the lock)."""
    if os.path.isfile(os.path.join(output_dir, LOCK_FILE)):
        _try_lock(output_dir).release()


def acquire_output_lock(output_dir: str) -> OutputLock:
    """Locks ``output_dir`` for this process (call on the main process, after creating the folder).

    Raises:
        OutputFolderInUseError: another live process holds the lock (the message names its PID and host).
    """
    lock = _try_lock(output_dir)
    owner_path = os.path.join(output_dir, OWNER_FILE)
    try:
        with open(owner_path, "a+", encoding="utf-8") as handle:
            handle.seek(0)
            previous = handle.read().strip()
            if previous:
                logger.warning(
                    "taking over the lock of %s from a run that is no longer running (%s)", output_dir, previous
                )
            handle.seek(0)
            handle.truncate()
            started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            handle.write(f"PID {os.getpid()} on {socket.gethostname()}, started {started}")
    except BaseException:
        lock.release()
        raise
    return OutputLock(lock, owner_path)
