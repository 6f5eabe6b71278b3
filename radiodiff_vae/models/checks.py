"""The checks of a RadioVAE's config, inputs and saved folder: each bad value stops with one line that names it,
what was expected and what came, before any module is built or any compute runs.

:func:`check_size_divisible` is the package's one rule for map sizes (the model, evaluation, the command lines and
the training script call it).
"""

import json
import math
import os
import warnings
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn as nn

from ..hub_id import local_path_or_hub_id

UPSAMPLE_TYPES = ("conv_transpose", "nearest")
UPSAMPLE_POSITIONS = ("first", "last")

_CONFIG_KINDS = {
    "in_channels": "positive integer",
    "out_channels": "positive integer",
    "layers_per_block": "positive integer",
    "decoder_layers_per_block": "positive integer",
    "latent_channels": "positive integer",
    "norm_num_groups": "positive integer",
    "sample_size": "positive integer",
    "num_downsamples": "integer >= 0",
    "block_out_channels": "non-empty list of positive integers",
    "mid_block_add_attention": "boolean",
    "use_quant_conv": "boolean",
    "use_post_quant_conv": "boolean",
    "act_fn": "activation name",
    "upsample_type": "string",
    "upsample_position": "string",
    "scaling_factor": "positive finite number",
}
_ACTIVATIONS = ("swish", "silu", "mish", "gelu", "relu")


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_integer(value: object) -> bool:
    return _is_integer(value) and value > 0


def _has_kind(value: object, kind: str) -> bool:
    if kind == "positive integer":
        return _is_positive_integer(value)
    if kind == "integer >= 0":
        return _is_integer(value) and value >= 0
    if kind == "non-empty list of positive integers":
        return isinstance(value, (list, tuple)) and len(value) > 0 and all(map(_is_positive_integer, value))
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "activation name":
        return value in _ACTIVATIONS
    if kind == "string":
        return isinstance(value, str)
    if kind == "positive finite number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    raise AssertionError(kind)


def check_config_values(values: Dict[str, object]) -> None:
    """Raises a ValueError naming the key, the value and what is allowed, for the first config value of a wrong type
    or range (``values``: the constructor's arguments)."""
    for key, kind in _CONFIG_KINDS.items():
        if key in values and not _has_kind(values[key], kind):
            article = "an" if kind[0] in "aeiou" else "a"
            allowed = f"one of {_ACTIVATIONS}" if kind == "activation name" else f"{article} {kind}"
            raise ValueError(f"RadioVAE config {key}={values[key]!r}: expected {allowed}.")


