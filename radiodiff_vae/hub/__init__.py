"""Sharing RadioVAE models: the model card, Hub upload, and conversion of original RadioDiff checkpoints.

Names are imported lazily so that ``import radiodiff_vae.hub`` does not pull torch models in before they are used.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "render_model_card": "radiodiff_vae.hub.model_card",
    "save_model_card": "radiodiff_vae.hub.model_card",
    "push_to_hub": "radiodiff_vae.hub.push",
    "ensure_hub_repo": "radiodiff_vae.hub.push",
    "convert_original_checkpoint": "radiodiff_vae.hub.convert",
    "load_original_checkpoint": "radiodiff_vae.hub.convert",
    "load_training_state": "radiodiff_vae.hub.convert",
    "ConversionResult": "radiodiff_vae.hub.convert",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from .convert import ConversionResult, convert_original_checkpoint, load_original_checkpoint, load_training_state
    from .model_card import render_model_card, save_model_card
    from .push import ensure_hub_repo, push_to_hub
