"""The mapping between the configs of ``diffusers.AutoencoderKL`` and ``RadioVAE``.

``radiodiff-ldm-f4`` (and any RadioVAE that downsamples after every level but the last, upsamples with nearest+conv
after its resnets and gives each decoder level one resnet more than an encoder level) is the network of an
``AutoencoderKL`` with the same numbers and the same state-dict keys: :func:`autoencoder_kl_config` and
:func:`radio_vae_config_of_autoencoder_kl` translate the configs, ``RadioVAE.to_autoencoder_kl`` /
``RadioVAE.from_autoencoder_kl`` move the weights.
"""

from typing import Dict, Mapping

from diffusers.models.modeling_utils import ModelMixin

from ..errors import ModelFileError

# Keys with the same name and meaning in both configs.
_SHARED_AUTOENCODER_KL_KEYS = (
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "act_fn",
    "latent_channels",
    "norm_num_groups",
    "sample_size",
    "scaling_factor",
    "shift_factor",
    "latents_mean",
    "latents_std",
    "force_upcast",
    "use_quant_conv",
    "use_post_quant_conv",
    "mid_block_add_attention",
)


# from_pretrained arguments that say where a config is (as opposed to how to load the weights).
CONFIG_LOCATION_KEYS = (
    "subfolder", "revision", "cache_dir", "token", "local_files_only", "force_download", "proxies"
)


def autoencoder_kl_config(config: Mapping) -> Dict[str, object]:
    """The `AutoencoderKL` config that builds the network of a RadioVAE `config`.

    AutoencoderKL downsamples after every level but the last, upsamples with nearest+conv after its resnets, and
    gives each decoder level one resnet more than an encoder level; any other RadioVAE layout raises ModelFileError.
    """
    levels = len(config["block_out_channels"])
    required = {
        "upsample_type": "nearest",
        "upsample_position": "last",
        "num_downsamples": levels - 1,
        "decoder_layers_per_block": config["layers_per_block"] + 1,
    }
    mismatches = [
        f"{key}={config[key]!r} (needs {value!r})" for key, value in required.items() if config[key] != value
    ]
    if mismatches:
        raise ModelFileError(
            "This RadioVAE cannot be expressed as a diffusers.AutoencoderKL: " + ", ".join(mismatches) + ". "
            "The radiodiff-ldm-f4 preset can; the report's radiodiff-vae layout cannot."
        )
    exported = {key: config[key] for key in _SHARED_AUTOENCODER_KL_KEYS}
    exported["block_out_channels"] = tuple(config["block_out_channels"])
    exported["down_block_types"] = ("DownEncoderBlock2D",) * levels
    exported["up_block_types"] = ("UpDecoderBlock2D",) * levels
    return exported


def radio_vae_config_of_autoencoder_kl(config: Mapping) -> Dict[str, object]:
    """The RadioVAE config of the network of an `AutoencoderKL` `config` (see `autoencoder_kl_config`)."""
    levels = len(config["block_out_channels"])
    expected_blocks = {"down_block_types": "DownEncoderBlock2D", "up_block_types": "UpDecoderBlock2D"}
    for key, block in expected_blocks.items():
        if list(config[key]) != [block] * levels:
            raise ModelFileError(
                f"AutoencoderKL {key} must be {levels} x {block!r} (one per block_out_channels entry) to become a "
                f"RadioVAE, got {list(config[key])}."
            )
    radio = {key: config[key] for key in _SHARED_AUTOENCODER_KL_KEYS}
    radio.update(
        block_out_channels=tuple(config["block_out_channels"]),
        decoder_layers_per_block=config["layers_per_block"] + 1,
        num_downsamples=levels - 1,
        upsample_type="nearest",
        upsample_position="last",
    )
    return radio


def placed_like(model: ModelMixin, reference: ModelMixin) -> ModelMixin:
    """`model` on the device, in the dtype and the train/eval mode of `reference`."""
    if model.dtype != reference.dtype:  # diffusers warns on every dtype cast, so cast only when needed
        model.to(dtype=reference.dtype)
    return model.to(device=reference.device).train(reference.training)
