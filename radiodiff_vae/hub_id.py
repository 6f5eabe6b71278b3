"""Hub ids: the one rule for names that are a local folder or a Hugging Face Hub id, used wherever a model or data
set is loaded by name (``RadioVAE.from_pretrained`` and ``from_autoencoder_kl``, ``load_radio_dataset``) and by the
upload (``RadioVAE.push_to_hub``). Imports nothing of the package but its errors, so that every layer can use it.

A Hub id is what ``huggingface_hub.utils.validate_repo_id`` accepts: ``"name"`` or ``"user/name"`` of letters,
digits, ``-``, ``_`` and ``.``. A name that exists on disk is a local path; any other name that is no Hub id
(``./run``, ``/data/model``, ``a/b/c``, ``C:\\runs``) is a local path that does not exist, reported before any
network lookup.
"""

import os
from pathlib import Path
from typing import Any, Optional, Union

from huggingface_hub.utils import HFValidationError, validate_repo_id
from .errors import InputNotFoundError, InvalidArgumentError


def hub_id_problem(name: Any) -> Optional[str]:
    """Why ``name`` is not a Hub id (huggingface_hub's own words), or None when it is one."""
    try:
        validate_repo_id(name)
    except HFValidationError as error:
        return " ".join(str(error).split())
    return None


def check_repo_id(repo_id: Any) -> None:
    """Raises ValueError (one line: what is expected, what came and why) unless ``repo_id`` is a Hub id."""
    problem = hub_id_problem(repo_id)
    if problem is not None:
        raise InvalidArgumentError(
            f"repo_id must be 'user/name' (or 'name' in your own namespace), got {repo_id!r}: {problem}"
        )


def local_path_or_hub_id(name: Union[str, os.PathLike], what: str) -> Optional[Path]:
    """The local path when ``name`` exists on disk, None when it is to be looked up on the Hub.

    Args:
        name (`str` or `os.PathLike`): what the user passed.
        what (`str`): how to name it in the message, e.g. ``"model folder"`` or ``"--dataset_name"``.

    Raises:
        FileNotFoundError: ``name`` does not exist and is no Hub id (a mistyped local path).
    """
    path = Path(name)
    if os.fspath(name) and path.exists():
        return path
    problem = hub_id_problem(os.fspath(name))
    if problem is not None:
        raise InputNotFoundError(
            f"{what} {os.fspath(name)!r} does not exist: no such folder, and not a Hub id ('user/name' or 'name')"
        )
    return None
