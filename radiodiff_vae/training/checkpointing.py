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

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type

from filelock import FileLock, Timeout

from ..atomic import make_files_shareable
from ..errors import (
    CheckpointError,
    DamagedCheckpointError,
    InputNotFoundError,
    NoSpaceLeftError,
    NotWritableError,
    OutputFolderInUseError,
)

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TEMPORARY_SUFFIX = ".tmp"
COMPLETE_MARKER = "checkpoint_complete.json"
# 2: the marker lists every file with its size and SHA-256 ("files"); markers of format 1 are trusted unverified.
MARKER_FORMAT_VERSION = 2
LOCK_FILE = "train_vae.lock"  # held with filelock.FileLock for the whole run
OWNER_FILE = "train_vae.owner"  # PID and host of the lock's holder, for the message; both removed at the end
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
        CheckpointError: ``path`` is not a complete checkpoint.
    """
    marker = read_checkpoint_marker(path)
    if marker is None:
        raise CheckpointError(f"{path} is not a complete checkpoint (no valid {COMPLETE_MARKER})")
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
        InputNotFoundError: the named checkpoint does not exist.
        DamagedCheckpointError: its files do not match its marker (the message names the file and the checkpoint to
            resume from instead).
        CheckpointError: it exists but is not a complete checkpoint.
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
        raise InputNotFoundError(
            f"--resume_from_checkpoint {resume_from_checkpoint!r}: no such folder (looked at {candidates[0]!r} and "
            f"{candidates[1]!r}); pass 'latest' or a checkpoint-N folder"
        )
    if checkpoint_step(path) is None:
        raise CheckpointError(f"--resume_from_checkpoint {path!r}: expected a folder named checkpoint-N")
    if not is_complete_checkpoint(path):
        raise CheckpointError(
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
        return NotWritableError(f"cannot write {name} in {output_dir}: it is not writable ({error}); {intact}")
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
        NotWritableError: ``output_dir`` became unwritable (a PermissionError).
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


def load_checkpoint(accelerator, path: str, progress) -> None:
    """``accelerator.load_state(path)`` and a check that the step it restored (``progress.global_step``, a
    registered :class:`~radiodiff_vae.training.state.TrainingProgress`) is the one its name says.

    Raises:
        CheckpointError: the checkpoint holds another step than its name says.
    """
    accelerator.load_state(path)
    expected = checkpoint_step(path)
    if progress.global_step != expected:
        raise CheckpointError(f"{path} holds step {progress.global_step}, its name says {expected}")


# ------------------------------------------------------------------------------------------------------------------
# models as save_pretrained folders inside checkpoints
def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value  # config.json turns tuples into lists


def _subfolder_of(model, subfolders: Mapping[Type, str]) -> Optional[str]:
    return next((name for cls, name in subfolders.items() if isinstance(model, cls)), None)


def register_checkpoint_hooks(accelerator, subfolders: Mapping[Type, str]) -> None:
    """Makes ``accelerator.save_state`` write each prepared model of a class in ``subfolders`` as a ``save_pretrained``
    folder (safetensors) and ``load_state`` read it back strictly; other prepared models are left to accelerate
    (``model_<i>.safetensors``).

    Args:
        accelerator (`accelerate.Accelerator`): the run's accelerator.
        subfolders (`Mapping[type, str]`): model class -> subfolder of the checkpoint, e.g.
            ``{RadioVAE: "vae", NLayerDiscriminator: "discriminator"}``; each class needs ``save_pretrained`` /
            ``from_pretrained`` (a diffusers ``ModelMixin``). The first class a model is an instance of wins.

    Loading refuses a folder saved with another configuration, naming the keys (CheckpointError).
    """

    def save_model_hook(models: List[Any], weights: List[Dict[str, Any]], folder: str) -> None:
        for index in reversed(range(len(models))):
            model = accelerator.unwrap_model(models[index])
            subfolder = _subfolder_of(model, subfolders)
            if subfolder is None:
                continue  # accelerate saves it
            if accelerator.is_main_process:
                model.save_pretrained(os.path.join(folder, subfolder), safe_serialization=True)
            if weights:  # empty under DeepSpeed, which saves the models itself
                weights.pop(index)

    def load_model_hook(models: List[Any], folder: str) -> None:
        for index in reversed(range(len(models))):
            model = accelerator.unwrap_model(models[index])
            subfolder = _subfolder_of(model, subfolders)
            if subfolder is None:
                continue  # accelerate loads it
            models.pop(index)
            saved = type(model).from_pretrained(folder, subfolder=subfolder)
            changed = sorted(
                key
                for key in model.config
                if not key.startswith("_") and _comparable(saved.config.get(key)) != _comparable(model.config[key])
            )
            if changed:
                raise CheckpointError(
                    f"{folder}/{subfolder} was saved with a different configuration ({', '.join(changed)}); "
                    "resume with the flags of the run that wrote it"
                )
            model.load_state_dict(saved.state_dict(), strict=True)
            del saved

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)


def _read_config(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from None
    if not isinstance(content, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got a {type(content).__name__}")
    return content


def check_checkpoint_architecture(
    checkpoint: str,
    expected: Mapping[str, Mapping[str, Any]],
    ignore: Sequence[str] = ("sample_size", "scaling_factor"),
) -> None:
    """Compares the configs of the models a checkpoint holds with what a run builds, before any work (the load hook
    of :func:`register_checkpoint_hooks` checks again, but only once the run has started writing).

    Args:
        checkpoint (`str`): a ``checkpoint-N`` folder.
        expected (`Mapping[str, Mapping[str, Any]]`): subfolder -> the config keys the run sets, e.g.
            ``{"vae": PRESETS["tiny"], "discriminator": {"num_layers": 3}}``; keys the saved config lacks are skipped.
        ignore (`Sequence[str]`): keys that are no architecture (the default: the map size follows the data, and the
            scaling factor is measured at the end).

    Raises:
        CheckpointError: a config differs (the message names the keys, their values there and here) or is unreadable.
    """
    for subfolder, wanted in expected.items():
        saved = _read_config(os.path.join(checkpoint, subfolder, "config.json"))
        comparable = [key for key in wanted if key in saved and key not in ignore and not key.startswith("_")]
        changed = sorted(key for key in comparable if _comparable(saved[key]) != _comparable(wanted[key]))
        if changed:
            differences = ", ".join(f"{key} {saved[key]!r} there, {wanted[key]!r} here" for key in changed)
            raise CheckpointError(
                f"--resume_from_checkpoint {checkpoint}: its {subfolder} has another architecture ({differences}); "
                "resume with the flags of the run that wrote it"
            )


# ------------------------------------------------------------------------------------------------------------------
# one run per output folder
class OutputLock:
    """An exclusive ``filelock.FileLock`` on ``output_dir/train_vae.lock``; ``train_vae.owner`` names its holder's
    PID and host.

    The operating system releases the lock when its process dies, however it dies, so the lock of a killed run is
    taken over without a question; the owner file only serves the message. The lock is advisory and, on some network
    filesystems, local to one machine: with several nodes only the main process locks.

    :meth:`release` (or leaving the ``with`` block) removes both files: a finished run leaves a model folder without
    them. Release before deleting the folder; the lock is never released by the garbage collector.
    """

    def __init__(self, lock: FileLock, output_dir: str):
        self.output_dir = output_dir
        self.path = lock.lock_file
        self.owner_path = os.path.join(output_dir, OWNER_FILE)
        self._lock = lock

    def release(self) -> None:
        """Removes the owner and lock files while still holding the lock (a run starting meanwhile finds the file
        gone and makes its own, see :func:`_try_lock`), then releases it. Safe to call twice."""
        if self._lock is None:
            return
        try:
            for path in (self.owner_path, self.path):
                with contextlib.suppress(OSError):  # gone already, or (Windows) an open file stays
                    os.remove(path)
        finally:
            self._lock.release()
            self._lock = None

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


def _holds_the_file(lock: FileLock) -> bool:
    """Whether the locked descriptor is still the file at the lock's path: a run that released (and removed) the file
    just before our ``flock`` leaves us holding a deleted file."""
    descriptor = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    if descriptor is None:
        return True  # another filelock implementation: trust it
    try:
        return os.fstat(descriptor).st_ino == os.stat(lock.lock_file).st_ino
    except OSError:
        return False


def _try_lock(output_dir: str) -> FileLock:
    for _ in range(10):
        lock = FileLock(os.path.join(output_dir, LOCK_FILE), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise _in_use_error(output_dir) from None
        if _holds_the_file(lock):
            return lock
        lock.release()
    raise _in_use_error(output_dir)


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
    return OutputLock(lock, output_dir)


def lock_output_dir(accelerator, output_dir: str) -> contextlib.AbstractContextManager:
    """The start of a run's writes, on every process: the main process creates ``output_dir``, locks it
    (:func:`acquire_output_lock`) and removes the ``*.tmp`` folders of interrupted saves; the others wait for it.
    Returns the lock (a context manager; a no-op one on the other processes): release it when the run ends.
    """
    lock: contextlib.AbstractContextManager = contextlib.nullcontext()
    if accelerator.is_main_process:
        os.makedirs(output_dir, exist_ok=True)
        lock = acquire_output_lock(output_dir)
        remove_temporary_checkpoints(output_dir)
    accelerator.wait_for_everyone()
    return lock