def check_finite_weights(model: nn.Module, source: object) -> None:
    state = model.state_dict()
    bad = [name for name, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise ValueError(
            f"{source}: {len(bad)} weight tensor(s) hold NaN or inf values (first: {bad[0]}); the saved model is "
            "corrupt or diverged in training."
        )


def check_architecture(
    block_out_channels: Tuple[int, ...],
    num_downsamples: int,
    upsample_type: str,
    upsample_position: str,
    norm_num_groups: int,
    sample_size: int,
) -> None:
    """Raises a ValueError for a combination of config values that builds no network (each value on its own passed
    :func:`check_config_values`, which runs first)."""
    if not 0 <= num_downsamples <= len(block_out_channels):
        raise ValueError(
            f"num_downsamples must be between 0 and len(block_out_channels)={len(block_out_channels)}, "
            f"got {num_downsamples}."
        )
    if upsample_type not in UPSAMPLE_TYPES:
        raise ValueError(f"upsample_type must be one of {UPSAMPLE_TYPES}, got {upsample_type!r}.")
    if upsample_position not in UPSAMPLE_POSITIONS:
        raise ValueError(f"upsample_position must be one of {UPSAMPLE_POSITIONS}, got {upsample_position!r}.")
    bad = [channels for channels in block_out_channels if channels % norm_num_groups]
    if bad:
        raise ValueError(f"Every entry of block_out_channels must be divisible by norm_num_groups={norm_num_groups}, got {bad}.")
    check_size_divisible(sample_size, None, 2**num_downsamples, "RadioVAE config sample_size")


def check_size_divisible(
    height: int, width: Optional[int], factor: int, what: str, owner: str = "the model's", remedy: str = ""
) -> None:
    """The one rule for map sizes: a map enters a model whose downsampling factor is ``factor`` when its height and
    width are positive multiples of ``factor``. Every place that checks a map size, a ``--resolution`` or a config's
    ``sample_size`` calls this.

    Args:
        height, width (`int`): the size; ``width`` None for a square size given as one number (``--resolution``).
        factor (`int`): the downsampling factor (``RadioVAE.downsample_factor``).
        what (`str`): what the size is, for the message (``"--resolution"``, ``"RadioVAE.encode: the map size"``).
        owner (`str`): whose factor it is (``"the model's"``, ``"the tiny preset's"``).
        remedy (`str`): what to do about it, appended to the message.

    Raises:
        ValueError: one line naming the size, the factor and what is expected.
    """
    sizes = (height,) if width is None else (height, width)
    if all(size > 0 and size % factor == 0 for size in sizes):
        return
    size = "x".join(str(size) for size in sizes)
    problem = "which has a zero side" if 0 in sizes else f"not divisible by {owner} downsampling factor {factor}"
    raise ValueError(
        f"{what} is {size}, {problem}: height and width must be positive multiples of {factor}"
        + (f"; {remedy}" if remedy else "")
    )


def check_tensor(
    x: torch.Tensor, channels: int, factor: int, what: str, method: str, check_values: bool = True
) -> None:
    """Rejects anything `method` cannot turn into a meaningful result, before any compute."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"RadioVAE.{method} expected a torch.Tensor {what}, got {type(x).__name__}.")
    if x.ndim != 4:
        raise ValueError(
            f"RadioVAE.{method} expected a 4-D {what} tensor (batch, {channels}, height, width), got shape {tuple(x.shape)}."
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"RadioVAE.{method} expected a {what} with {channels} channel(s) (batch, {channels}, height, width), "
            f"got {x.shape[1]} channel(s) in shape {tuple(x.shape)}."
        )
    if x.shape[0] == 0:
        raise ValueError(f"RadioVAE.{method} got an empty batch (shape {tuple(x.shape)}).")
    remedy = "crop or resize it (RadioMapSeer's 256x256 and the report's 320x320 both work)" if factor > 1 else ""
    check_size_divisible(x.shape[-2], x.shape[-1], factor, f"RadioVAE.{method}: the {what} size", remedy=remedy)
    if not torch.is_floating_point(x):
        raise ValueError(f"RadioVAE.{method} expected a floating-point {what}, got dtype {x.dtype}.")
    # One device sync per call; skipped while torch.compile traces so that compiled graphs stay whole.
    if check_values and not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"RadioVAE.{method} got a {what} with {bad} non-finite value(s) (NaN or inf).")


# Maps enter in [-1, 1]; beyond this the input is almost surely unscaled (0..255 pixels, dB values).
INPUT_RANGE_LIMIT = 2.0


def warn_if_not_model_range(x: torch.Tensor) -> None:
    if torch.compiler.is_compiling():
        return
    low, high = (float(value) for value in torch.aminmax(x.detach()))
    if low < -INPUT_RANGE_LIMIT or high > INPUT_RANGE_LIMIT:
        # Python's default warning filter shows this once per calling line, not once per batch.
        warnings.warn(
            f"RadioVAE.encode got maps with values in [{low:.4g}, {high:.4g}]; it expects [-1, 1] "
            "(radiodiff_vae.data.unit_to_model(pixels / 255) for 8-bit maps). The latents will be meaningless.",
            stacklevel=3,
        )


_OTHER_CLASS_HINTS = {
    "AutoencoderKL": "load it with diffusers.AutoencoderKL.from_pretrained(folder); one built with the "
    "radiodiff-ldm-f4 numbers has the same state-dict keys, so RadioVAE.from_preset('radiodiff-ldm-f4')"
    ".load_state_dict(...) takes its weights.",
    "UNet2DModel": "a diffusion UNet, not an autoencoder; load it with diffusers.UNet2DModel.from_pretrained(folder).",
    "NLayerDiscriminator": "load it with radiodiff_vae.NLayerDiscriminator.from_pretrained(folder).",
}


def check_saved_folder(folder: str, variant: Optional[str]) -> None:
    """Names the missing or unreadable file of a `save_pretrained` folder instead of failing deep inside diffusers."""
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"{config_path} is missing: a RadioVAE folder holds config.json and diffusion_pytorch_model.safetensors "
            "(written by save_pretrained)."
        )
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{config_path} is not valid JSON ({error}); the saved model is corrupt.") from error
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} holds a JSON {type(config).__name__}: expected an object of config values.")
    class_name = config.get("_class_name", "RadioVAE")
    if class_name != "RadioVAE":
        hint = _OTHER_CLASS_HINTS.get(
            class_name, f"load it with the class it names (diffusers.{class_name}.from_pretrained)."
        )
        article = "an" if class_name[:1] in "AEIO" else "a"
        raise ValueError(
            f"{os.path.normpath(folder)} holds {article} {class_name} (config.json _class_name), not a RadioVAE: {hint}"
        )
    suffix = f".{variant}" if variant else ""
    weights = [os.path.join(folder, f"diffusion_pytorch_model{suffix}.{ext}") for ext in ("safetensors", "bin")]
    index = os.path.join(folder, f"diffusion_pytorch_model{suffix}.safetensors.index.json")
    if os.path.isfile(index):
        return
    existing = [path for path in weights if os.path.isfile(path)]
    if not existing:
        raise FileNotFoundError(
            f"{weights[0]} is missing: a RadioVAE folder holds config.json and diffusion_pytorch_model.safetensors."
        )
    if existing[0].endswith(".safetensors"):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(existing[0], framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{existing[0]} cannot be read as safetensors ({error}); the saved model is corrupt.") from error


def check_pretrained_source(name: Union[str, os.PathLike], subfolder: Optional[str], variant: Optional[str]) -> None:
    """What ``RadioVAE.from_pretrained`` checks before diffusers reads anything: a local folder holds readable files
    of a RadioVAE; a name that is no local path must be a Hub id (a mistyped local path fails here, before any
    network lookup)."""
    if os.path.isfile(name):
        raise NotADirectoryError(
            f"{name} is a file: expected a model folder with config.json and "
            "diffusion_pytorch_model.safetensors (written by save_pretrained)."
        )
    if local_path_or_hub_id(name, "model folder") is not None:
        check_saved_folder(os.path.join(name, subfolder or ""), variant)
