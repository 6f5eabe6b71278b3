"""What the two construction pipelines share: the output dataclass, the conversion of maps to the output type, the
building of their UNet and city encoder, the size divisor of a UNet, and a mixin (component names in
``model_index.json``, the card, the Hub upload)."""

import importlib
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image
import torch
from diffusers import UNet2DModel
from diffusers.utils import BaseOutput

from ..errors import InvalidArgumentError
from ..models.city_encoder import CityEncoder

PACKAGE = "radiodiff_vae"
OUTPUT_TYPES = ("pil", "np", "pt")


@dataclass
class RadioMapPipelineOutput(BaseOutput):
    """Output of the construction pipelines.

    Args:
        images (`List[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`): the radio maps on RadioMapSeer's unit
            scale (pixel / 255, [0, 1]): mode-L images for ``"pil"``, `(B, H, W, 1)` float32 for ``"np"``,
            `(B, 1, H, W)` float32 for ``"pt"``.
    """

    images: Union[List[PIL.Image.Image], np.ndarray, torch.Tensor]


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise InvalidArgumentError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")


def outside_buildings(maps: torch.Tensor, buildings: torch.Tensor) -> torch.Tensor:
    """`maps` `(B, 1, H, W)` on the [0, 1] scale with the pixels where `buildings` `(B, 1, H, W)` is 1 set to 0, the
    value RadioMapSeer's gain maps (and the synthetic and ray-traced folders) hold inside buildings."""
    return maps * (1 - buildings.to(maps.dtype))


def maps_to_output(unit: torch.Tensor, output_type: str) -> Union[List[PIL.Image.Image], np.ndarray, torch.Tensor]:
    """Maps `(B, 1, H, W)` in [0, 1] as ``output_type`` (see :class:`RadioMapPipelineOutput`)."""
    unit = unit.float().clamp(0.0, 1.0)
    if output_type == "pt":
        return unit
    array = unit.cpu().permute(0, 2, 3, 1).numpy()  # (B, H, W, 1)
    if output_type == "np":
        return array
    grey = np.round(array[..., 0] * 255.0).astype(np.uint8)  # (B, H, W), RadioMapSeer's 8-bit encoding
    return [PIL.Image.fromarray(image, mode="L") for image in grey]


