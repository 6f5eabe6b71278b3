"""The direct baseline of the construction stage, RadioUNet-style: a UNet from the city's features to the radio map in
pixel space, with the same inputs and call as :class:`~radiodiff_vae.RadioDiffPipeline` and no latent, so that
comparing the two measures what the latent brings.

The UNet predicts the map on the VAE's model scale ([-1, 1], ``pixel_values``); the pipeline returns it on the
[0, 1] scale.
"""

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from diffusers import DiffusionPipeline, UNet2DModel

from ..data.conventions import model_to_unit
from ..errors import InvalidArgumentError
from ..models.city_encoder import FEATURE_NAMES, CityEncoder
from .common import (
    ConstructionPipelineMixin,
    RadioMapPipelineOutput,
    build_city_encoder,
    build_unet,
    check_output_type,
    maps_to_output,
    outside_buildings,
    unet_size_factor,
)
from .inputs import CityImages, Transmitters, prepare_city

# The UNet2DModel always embeds a timestep; the direct predictor has none and feeds this constant.
DIRECT_TIMESTEP = 0


class RadioUNetPipeline(ConstructionPipelineMixin, DiffusionPipeline):
    r"""Direct radio-map construction: city features -> UNet -> map, one forward, no sampling.

    Components:
        unet (`UNet2DModel`): ``in_channels = city_encoder out_channels`` (4 for the bare features),
            ``out_channels = 1``: the map on the model scale [-1, 1].
        city_encoder (`CityEncoder`): ``downsample_factor=1``; with ``out_channels = len(in_features)`` and
            ``append_features`` it is the physics features alone.
    """

    model_cpu_offload_seq = "city_encoder->unet"

    def __init__(self, unet: UNet2DModel, city_encoder: CityEncoder):
        super().__init__()
        if not isinstance(unet, UNet2DModel) or not isinstance(city_encoder, CityEncoder):
            raise InvalidArgumentError(
                "RadioUNetPipeline expects a UNet2DModel and a CityEncoder, got "
                f"{type(unet).__name__} and {type(city_encoder).__name__}"
            )
        if city_encoder.config.downsample_factor != 1:
            raise InvalidArgumentError(
                f"RadioUNetPipeline works in pixel space: the city encoder's downsample_factor must be 1, got "
                f"{city_encoder.config.downsample_factor}"
            )
        if unet.config.in_channels != city_encoder.config.out_channels or unet.config.out_channels != 1:
            raise InvalidArgumentError(
                f"RadioUNetPipeline: the unet maps {unet.config.in_channels} -> {unet.config.out_channels} channels; "
                f"expected the city encoder's {city_encoder.config.out_channels} -> 1"
            )
        self.register_modules(unet=unet, city_encoder=city_encoder)

    @classmethod
    def from_sizes(
        cls,
        sample_size: int = 64,
        unet_block_out_channels: Sequence[int] = (32, 64, 128),
        layers_per_block: int = 2,
        attention: bool = False,
        unet_norm_num_groups: int = 32,
        city_channels: int = len(FEATURE_NAMES),
        city_block_out_channels: Sequence[int] = (32,),
        in_features: Sequence[str] = FEATURE_NAMES,
        ray_samples: int = 64,
        unet_kwargs: Optional[Dict[str, Any]] = None,
        city_encoder_kwargs: Optional[Dict[str, Any]] = None,
    ) -> "RadioUNetPipeline":
        """A fresh, untrained direct predictor.

        Args:
            sample_size (`int`, defaults to 64): the training map side (recorded in the UNet's config).
            unet_block_out_channels (`Sequence[int]`, defaults to `(32, 64, 128)`): channels of each UNet level;
                maps must be multiples of ``2 ** (levels - 1)``.
            layers_per_block (`int`, defaults to 2): resnets per UNet level.
            attention (`bool`, defaults to False): self-attention at the lowest level and in the mid block.
            unet_norm_num_groups (`int`, defaults to 32): GroupNorm groups of the UNet.
            city_channels (`int`, defaults to 4): the city encoder's output channels; ``len(in_features)`` (the
                default) gives the features alone, more adds a learned full-resolution stem.
            city_block_out_channels (`Sequence[int]`, defaults to `(32,)`): that stem's levels (when it exists).
            in_features (`Sequence[str]`, defaults to all four): physics features (:func:`city_features`).
            ray_samples (`int`, defaults to 64): points per transmitter -> pixel segment.
            unet_kwargs / city_encoder_kwargs (`dict`, *optional*): override any config value.
        """
        city_encoder = build_city_encoder(
            in_features, city_channels, city_block_out_channels, downsample_factor=1, ray_samples=ray_samples,
            overrides=city_encoder_kwargs,
        )  # fmt: skip
        unet = build_unet(
            sample_size, in_channels=city_encoder.config.out_channels, out_channels=1,
            block_out_channels=unet_block_out_channels, layers_per_block=layers_per_block, attention=attention,
            norm_num_groups=unet_norm_num_groups, overrides=unet_kwargs,
        )  # fmt: skip
        return cls(unet, city_encoder)

    @property
    def size_divisor(self) -> int:
        """Map height and width must be multiples of this (the UNet's downsampling)."""
        return unet_size_factor(self.unet)

    def prepare_city(self, buildings: CityImages, transmitters: Transmitters) -> Tuple[torch.Tensor, torch.Tensor]:
        """Checked `(buildings, transmitter)`, both `(B, 1, H, W)` float32 on the execution device."""
        note = f"UNet {self.size_divisor}"
        return prepare_city(buildings, transmitters, self.size_divisor, note, device=self._execution_device)

    def predict(self, buildings: torch.Tensor, transmitter: torch.Tensor) -> torch.Tensor:
        """The map `(B, 1, H, W)` on the model scale (unclamped) for checked city tensors `(B, 1, H, W)`.
        Differentiable: training regresses it on ``pixel_values``."""
        features = self.city_encoder(buildings.to(self.city_encoder.dtype), transmitter.to(self.city_encoder.dtype))
        return self.unet(features.to(self.unet.dtype), DIRECT_TIMESTEP).sample

    @torch.no_grad()
    def __call__(
        self,
        buildings: CityImages,
        transmitters: Transmitters,
        output_type: str = "pil",
        return_dict: bool = True,
        mask_buildings: bool = True,
    ) -> Union[RadioMapPipelineOutput, Tuple[Any]]:
        """Constructs the radio maps of a batch of cities, in one forward.

        Args:
            buildings, transmitters: as :meth:`RadioDiffPipeline.__call__`.
            output_type (`str`, defaults to ``"pil"``): ``"pil"``, ``"np"`` or ``"pt"``.
            return_dict (`bool`, defaults to True): a :class:`RadioMapPipelineOutput`, else ``(images,)``.
            mask_buildings (`bool`, defaults to True): set building pixels to 0 (-147 dB), as RadioMapSeer's gain
                maps hold them.

        Returns:
            :class:`RadioMapPipelineOutput` whose ``images`` are the maps at the input size on the [0, 1] scale.
        """
        check_output_type(output_type)
        buildings, transmitter = self.prepare_city(buildings, transmitters)
        maps = model_to_unit(self.predict(buildings, transmitter).float()).clamp(0.0, 1.0)  # (B, 1, H, W)
        if mask_buildings:
            maps = outside_buildings(maps, buildings)
        self.maybe_free_model_hooks()
        images = maps_to_output(maps, output_type)
        return RadioMapPipelineOutput(images=images) if return_dict else (images,)
