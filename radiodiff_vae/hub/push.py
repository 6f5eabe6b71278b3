"""Upload a RadioVAE to the Hugging Face Hub with its card and sample figure: the package's one upload path.

diffusers' ``ModelMixin.push_to_hub`` (``vae.push_to_hub``) uploads the weights and a generic diffusers card. This
module uploads what a RadioVAE repository should hold, in one commit:

    config.json                             the model config (``RadioVAE.from_pretrained`` reads it)
    diffusion_pytorch_model.safetensors     the weights
    README.md                               the card rendered from ``model_card.md``
    <sample figure>                         when one is given (e.g. ``sample.png``)

from a model in memory or from a folder already written by ``save_pretrained`` (the training script's output, whose
card it keeps). The endpoint is ``HF_ENDPOINT`` (huggingface.co by default) unless ``endpoint`` is passed.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi
from huggingface_hub.utils import filter_repo_objects

from ..hub_id import check_repo_id
from .model_card import CARD_FILENAME, save_model_card

PathLike = Union[str, os.PathLike]


def ensure_hub_repo(
    repo_id: str,
    *,
    private: Optional[bool] = None,
    token: Optional[Union[str, bool]] = None,
    endpoint: Optional[str] = None,
) -> str:
    """Creates ``repo_id`` (public unless ``private``) or finds the existing one; returns its full ``user/name``.

    Cheap enough to call before a long job, so that a missing login or a wrong name fails at once.
    """
    check_repo_id(repo_id)
    return HfApi(endpoint=endpoint, token=token).create_repo(repo_id, private=private, exist_ok=True).repo_id


def push_to_hub(
    model_or_folder: Union[Any, PathLike],
    repo_id: str,
    *,
    training_args: Optional[Union[Mapping[str, Any], argparse.Namespace]] = None,
    metrics: Optional[Mapping[str, Any]] = None,
    sample_image: Optional[PathLike] = None,
    commit_message: Optional[str] = None,
    private: Optional[bool] = None,
    token: Optional[Union[str, bool]] = None,
    create_pr: bool = False,
    endpoint: Optional[str] = None,
    ignore_patterns: Optional[Sequence[str]] = None,
    **card_kwargs: Any,
) -> CommitInfo:
    """Uploads a RadioVAE, or a folder holding one, with its model card and sample figure in one commit.

    Args:
        model_or_folder (`RadioVAE` or path): a model (saved in safetensors for the upload), or a ``save_pretrained``
            folder uploaded as it is: every file but those matching ``ignore_patterns``. The folder's own
            ``README.md`` is kept unless card arguments (``training_args``, ``metrics``, ``sample_image``,
            ``card_kwargs``) are given or it has none; then the card is rendered from its ``config.json``.
        repo_id (`str`): ``"user/name"``; created (public unless ``private``) if it does not exist.
        training_args / metrics: listed in the card (see `render_model_card`).
        sample_image (`str` or `os.PathLike`, *optional*): an image file uploaded next to the card and shown in it.
        commit_message (`str`, *optional*): defaults to ``"Upload RadioVAE"``.
        private (`bool`, *optional*): visibility of a newly created repository.
        token (`str` or `bool`, *optional*): a Hub token; defaults to the saved login / ``HF_TOKEN``.
        create_pr (`bool`, defaults to `False`): open a pull request instead of committing to ``main``.
        endpoint (`str`, *optional*): Hub endpoint; defaults to ``HF_ENDPOINT``.
        ignore_patterns (`list[str]`, *optional*): fnmatch patterns of folder files to leave out (checkpoints, logs).
        **card_kwargs: passed to `render_model_card` (``description``, ``eval_split``, ...).

    Returns:
        `CommitInfo`: the commit; ``.oid`` is the revision that ``from_pretrained(repo_id, revision=...)`` pins.
    """
    check_repo_id(repo_id)
    folder = _model_folder(model_or_folder)
    if sample_image is not None and not Path(sample_image).is_file():
        raise FileNotFoundError(f"Sample figure {sample_image} does not exist; expected an image file (e.g. a PNG).")

    api = HfApi(endpoint=endpoint, token=token)
    repo_id = ensure_hub_repo(repo_id, private=private, token=token, endpoint=endpoint)

    with tempfile.TemporaryDirectory(prefix="radiodiff-vae-push-") as staging:
        if folder is None:
            model_or_folder.save_pretrained(staging, safe_serialization=True)
            files = _files_of(Path(staging), ignore_patterns)
            card_source: Any = model_or_folder
        else:
            files = _files_of(folder, ignore_patterns)
            card_source = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        wants_card = any(value is not None for value in (training_args, metrics, sample_image)) or bool(card_kwargs)
        if folder is None or wants_card or CARD_FILENAME not in files:
            card_folder = Path(staging) / "card"
            card_folder.mkdir()
            save_model_card(
                card_folder,
                card_source,
                training_args,
                metrics,
                sample_image=sample_image,
                repo_id=repo_id,
                **card_kwargs,
            )
            files.update(_files_of(card_folder, None))
        operations = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in sorted(files.items())
        ]
        # One commit with every file: a reader never sees new weights with an old config or card.
        return api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or "Upload RadioVAE",
            create_pr=create_pr,
        )


def _model_folder(model_or_folder: Any) -> Optional[Path]:
    """The folder to upload, checked; None for a model object."""
    if isinstance(model_or_folder, (str, os.PathLike)):
        folder = Path(model_or_folder)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"push_to_hub: folder {folder} does not exist (expected a save_pretrained folder)."
            )
        weights = [folder / f"diffusion_pytorch_model.{ext}" for ext in ("safetensors", "bin")]
        if not (folder / "config.json").is_file() or not any(path.is_file() for path in weights):
            raise FileNotFoundError(
                f"push_to_hub: {folder} must hold config.json and diffusion_pytorch_model.safetensors "
                "(written by save_pretrained)."
            )
        return folder
    if not hasattr(model_or_folder, "save_pretrained") or not hasattr(model_or_folder, "config"):
        raise ValueError(
            "push_to_hub expects a RadioVAE (with save_pretrained and config) or its save_pretrained folder, "
            f"got {type(model_or_folder).__name__}."
        )
    return None


def _files_of(folder: Path, ignore_patterns: Optional[Sequence[str]]) -> Dict[str, Path]:
    """``{path in the repository: file}`` for every file under ``folder`` not matched by ``ignore_patterns``."""
    names: List[str] = [path.relative_to(folder).as_posix() for path in sorted(folder.rglob("*")) if path.is_file()]
    kept = filter_repo_objects(names, ignore_patterns=list(ignore_patterns) if ignore_patterns else None)
    return {name: folder / name for name in kept}
