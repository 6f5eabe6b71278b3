"""Atomic file writes: a reader sees the previous file or the complete new one, never a half-written file.

Every file that matters (models, cards, metrics, latents, data sets, figures) is written through these helpers: the
content goes to a temporary file beside the target, on the same filesystem, and replaces the target with one
``os.replace`` only when writing succeeded. A failure or a killed process leaves the target as it was and, at worst,
a hidden ``.<name>.*.tmp`` file.
"""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Sequence, Union

from .errors import NotAFolderError, OutputExistsError

PathLike = Union[str, os.PathLike]


def current_umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The permissions ``open()`` gives a new file (``mkstemp`` and safetensors make owner-only 0600 files)."""
    return 0o666 & ~current_umask()


def make_files_shareable(folder: PathLike) -> None:
    """Gives every file directly in ``folder`` the permissions ``open()`` would have (after safetensors/mkstemp)."""
    mode = default_file_mode()
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False):
            os.chmod(entry.path, mode)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` for a writer that wants a file name (PIL, matplotlib, safetensors);
    when the block succeeds the temporary file replaces ``path``; when it fails it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, default_file_mode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w") -> Iterator[IO]:
    """``open(path, mode)`` for writing (``"w"`` text in UTF-8, or ``"wb"``), committed atomically on success."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}.")
    text_options = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    with atomic_path(path) as temporary, open(temporary, mode, **text_options) as handle:
        yield handle


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path: PathLike, content: Any) -> None:
    with atomic_open(path, "w") as handle:
        json.dump(content, handle, indent=2, sort_keys=True)
        handle.write("\n")


def atomic_copy(source: PathLike, destination: PathLike) -> None:
    with atomic_path(destination) as temporary:
        shutil.copyfile(source, temporary)


def check_directory_target(path: PathLike, overwrite: bool = False, what: str = "") -> Path:
    """Raises unless ``path`` can become a folder written whole: absent, an empty folder, or any folder with
    ``overwrite``. ``what`` (e.g. ``"--output_dir"``) names it in the message.

    Raises:
        NotAFolderError: ``path`` is a file.
        OutputExistsError: ``path`` is a non-empty folder and ``overwrite`` is False.
    """
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    if path.exists() and not path.is_dir():
        raise NotAFolderError(f"{name} exists and is a file; expected a folder to write or none.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputExistsError(f"{name} exists and is not empty; pass overwrite=True (--overwrite) to replace it.")
    return path


@contextlib.contextmanager
def _staging_folder(parent: Path, name: str) -> Iterator[Path]:
    """An empty hidden folder in ``parent`` (the target's filesystem, so ``os.replace`` from it is atomic), removed
    with whatever is left in it when the block ends."""
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _merge_into(staging: Path, path: Path, last: Sequence[str]) -> None:
    """Moves the entries of ``staging`` into ``path`` one ``os.replace`` each, the names in ``last`` after the others;
    a folder that exists on both sides (a pipeline's ``unet/`` saved again) is merged the same way, file by file."""
    path.mkdir(parents=True, exist_ok=True)
    names = sorted(os.listdir(staging), key=lambda name: list(last).index(name) + 1 if name in last else 0)
    for name in names:
        if (staging / name).is_dir() and (path / name).is_dir():
            _merge_into(staging / name, path / name, last)
        else:
            os.replace(staging / name, path / name)


@contextlib.contextmanager
def atomic_directory(
    path: PathLike, overwrite: bool = False, merge: bool = False, last: Sequence[str] = ()
) -> Iterator[Path]:
    """Yields an empty staging folder beside ``path``; when the block succeeds its content becomes ``path``, with
    the permissions the umask gives. When the block fails nothing of it reaches ``path``.

    Args:
        path: the folder to write.
        overwrite (`bool`, defaults to False): replace an existing non-empty ``path``. Without it, such a ``path``
            raises OutputExistsError (a FileExistsError) before the block runs (and one that appears while it runs,
            after it).
        merge (`bool`, defaults to False): write the staged files into ``path`` (created if missing), which keeps its
            other entries: each file replaces its namesake with one ``os.replace``, so a reader sees the old or the
            new file, never half of one (a model written into a training run's output folder beside its
            checkpoints). Without ``merge`` the staging folder becomes ``path`` in one rename: a reader sees no
            folder or a complete one.
        last (`Sequence[str]`): with ``merge``, names moved after every other file, in this order (``config.json``
            after the weights: a config next to old weights would describe the wrong file for a moment); the same
            rule holds inside sub-folders that ``path`` already has.
    """
    path = Path(path) if merge else check_directory_target(path, overwrite)
    # merging stages inside the folder itself: its parent need not be writable
    with _staging_folder(path, "staging") if merge else _staging_folder(path.parent, path.name) as staging:
        yield staging
        make_files_shareable(staging)  # mkdtemp and safetensors create owner-only entries
        if merge:
            _merge_into(staging, path, last)
            return
        os.chmod(staging, 0o777 & ~current_umask())
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise OutputExistsError(f"{path} appeared while it was being written; nothing was replaced.")
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
