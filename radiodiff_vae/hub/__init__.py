"""Sharing RadioVAE models: the model card, Hub upload, and conversion of original RadioDiff checkpoints.

Names are imported lazily so that ``import radiodiff_vae.hub`` does not pull torch models in before they are used.
"""

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "render_model_card": "radiodiff_vae.hub.model_card",
    "save_model_card": "radiodiff_vae.hub.model_card",
    "push_to_hub": "radiodiff_vae.hub.push",
    "convert_original_checkpoint": "radiodiff_vae.hub.convert",
    "load_original_checkpoint": "radiodiff_vae.hub.convert",
    "load_training_state": "radiodiff_vae.hub.convert",
    "ConversionResult": "radiodiff_vae.hub.convert",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'radiodiff_vae.hub' has no attribute {name!r}")


def __dir__() -> list:
    return __all__


if TYPE_CHECKING:
    from .convert import ConversionResult, convert_original_checkpoint, load_original_checkpoint, load_training_state
    from .model_card import render_model_card, save_model_card
    from .push import push_to_hub
