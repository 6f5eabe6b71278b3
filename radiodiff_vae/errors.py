"""Typed errors for bad input and damaged files, and the checks every command runs on its output folder.

Each error subclasses the built-in exception a caller would catch anyway (``ValueError`` for content, ``OSError``
for the filesystem), carries one line that names the file or flag, what was expected and what was found, and is
printed as that one line by the command-line entry points (``examples/train_vae.py``, ``radiodiff-vae``). Set
``RADIODIFF_VAE_TRACEBACK=1`` to see the traceback as well.

This module imports nothing heavy: the entry points use it before torch is loaded.
"""

import argparse
import errno
import os
from typing import NoReturn, Tuple, Type

TRACEBACK_VARIABLE = "RADIODIFF_VAE_TRACEBACK"


class DamagedCheckpointError(ValueError):
    """A ``checkpoint-N`` folder whose files do not match the sizes and checksums its completion marker records."""


class MapFileError(ValueError):
    """A radio-map file that cannot be read as a map (truncated, not an image, wrong size, NaN values)."""


class OutputFolderInUseError(RuntimeError):
    """Another live process holds the lock of the output folder."""


class NoSpaceLeftError(OSError):
    """The filesystem filled up while writing; the message says what is intact."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC


# What a command line reports in one line (bad input, missing or unwritable files) instead of a traceback.
USER_ERRORS: Tuple[Type[BaseException], ...] = (ValueError, OSError, OutputFolderInUseError)


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
        NotADirectoryError: ``path`` (or a parent) is a file.
        PermissionError: the folder, or the parent it would be created in, is not writable.
    """
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"{what} {path!r}: {existing!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "it" if existing == os.path.abspath(path) else f"its parent {existing!r}"
        raise PermissionError(
            f"{what} {path!r}: {where} is not writable (no write permission, or a read-only filesystem); pick "
            "another folder"
        )