def unet_block_types(levels: int, attention: bool) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(down, up) block types of a ``UNet2DModel`` with ``levels`` levels, attention at the lowest one if asked."""
    down = ["DownBlock2D"] * levels
    up = ["UpBlock2D"] * levels
    if attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return tuple(down), tuple(up)


def build_unet(
    sample_size: int,
    in_channels: int,
    out_channels: int,
    block_out_channels: Sequence[int],
    layers_per_block: int,
    attention: bool,
    norm_num_groups: int,
    overrides: Optional[Dict[str, Any]] = None,
) -> UNet2DModel:
    """A fresh ``UNet2DModel`` of the construction pipelines: one level per entry of ``block_out_channels``,
    self-attention at the lowest level and in the mid block when ``attention``; ``overrides`` replace any config
    value. In eval mode, as ``from_pretrained`` gives (training calls ``.train()``)."""
    down, up = unet_block_types(len(block_out_channels), attention)
    config = dict(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        down_block_types=down,
        up_block_types=up,
        add_attention=attention,
        norm_num_groups=norm_num_groups,
    )
    config.update(overrides or {})
    return UNet2DModel(**config).eval()


def build_city_encoder(
    in_features: Sequence[str],
    out_channels: int,
    block_out_channels: Sequence[int],
    downsample_factor: int,
    ray_samples: int,
    overrides: Optional[Dict[str, Any]] = None,
    **config: Any,
) -> CityEncoder:
    """A fresh :class:`CityEncoder` (further config values in ``config``; ``overrides`` replace any), in eval mode."""
    settings = dict(
        in_features=tuple(in_features),
        out_channels=out_channels,
        block_out_channels=tuple(block_out_channels),
        downsample_factor=downsample_factor,
        ray_samples=ray_samples,
        **config,
    )
    settings.update(overrides or {})
    return CityEncoder(**settings).eval()


def unet_size_factor(unet: Any) -> int:
    """The factor a ``UNet2DModel`` input's height and width must be multiples of: each down block but the last
    halves them."""
    return 2 ** (len(unet.config.down_block_types) - 1)


def check_inference_steps(num_inference_steps: Any, scheduler: Any) -> int:
    limit = int(scheduler.config.num_train_timesteps)
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
        raise InvalidArgumentError(f"num_inference_steps must be an integer, got {num_inference_steps!r}")
    if not 1 <= int(num_inference_steps) <= limit:
        raise InvalidArgumentError(
            f"num_inference_steps must be between 1 and the scheduler's num_train_timesteps {limit}, got "
            f"{num_inference_steps}"
        )
    return int(num_inference_steps)


class ConstructionPipelineMixin:
    """What both construction pipelines add to ``DiffusionPipeline``.

    * ``model_index.json`` names this package's components by the package and the class it exports
      (``["radiodiff_vae", "CityEncoder"]``) rather than by the module that defines them, which diffusers records for
      libraries it does not know. ``from_pretrained`` imports ``radiodiff_vae`` and takes the class from it (a lazy
      export), so saved folders survive moves of modules inside the package.
    * ``save_model_card`` and ``push_to_hub`` write and upload the card with the construction metrics
      (:mod:`radiodiff_vae.pipelines.card`).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        config = self.__dict__.get("_internal_dict")
        if config is None or name not in config:
            return
        entry = config[name]
        if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], str):
            return
        library, class_name = entry
        if library.startswith(PACKAGE + ".") and getattr(importlib.import_module(PACKAGE), class_name, None) is type(
            value
        ):
            self.register_to_config(**{name: (PACKAGE, class_name)})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], **kwargs: Any):
        """diffusers' ``from_pretrained`` (a folder or a Hub id; ``torch_dtype``, ``revision``, ``cache_dir``, ...),
        with a mistyped local path reported as one line before any Hub lookup."""
        from ..hub_id import local_path_or_hub_id

        if isinstance(pretrained_model_name_or_path, (str, os.PathLike)):
            local_path_or_hub_id(pretrained_model_name_or_path, f"{cls.__name__} folder")
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def download(cls, pretrained_model_name: str, **kwargs: Any) -> str:
        """The local folder of a Hub pipeline. diffusers' own ``download`` refuses a ``model_index.json`` whose
        components come from a library it does not know (``radiodiff_vae``); the repository is a plain
        ``save_pretrained`` folder, so ``huggingface_hub.snapshot_download`` fetches it whole (cache, revision,
        token and offline mode as usual)."""
        from huggingface_hub import snapshot_download

        options = ("cache_dir", "force_download", "local_files_only", "token", "revision")
        return snapshot_download(
            pretrained_model_name, **{key: kwargs[key] for key in options if kwargs.get(key) is not None}
        )

    def save_model_card(self, folder: Union[str, os.PathLike], metrics: Optional[Mapping[str, Any]] = None, **kwargs):
        """Writes ``README.md`` into ``folder`` (a ``save_pretrained`` output) with the construction ``metrics``
        (``evaluate-construction``'s ``metrics.json``); see :func:`~radiodiff_vae.pipelines.card.save_pipeline_card`."""
        from .card import save_pipeline_card

        return save_pipeline_card(folder, self, metrics, **kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: Optional[str] = None,
        private: Optional[bool] = None,
        token: Optional[Union[str, bool]] = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: Optional[str] = None,
        *,
        metrics: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ):
        """diffusers' ``push_to_hub`` with this package's card (the construction ``metrics``) in place of diffusers'
        generic one: the folder and the card in one commit (:func:`~radiodiff_vae.hub.push.push_with_card`, as
        ``RadioVAE.push_to_hub``); returns the ``CommitInfo``. Keyword arguments go to the card
        (:func:`~radiodiff_vae.pipelines.card.save_pipeline_card`: ``training_args``, ``sample_image``,
        ``eval_dataset``, ``eval_steps``, ...)."""
        from ..hub.push import push_with_card
        from .card import save_pipeline_card

        def write_card(folder: os.PathLike, name: str) -> None:
            save_pipeline_card(folder, self, metrics, repo_id=name, **kwargs)

        return push_with_card(
            self, repo_id, write_card, commit_message, private, token, create_pr, safe_serialization, variant
        )
