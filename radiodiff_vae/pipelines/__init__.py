"""The construction stage: a city (building mask + transmitter) to its radio map.

:class:`RadioDiffPipeline` (latent diffusion on the VAE, RadioDiff's second stage) and :class:`RadioUNetPipeline`
(the direct pixel-space baseline) share their inputs (:mod:`.inputs`) and output (:class:`RadioMapPipelineOutput`).
Names load lazily, as the package's.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "RadioDiffPipeline": "radiodiff_vae.pipelines.radiodiff",
    "default_scheduler": "radiodiff_vae.pipelines.radiodiff",
    "diffusion_target": "radiodiff_vae.pipelines.radiodiff",
    "RadioUNetPipeline": "radiodiff_vae.pipelines.direct",
    "RadioMapPipelineOutput": "radiodiff_vae.pipelines.common",
    "prepare_city": "radiodiff_vae.pipelines.inputs",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from .common import RadioMapPipelineOutput
    from .direct import RadioUNetPipeline
    from .inputs import prepare_city
    from .radiodiff import RadioDiffPipeline, default_scheduler, diffusion_target
