"""RadioDiff VAE: a diffusers-style VAE-GAN for radio maps.

Public names are imported lazily so that ``import radiodiff_vae`` stays cheap and the optional heavy
dependencies (LPIPS, datasets) load only when the object that needs them is used.
"""

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "RadioVAE": "radiodiff_vae.models.autoencoder_radio",
    "PRESETS": "radiodiff_vae.models.autoencoder_radio",
    "NLayerDiscriminator": "radiodiff_vae.models.discriminator",
    "RadioVAELoss": "radiodiff_vae.losses.vae_gan",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'radiodiff_vae' has no attribute {name!r}")


def __dir__() -> list:
    return __all__


if TYPE_CHECKING:
    from .losses.vae_gan import RadioVAELoss
    from .models.autoencoder_radio import PRESETS, RadioVAE
    from .models.discriminator import NLayerDiscriminator
