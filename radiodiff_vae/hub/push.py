"""Upload a RadioVAE to the Hugging Face Hub with its card and sample figure.

diffusers' ``ModelMixin.push_to_hub`` uploads the weights and a generic diffusers card. This function uploads what a
RadioVAE repository should hold, in one commit:

    config.json                             the model config (``RadioVAE.from_pretrained`` reads it)
    diffusion_pytorch_model.safetensors     the weights
    README.md                               the card rendered from ``model_card.md``
    <sample figure>                         when one is given (e.g. ``sample.png``)

The endpoint is ``HF_ENDPOINT`` (huggingface.co by default) unless ``endpoint`` is passed.
"""

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi

from .model_card import save_model_card


def push_to_hub(
    model: Any,
    repo_id: str,
    *,
    training_args: Optional[Union[Mapping[str, Any], argparse.Namespace]] = None,
    metrics: Optional[Mapping[str, Any]] = None,
    sample_image: Optional[Union[str, os.PathLike]] = None,
    commit_message: Optional[str] = None,
    private: Optional[bool] = None,
    token: Optional[Union[str, bool]] = None,
    create_pr: bool = False,
    endpoint: Optional[str] = None,
    **card_kwargs: Any,
) -> CommitInfo:
    """Uploads config, safetensors weights, the model card and the sample figure of ``model`` to ``repo_id``.

    Args:
        model (`RadioVAE`): the model to upload (any diffusers ``ModelMixin`` with a RadioVAE-like config works).
        repo_id (`str`): ``"user/name"``; created (public unless ``private``) if it does not exist.
        training_args / metrics: listed in the card (see `render_model_card`).
        sample_image (`str` or `os.PathLike`, *optional*): an image file uploaded next to the card and shown in it.
        commit_message (`str`, *optional*): defaults to ``"Upload RadioVAE"``.
        private (`bool`, *optional*): visibility of a newly created repository.
        token (`str` or `bool`, *optional*): a Hub token; defaults to the saved login / ``HF_TOKEN``.
        create_pr (`bool`, defaults to `False`): open a pull request instead of committing to ``main``.
        endpoint (`str`, *optional*): Hub endpoint; defaults to ``HF_ENDPOINT``.
        **card_kwargs: passed to `render_model_card` (``description``, ``eval_split``, ...).

    Returns:
        `CommitInfo`: the commit; ``.oid`` is the revision that ``from_pretrained(repo_id, revision=...)`` pins.
    """
    if not isinstance(repo_id, str) or repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise ValueError(f"repo_id must be 'user/name' (or 'name' in your own namespace), got {repo_id!r}.")
    if not hasattr(model, "save_pretrained") or not hasattr(model, "config"):
        raise ValueError(
            f"push_to_hub expects a RadioVAE (with save_pretrained and config), got {type(model).__name__}."
        )
    if sample_image is not None and not Path(sample_image).is_file():
        raise FileNotFoundError(f"Sample figure {sample_image} does not exist; expected an image file (e.g. a PNG).")

    api = HfApi(endpoint=endpoint, token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    repo_id = repo_url.repo_id  # with the namespace the Hub chose for a bare name

    with tempfile.TemporaryDirectory(prefix="radiodiff-vae-push-") as folder:
        model.save_pretrained(folder, safe_serialization=True)
        save_model_card(
            folder, model, training_args, metrics, sample_image=sample_image, repo_id=repo_id, **card_kwargs
        )
        operations = [
            CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
            for path in sorted(Path(folder).rglob("*"))
            if path.is_file()
        ]
        # One commit with every file: a reader never sees new weights with an old config or card.
        return api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or f"Upload {type(model).__name__}",
            create_pr=create_pr,
        )
