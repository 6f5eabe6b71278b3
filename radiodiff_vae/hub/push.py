"""Pushing a model or pipeline to the Hub with this package's card: its ``save_pretrained`` folder and ``README.md``
in one commit. ``RadioVAE.push_to_hub`` and the construction pipelines' ``push_to_hub`` both go through
:func:`push_with_card`; each brings its own card writer."""

import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

from huggingface_hub import CommitInfo, HfApi

from ..hub_id import check_repo_id


def push_with_card(
    model: Any,
    repo_id: str,
    write_card: Callable[[Path, str], Any],
    commit_message: Optional[str] = None,
    private: Optional[bool] = None,
    token: Optional[Union[str, bool]] = None,
    create_pr: bool = False,
    safe_serialization: bool = True,
    variant: Optional[str] = None,
    subfolder: Optional[str] = None,
) -> CommitInfo:
    """Uploads ``model.save_pretrained`` and its card in one commit; the repository is created (public unless
    ``private``) if needed, the endpoint is ``HF_ENDPOINT``.

    Args:
        model: anything with ``save_pretrained(folder, safe_serialization=..., variant=...)`` (a ``ModelMixin``, a
            ``DiffusionPipeline``).
        repo_id: ``"user/name"`` or ``"name"`` (the token's user).
        write_card: ``write_card(folder, repo_id)`` writes ``README.md`` (and its figure) into the staged folder. It
            runs before any request, so bad card arguments fail with nothing created, and again with the full id
            when the Hub turned ``"name"`` into ``"user/name"`` (the card's loading snippet names the repository).
        commit_message, private, token, create_pr, safe_serialization, variant: as diffusers' ``push_to_hub``.
        subfolder: upload into this folder of the repository, without a card (as diffusers does).

    Returns:
        `CommitInfo`: ``.oid`` is the revision that ``from_pretrained(repo_id, revision=...)`` pins.
    """
    check_repo_id(repo_id)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="radiodiff-vae-push-") as staging:
        model.save_pretrained(staging, safe_serialization=safe_serialization, variant=variant)
        if not subfolder:
            write_card(Path(staging), repo_id)
        full_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if not subfolder and full_id != repo_id:
            write_card(Path(staging), full_id)
        return api.upload_folder(
            repo_id=full_id,
            folder_path=staging,
            path_in_repo=subfolder,
            commit_message=commit_message or f"Upload {type(model).__name__}",
            create_pr=create_pr,
        )
