"""RadioDiff VAE: a diffusers-style VAE-GAN for radio maps.

Public names are imported lazily so that ``import radiodiff_vae`` stays cheap and the optional heavy
dependencies (LPIPS, datasets) load only when the object that needs them is used.
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "RadioVAE": "radiodiff_vae.models.autoencoder_radio",
    "PRESETS": "radiodiff_vae.models.presets",
    "NLayerDiscriminator": "radiodiff_vae.models.discriminator",
    "RadioVAELoss": "radiodiff_vae.losses.vae_gan",
    "CityEncoder": "radiodiff_vae.models.city_encoder",
    "RadioDiffPipeline": "radiodiff_vae.pipelines.radiodiff",
    "RadioUNetPipeline": "radiodiff_vae.pipelines.direct",
    "RadioMapPipelineOutput": "radiodiff_vae.pipelines.common",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


# A pipeline folder names this package's components ["radiodiff_vae", "<class>"]; diffusers' from_pretrained then
# looks up on the package the base class whose loading method it uses (getattr(radiodiff_vae, "ModelMixin")).
_DIFFUSERS_LOADING = {"ModelMixin": "diffusers"}

__getattr__, _ = lazy_exports(__name__, {**_EXPORTS, **_DIFFUSERS_LOADING})
_, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from .losses.vae_gan import RadioVAELoss
    from .models.autoencoder_radio import RadioVAE
    from .models.city_encoder import CityEncoder
    from .models.discriminator import NLayerDiscriminator
    from .models.presets import PRESETS
    from .pipelines.common import RadioMapPipelineOutput
    from .pipelines.direct import RadioUNetPipeline
    from .pipelines.radiodiff import RadioDiffPipeline
