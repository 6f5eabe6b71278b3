"""The model card of a RadioVAE (``README.md`` of its folder or Hub repository).

Sharing uses the libraries' own calls: ``vae.push_to_hub(repo_id, metrics=..., sample_image=...)`` (diffusers'
``push_to_hub``, which ``RadioVAE`` gives this card) for a model in memory, and
``huggingface_hub.HfApi().upload_folder`` for a folder written by ``save_pretrained`` and :func:`save_model_card`.
(Original RadioDiff checkpoints convert with :mod:`radiodiff_vae.conversion.original`.)

Names are imported lazily so that ``import radiodiff_vae.hub`` does not pull torch models in before they are used.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "render_model_card": "radiodiff_vae.hub.model_card",
    "save_model_card": "radiodiff_vae.hub.model_card",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from .model_card import render_model_card, save_model_card
