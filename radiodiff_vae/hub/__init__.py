"""Sharing RadioVAE models: the model card and the Hub upload. (Original RadioDiff checkpoints convert with
:mod:`radiodiff_vae.conversion.original`.)

Names are imported lazily so that ``import radiodiff_vae.hub`` does not pull torch models in before they are used.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "render_model_card": "radiodiff_vae.hub.model_card",
    "save_model_card": "radiodiff_vae.hub.model_card",
    "push_to_hub": "radiodiff_vae.hub.push",
    "ensure_hub_repo": "radiodiff_vae.hub.push",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from .model_card import render_model_card, save_model_card
    from .push import ensure_hub_repo, push_to_hub
