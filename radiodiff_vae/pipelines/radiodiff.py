"""RadioDiff's second stage on diffusers: a latent diffusion model that turns a city into its radio map.

The denoiser is a diffusers ``UNet2DModel`` on the VAE's scaled latent, conditioned by concatenation: its input is
``[noisy latent, city features]`` with the features of :class:`~radiodiff_vae.CityEncoder` at the latent's
resolution. Any diffusers scheduler samples it; the objective is the scheduler's ``prediction_type`` (``"epsilon"``,
``"v_prediction"`` or ``"sample"``).

Example::

    from radiodiff_vae import RadioDiffPipeline

    pipe = RadioDiffPipeline.from_pretrained("radiodiff_out/pipeline")
    maps = pipe(buildings_png, [(120, 64)], generator=torch.Generator().manual_seed(0)).images  # PIL images
"""

import inspect
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from diffusers import DDIMScheduler, DiffusionPipeline, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from ..data.conventions import model_to_unit
from ..data.latents import unscale_latents
from ..errors import InvalidArgumentError
from ..models.autoencoder_radio import RadioVAE
from ..models.city_encoder import FEATURE_NAMES, CityEncoder
from .common import (
    ConstructionPipelineMixin,
    RadioMapPipelineOutput,
    build_city_encoder,
    build_unet,
    check_inference_steps,
    check_output_type,
    maps_to_output,
    outside_buildings,
    unet_size_factor,
)
from .inputs import CityImages, Transmitters, prepare_city

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# Until a trained pipeline records the default it measured (`default_num_inference_steps` in model_index.json).
DEFAULT_NUM_INFERENCE_STEPS = 4


