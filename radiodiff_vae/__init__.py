"""RadioDiff VAE: a diffusers-style VAE-GAN for radio maps.

Public names are imported lazily so that ``import radiodiff_vae`` stays cheap and the optional heavy
dependencies (LPIPS, datasets) load only when the object that needs them is used.
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "RadioVAE": "radiodiff_vae.models.autoencoder_radio",
    "PRESETS": "radiodiff_vae.models.autoencoder_radio",
    "NLayerDiscriminator": "radiodiff_vae.models.discriminator",
    "RadioVAELoss": "radiodiff_vae.losses.vae_gan",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from .losses.vae_gan import RadioVAELoss
    from .models.autoencoder_radio import PRESETS, RadioVAE
    from .models.discriminator import NLayerDiscriminator
