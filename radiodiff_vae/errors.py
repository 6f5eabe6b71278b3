"""Typed errors for bad input and damaged files, and the checks every command runs on its output folder.

Bad input raises a subclass of :class:`InputError` that also subclasses the built-in exception a caller would catch
anyway (``ValueError`` for content, ``OSError`` for the filesystem). Its message is one line that names the file or
flag, what was expected and what was found. The command-line entry points (``examples/train_vae.py``,
``radiodiff-vae``) print those, and the ``OSError``s of the user's paths (:func:`is_user_error`), as that one line;
any other exception is a bug and keeps its traceback. Set ``RADIODIFF_VAE_TRACEBACK=1`` to see the traceback of bad
input as well.

This module imports nothing heavy: the entry points use it before torch is loaded.
"""

import argparse
import errno
import os
from typing import NoReturn

TRACEBACK_VARIABLE = "RADIODIFF_VAE_TRACEBACK"


class InputError(Exception):
    """Base of every error that bad input causes (a flag, a configuration file, a data folder, a model, a checkpoint,
    an output folder): the command lines print it as one line. Each subclass also derives from the built-in exception
    a caller would catch anyway (``ValueError``, ``FileNotFoundError``, ...), so ``except ValueError`` keeps working.
    Anything else that escapes a command is a bug and keeps its traceback."""


class InvalidArgumentError(InputError, ValueError):
    """A flag, function argument or configuration value out of range, of the wrong kind, or inconsistent with
    another."""


class DataError(InputError, ValueError):
    """Data whose content is not what the reader expects: no maps, a folder not in RadioMapSeer's layout, a dataset
    without the needed columns."""


class MapFileError(DataError):
    """A radio-map file that cannot be read as a map (truncated, not an image, wrong size, NaN values)."""


class CityInputError(InvalidArgumentError):
    """A building map or transmitter given to a construction pipeline that it cannot use (size, values, batch)."""


class StaleLatentCacheError(DataError):
    """A latent cache file written for another VAE or other maps (its fingerprint differs), or not a cache at all."""


class ModelFileError(InputError, ValueError):
    """A model folder or checkpoint file whose configuration or weights are not what the reader builds (unknown
    keys, another architecture, wrong shapes, non-finite weights)."""


class CheckpointError(InputError, ValueError):
    """A training checkpoint that cannot be resumed: incomplete, misnamed, or of another architecture."""


class DamagedCheckpointError(CheckpointError):
    """A ``checkpoint-N`` folder whose files do not match the sizes and checksums its completion marker records."""


class InputNotFoundError(InputError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class NotAFolderError(InputError, NotADirectoryError):
    """A path the user named as a folder is a file (or lies under one)."""


class NotWritableError(InputError, PermissionError):
    """An output path the user named cannot be written (permissions, a read-only filesystem)."""


class OutputExistsError(InputError, FileExistsError):
    """An output the user named exists already and would be overwritten (pass ``--overwrite``)."""


class OutputFolderInUseError(InputError, RuntimeError):
    """Another live process holds the lock of the output folder."""


class NoSpaceLeftError(InputError, OSError):
    """The filesystem filled up while writing; the message says what is intact."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC


# OSErrors about the user's own paths and disks, reported in one line wherever they come from: not found, not a
# folder / a folder, exists, permission, read-only filesystem, disk full or over quota, name too long.
USER_PATH_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.ENAMETOOLONG,
    }
)


def is_user_error(error: BaseException) -> bool:
    """Whether a command line reports ``error`` as one line (bad input) rather than with its traceback (a bug).

    True for :class:`InputError` and for an ``OSError`` about a path: one with an errno of :data:`USER_PATH_ERRNOS`,
    or one without an errno, which libraries raise with a message naming the path (diffusers' and huggingface_hub's
    loaders: "no file named ... found in directory ...", a repository that does not exist). Everything else, a
    ``ValueError`` from inside torch or this package included, is a bug.
    """
    if isinstance(error, InputError):
        return True
    if isinstance(error, OSError):
        return error.errno is None or error.errno in USER_PATH_ERRNOS
    return False


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse with its errors (unknown flag, bad choice, missing value) as one line, without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def one_line(error: BaseException) -> str:
    """The message of ``error`` as one line. A DataLoader worker's error carries the worker's traceback in its
    message; its last line is the original message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if len(lines) > 1 and any(line.startswith("Original Traceback") for line in lines):
        kind, _, message = lines[-1].partition(": ")  # "package.module.ErrorType: message"
        return message if message and all(part.isidentifier() for part in kind.split(".")) else lines[-1]
    return " ".join(lines)


def show_traceback() -> bool:
    return os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0")


def check_output_folder(path: str, what: str) -> None:
    """Raises before any work when ``path`` cannot become a writable folder.

    Args:
        path (`str`): the output folder; it may not exist yet (its nearest existing parent must then be writable).
        what (`str`): how to name it in the message, e.g. ``"--output_dir"``.

    Raises:
        NotAFolderError: ``path`` (or a parent) is a file.
        NotWritableError: the folder, or the parent it would be created in, is not writable.
    """
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise NotAFolderError(f"{what} {path!r}: {existing!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "it" if existing == os.path.abspath(path) else f"its parent {existing!r}"
        raise NotWritableError(
            f"{what} {path!r}: {where} is not writable (no write permission, or a read-only filesystem); pick "
            "another folder"
        )