def diffusion_target(
    scheduler: SchedulerMixin, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the denoiser learns to output for the scheduler's ``prediction_type``: the noise (``"epsilon"``), the
    velocity ``sqrt(a) noise - sqrt(1 - a) x0`` (``"v_prediction"``) or the clean latent (``"sample"``).

    Args:
        latents (`torch.Tensor` of shape `(B, C, h, w)`): clean scaled latents.
        noise (`torch.Tensor` of shape `(B, C, h, w)`): the noise added by ``scheduler.add_noise``.
        timesteps (`torch.Tensor` of shape `(B,)`): the training timesteps.
    """
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if prediction_type == "sample":
        return latents
    raise InvalidArgumentError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def default_scheduler(
    prediction_type: str = "v_prediction", num_train_timesteps: int = 1000, **overrides: Any
) -> DDIMScheduler:
    """A DDIM scheduler fit for few-step construction.

    ``timestep_spacing="trailing"`` makes one step start at the last training timestep (pure noise) rather than at
    0; ``set_alpha_to_one`` makes the last step return the predicted clean latent, so one step with ``"sample"``
    prediction returns the model's prediction; latents are not clipped. For ``"v_prediction"`` and ``"sample"`` the
    betas are rescaled to zero terminal SNR, so that training at the last timestep sees the pure noise sampling
    starts from (with ``"epsilon"`` the clean latent could not be recovered there).
    """
    if prediction_type not in PREDICTION_TYPES:
        raise InvalidArgumentError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    settings: Dict[str, Any] = dict(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="linear",
        prediction_type=prediction_type,
        clip_sample=False,
        set_alpha_to_one=True,
        timestep_spacing="trailing",
        rescale_betas_zero_snr=prediction_type != "epsilon",
    )
    settings.update(overrides)
    return DDIMScheduler(**settings)


def _check_components(vae: Any, unet: Any, city_encoder: Any) -> None:
    components = (("vae", vae, RadioVAE), ("unet", unet, UNet2DModel), ("city_encoder", city_encoder, CityEncoder))
    for name, value, expected in components:
        if not isinstance(value, expected):
            raise InvalidArgumentError(
                f"RadioDiffPipeline: {name} must be a {expected.__name__}, got {type(value).__name__}"
            )
    latent_channels, city_channels = vae.config.latent_channels, city_encoder.config.out_channels
    if unet.config.in_channels != latent_channels + city_channels:
        raise InvalidArgumentError(
            f"RadioDiffPipeline: the unet takes {unet.config.in_channels} input channels; expected the VAE's "
            f"{latent_channels} latent channels + the city encoder's {city_channels} = "
            f"{latent_channels + city_channels}"
        )
    if unet.config.out_channels != latent_channels:
        raise InvalidArgumentError(
            f"RadioDiffPipeline: the unet gives {unet.config.out_channels} output channels; expected the VAE's "
            f"{latent_channels} latent channels"
        )
    if city_encoder.config.downsample_factor != vae.downsample_factor:
        raise InvalidArgumentError(
            f"RadioDiffPipeline: the city encoder's downsample_factor is {city_encoder.config.downsample_factor}; "
            f"expected the VAE's {vae.downsample_factor}"
        )


class RadioDiffPipeline(ConstructionPipelineMixin, DiffusionPipeline):
    r"""Radio-map construction by latent diffusion: a city (building mask + transmitter) to its radio map.

    Components:
        vae (`RadioVAE`): the first stage, frozen (``requires_grad_(False)``, eval mode); only its decoder runs here.
        unet (`UNet2DModel`): the denoiser, ``in_channels = vae latent_channels + city_encoder out_channels``,
            ``out_channels = latent_channels``, on the scaled latent.
        city_encoder (`CityEncoder`): the city's features at the latent's resolution
            (``downsample_factor`` = the VAE's).
        scheduler (`SchedulerMixin`): any diffusers scheduler (:func:`default_scheduler`: DDIM, trailing spacing).

    Args:
        default_num_inference_steps (`int`, defaults to 4): the steps ``__call__`` takes when not told; recorded in
            ``model_index.json`` (training measures quality against steps and saves the best trade-off).

    Save and load as one folder with ``save_pretrained`` / ``RadioDiffPipeline.from_pretrained`` (the folder's
    ``model_index.json`` names this package's classes as ``["radiodiff_vae", "<class>"]``).
    """

    model_cpu_offload_seq = "city_encoder->unet->vae"

    def __init__(
        self,
        vae: RadioVAE,
        unet: UNet2DModel,
        city_encoder: CityEncoder,
        scheduler: SchedulerMixin,
        default_num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS,
    ):
        super().__init__()
        _check_components(vae, unet, city_encoder)
        check_inference_steps(default_num_inference_steps, scheduler)
        vae.requires_grad_(False)
        vae.eval()
        self.register_modules(vae=vae, unet=unet, city_encoder=city_encoder, scheduler=scheduler)
        self.register_to_config(default_num_inference_steps=int(default_num_inference_steps))

    # --------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_vae(
        cls,
        vae: RadioVAE,
        unet_block_out_channels: Sequence[int] = (64, 128, 256),
        layers_per_block: int = 2,
        attention: bool = True,
        unet_norm_num_groups: int = 32,
        city_channels: int = 32,
        city_block_out_channels: Optional[Sequence[int]] = None,
        city_norm_num_groups: int = 8,
        in_features: Sequence[str] = FEATURE_NAMES,
        ray_samples: int = 64,
        prediction_type: str = "v_prediction",
        scheduler: Optional[SchedulerMixin] = None,
        default_num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS,
        unet_kwargs: Optional[Dict[str, Any]] = None,
        city_encoder_kwargs: Optional[Dict[str, Any]] = None,
    ) -> "RadioDiffPipeline":
        """A fresh, untrained pipeline around a (trained) VAE.

        Args:
            vae (`RadioVAE`): the first stage; its ``downsample_factor`` sets the city encoder's.
            unet_block_out_channels (`Sequence[int]`, defaults to `(64, 128, 256)`): channels of each UNet level;
                the latent's side must be a multiple of ``2 ** (levels - 1)``.
            layers_per_block (`int`, defaults to 2): resnets per UNet level.
            attention (`bool`, defaults to True): self-attention at the UNet's lowest level and in its mid block.
            unet_norm_num_groups (`int`, defaults to 32): GroupNorm groups of the UNet.
            city_channels (`int`, defaults to 32): the city encoder's output channels (its appended features
                included).
            city_block_out_channels (`Sequence[int]`, *optional*): the encoder stem's levels; default one per
                downsampling (at least one), 32 channels doubling up to 128.
            city_norm_num_groups (`int`, defaults to 8): GroupNorm groups of the encoder stem.
            in_features (`Sequence[str]`, defaults to all four): physics features (:func:`city_features`).
            ray_samples (`int`, defaults to 64): points per transmitter -> pixel segment.
            prediction_type (`str`, defaults to ``"v_prediction"``): the objective, for :func:`default_scheduler`.
            scheduler (`SchedulerMixin`, *optional*): used instead of :func:`default_scheduler`.
            default_num_inference_steps (`int`, defaults to 4): see the class.
            unet_kwargs / city_encoder_kwargs (`dict`, *optional*): override any ``UNet2DModel`` / ``CityEncoder``
                config value.
        """
        if not isinstance(vae, RadioVAE):
            raise InvalidArgumentError(f"from_vae expects a RadioVAE, got {type(vae).__name__}")
        factor = vae.downsample_factor
        if city_block_out_channels is None:
            levels = max(1, factor.bit_length() - 1)
            city_block_out_channels = tuple(min(32 * 2**level, 128) for level in range(levels))
        city_encoder = build_city_encoder(
            in_features, city_channels, city_block_out_channels, downsample_factor=factor, ray_samples=ray_samples,
            overrides=city_encoder_kwargs, norm_num_groups=city_norm_num_groups,
        )  # fmt: skip
        latent_channels = vae.config.latent_channels
        unet = build_unet(
            vae.config.sample_size // factor, in_channels=latent_channels + city_encoder.config.out_channels,
            out_channels=latent_channels, block_out_channels=unet_block_out_channels,
            layers_per_block=layers_per_block, attention=attention, norm_num_groups=unet_norm_num_groups,
            overrides=unet_kwargs,
        )  # fmt: skip
        scheduler = scheduler if scheduler is not None else default_scheduler(prediction_type)
        # the UNet and city encoder come in eval mode: a built pipeline samples like a loaded one
        return cls(vae, unet, city_encoder, scheduler, default_num_inference_steps=default_num_inference_steps)

    # --------------------------------------------------------------------------------------------------------------
    @property
    def size_divisor(self) -> int:
        """Map height and width must be multiples of this: the VAE's factor times the UNet's."""
        return self.vae.downsample_factor * unet_size_factor(self.unet)

    def prepare_city(
        self, buildings: CityImages, transmitters: Transmitters
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Checked `(buildings, transmitter)`, both `(B, 1, H, W)` float32 on the execution device."""
        note = f"VAE {self.vae.downsample_factor} x UNet {unet_size_factor(self.unet)}"
        return prepare_city(buildings, transmitters, self.size_divisor, note, device=self._execution_device)

    def denoise(
        self, latents: torch.Tensor, timestep: Union[torch.Tensor, int], condition: torch.Tensor
    ) -> torch.Tensor:
        """The UNet's prediction `(B, C, h, w)` for scaled `latents` `(B, C, h, w)` (already scaled by the scheduler's
        ``scale_model_input``) and city features ``condition`` `(B, C_city, h, w)`. Differentiable: training uses it."""
        model_input = torch.cat([latents, condition.to(latents.dtype)], dim=1)  # (B, C + C_city, h, w)
        return self.unet(model_input.to(self.unet.dtype), timestep).sample

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents `(B, C, h, w)` -> maps `(B, 1, H, W)` float32 in [0, 1]."""
        z = unscale_latents(latents.float(), self.vae.config)
        upcast = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
        if upcast:  # the config asks fp16 pipelines to decode in fp32 (fp16 range not verified)
            self.vae.to(torch.float32)
        try:
            decoded = self.vae.decode(z.to(self.vae.dtype)).sample  # (B, 1, H, W) in about [-1, 1]
        finally:
            if upcast:
                self.vae.to(torch.float16)
        return model_to_unit(decoded.float()).clamp(0.0, 1.0)

    @torch.no_grad()
    def __call__(
        self,
        buildings: CityImages,
        transmitters: Transmitters,
        num_inference_steps: Optional[int] = None,
        generator: Optional[Union[torch.Generator, Sequence[torch.Generator]]] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        latents: Optional[torch.Tensor] = None,
        mask_buildings: bool = True,
    ) -> Union[RadioMapPipelineOutput, Tuple[Any]]:
        """Constructs the radio maps of a batch of cities.

        Args:
            buildings: building masks: a tensor `(B, 1, H, W)` / `(B, H, W)` / `(H, W)`, numpy array(s) or PIL
                image(s), values {0, 1} (or {0, 255} for uint8 / images); one map may serve several transmitters.
            transmitters: RadioMapSeer antenna images (same forms; the brightest pixel) or (row, col) positions (a
                `(B, 2)` tensor / array or a list of tuples).
            num_inference_steps (`int`, *optional*): sampling steps (default: ``default_num_inference_steps``).
            generator (`torch.Generator` or a list of B, *optional*): makes the initial noise (and any stochastic
                scheduler step) repeatable.
            output_type (`str`, defaults to ``"pil"``): ``"pil"``, ``"np"`` or ``"pt"``.
            return_dict (`bool`, defaults to True): a :class:`RadioMapPipelineOutput`, else the tuple ``(images,)``.
            latents (`torch.Tensor` of shape `(B, C, H/f, W/f)`, *optional*): the initial noise, instead of a draw.
            mask_buildings (`bool`, defaults to True): set building pixels to 0 (-147 dB), as RadioMapSeer's gain
                maps hold them: the mask is an input, so the maps are exact there instead of what the VAE decodes.

        Returns:
            :class:`RadioMapPipelineOutput` whose ``images`` are the maps at the input size on the [0, 1] scale.

        Raises:
            CityInputError: bad buildings or transmitters (size, values, batch), before any model work.
            InvalidArgumentError: a bad ``num_inference_steps``, ``output_type`` or ``latents``.
        """
        if num_inference_steps is None:
            num_inference_steps = self.config.default_num_inference_steps
        num_inference_steps = check_inference_steps(num_inference_steps, self.scheduler)
        check_output_type(output_type)
        buildings, transmitter = self.prepare_city(buildings, transmitters)  # (B, 1, H, W) each
        batch, _, height, width = buildings.shape
        factor = self.vae.downsample_factor
        shape = (batch, self.vae.config.latent_channels, height // factor, width // factor)
        device, dtype = self._execution_device, self.unet.dtype
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)  # (B, C, h, w)
        elif tuple(latents.shape) != shape:
            raise InvalidArgumentError(f"latents: expected shape {shape} for these maps, got {tuple(latents.shape)}")
        else:
            latents = latents.to(device=device, dtype=dtype)

        condition = self.city_encoder(buildings.to(self.city_encoder.dtype), transmitter.to(self.city_encoder.dtype))
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        latents = latents * self.scheduler.init_noise_sigma
        stochastic = "generator" in inspect.signature(self.scheduler.step).parameters
        step_kwargs = {"generator": generator} if stochastic else {}
        for timestep in self.progress_bar(self.scheduler.timesteps):
            prediction = self.denoise(self.scheduler.scale_model_input(latents, timestep), timestep, condition)
            latents = self.scheduler.step(prediction, timestep, latents, **step_kwargs).prev_sample.to(dtype)

        maps = self.decode_latents(latents)  # (B, 1, H, W) in [0, 1]
        if mask_buildings:
            maps = outside_buildings(maps, buildings)
        self.maybe_free_model_hooks()
        images = maps_to_output(maps, output_type)
        return RadioMapPipelineOutput(images=images) if return_dict else (images,)
