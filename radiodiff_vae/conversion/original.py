"""Conversion of checkpoints of the original RadioDiff code into a ``radiodiff-ldm-f4`` RadioVAE folder, and back.

The original code (a CompVis latent-diffusion first stage) saves its autoencoder in one of three ways:

* the trainer's dict ``{"step", "model", "opt_ae", "lr_scheduler_ae", "opt_disc", "lr_scheduler_disc", "ema",
  "scaler"}``, where ``ema`` is an ema-pytorch state dict holding the averaged weights under ``ema_model.``
  (and the live ones under ``online_model.``);
* a Lightning-style ``{"state_dict": ...}`` (also a whole latent-diffusion model, whose VAE sits under
  ``first_stage_model.``);
* a bare state dict.

Its names are CompVis' (``encoder.down.0.block.0.norm1.weight``, ``encoder.mid.attn_1.q.weight``, ...), mapped to
diffusers' ``AutoencoderKL`` names, which ``radiodiff-ldm-f4`` shares, by diffusers' own
``convert_ldm_vae_checkpoint``. ``loss.logvar`` and ``loss.discriminator.*`` can be kept for continued training;
``loss.perceptual_loss.*`` (LPIPS, rebuilt from its own files) and the ``loss_pinn.`` / ``loss_pinn_dpm2irt4.``
copies of the loss are skipped and counted. Any other name stops the conversion: nothing is dropped silently, and
the model loads strictly.

Output folder::

    config.json, diffusion_pytorch_model.safetensors   RadioVAE.from_pretrained(folder)
    README.md                                          model card (source, weights taken, step)
    discriminator.safetensors                          NLayerDiscriminator keys (main.0.weight, ...); its config
                                                       as JSON in the file's metadata
    logvar.safetensors                                 {"logvar": 0-dim tensor}

``load_training_state(criterion, folder)`` puts the last two into a ``RadioVAELoss``. (The discriminator is a flat
file, not a ``save_pretrained`` subfolder: diffusers' ``from_pretrained(folder, subfolder=...)`` prefers a weights
file at the folder's root, which here is the VAE's.)

The other way, ``export_original_checkpoint`` writes a RadioVAE whose layout the original ``AutoencoderKL`` can
build as ``torch.save({"model": state_dict})`` under the CompVis names (the inverse of the renaming above, found by
running the same converter on probes), plus the YAML config entries the original needs to build it; the
conversion reads the channel counts and latent channels from the tensors, so the round trip is exact.
"""

import json
import logging
import os
import pickle
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

from ..atomic import atomic_directory, atomic_path, atomic_write_text, check_directory_target
from ..errors import InputNotFoundError, InvalidArgumentError, ModelFileError, OutputExistsError, check_output_folder

logger = logging.getLogger(__name__)

TARGET_PRESET = "radiodiff-ldm-f4"
# RadioDiff's diffusion configs start from this latent scale (DESIGN.md): a converted model carries it.
CONVERTED_SCALING_FACTOR = 0.3

EMA_WEIGHTS_PREFIX = "ema_model."
EMA_OTHER_PREFIXES = ("online_model.",)
EMA_BOOKKEEPING = frozenset({"initted", "step"})
# A whole latent-diffusion checkpoint keeps its first stage under one of these (as in diffusers' LDM_VAE_KEYS).
FIRST_STAGE_PREFIXES = ("first_stage_model.", "vae.")
VAE_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
LOGVAR_KEY = "loss.logvar"
DISCRIMINATOR_PREFIX = "loss.discriminator."
# Parts of the original loss that a conversion leaves out on purpose.
SKIPPED_PREFIXES = ("loss.perceptual_loss.", "loss_pinn.", "loss_pinn_dpm2irt4.")

DISCRIMINATOR_FILENAME = "discriminator.safetensors"
LOGVAR_FILENAME = "logvar.safetensors"
DISCRIMINATOR_CONFIG_KEYS = ("in_channels", "base_channels", "num_layers", "use_actnorm")

PathLike = Union[str, os.PathLike]


@dataclass
class ConversionResult:
    """What ``convert_original_checkpoint`` built and from which weights.

    Attributes:
        model (`RadioVAE`): the converted autoencoder (``radiodiff-ldm-f4`` layout, ``scaling_factor`` 0.3 unless
            another was asked for).
        source_format (`str`): ``"trainer"``, ``"lightning"`` or ``"state_dict"``.
        weights (`str`): where the weights came from, e.g. ``"model"``, ``"ema/ema_model."``, ``"state_dict"``.
        step (`int`, *optional*): the training step recorded in a trainer checkpoint.
        loaded_with_weights_only (`bool`): whether ``torch.load(weights_only=True)`` read the file.
        name_map (`dict`): original name -> RadioVAE name, for every converted tensor.
        skipped (`dict`): prefix -> number of tensors left out on purpose (LPIPS, loss variants, optimizer...).
        discriminator (`NLayerDiscriminator`, *optional*): the discriminator, when the checkpoint has one.
        logvar (`torch.Tensor`, *optional*): the 0-dim log-variance of the loss, when the checkpoint has one.
        output_dir (`Path`, *optional*): the folder written by ``convert_original_checkpoint``.
    """

    model: Any
    source_format: str
    weights: str
    step: Optional[int] = None
    loaded_with_weights_only: bool = True
    name_map: Dict[str, str] = field(default_factory=dict)
    skipped: Dict[str, int] = field(default_factory=dict)
    discriminator: Any = None
    logvar: Optional[torch.Tensor] = None
    output_dir: Optional[Path] = None


# ------------------------------------------------------------------------------------------------------------------
# reading the file
def load_original_checkpoint(path: PathLike, trust_pickle: bool = False) -> Tuple[Any, bool]:
    """Reads a checkpoint file on the CPU; returns ``(object, loaded_with_weights_only)``.

    ``torch.load(weights_only=True)`` is tried first: it only rebuilds tensors and plain containers. A file that
    also pickles other objects (an optimizer's scheduler lambda, a config class) is refused with a ValueError unless
    ``trust_pickle`` is set, because unpickling runs code chosen by whoever wrote the file. ``.safetensors`` files are
    read with safetensors.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"Checkpoint {path} does not exist (expected a .ckpt/.pt/.pth/.safetensors file).")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu"), True
        except SafetensorError as error:
            raise ModelFileError(f"{path} is not a readable safetensors file ({error})") from None
    _check_pytorch_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True), True
    except RuntimeError as error:  # e.g. "PytorchStreamReader failed reading zip archive"
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelFileError(f"{path} is a damaged or truncated PyTorch checkpoint ({reason})") from None
    except pickle.UnpicklingError as error:
        reason = _unpickling_reason(error)
        if not trust_pickle:
            raise ModelFileError(
                f"{path} holds pickled objects besides tensors, so torch.load(weights_only=True) refused it "
                f"({reason}). Loading it runs code stored in the file: if you trust its source, pass "
                "trust_pickle=True (--trust_pickle on the command line)."
            ) from error
        logger.warning(
            "%s: weights_only=True failed (%s); loading with weights_only=False as trust_pickle allows.", path, reason
        )
        return torch.load(path, map_location="cpu", weights_only=False), False


# torch.save writes a zip archive (since torch 1.6) or, in the legacy format, a pickle (protocol 2+ opens with 0x80)
_PYTORCH_SIGNATURES = (b"PK\x03\x04", b"\x80")
_OTHER_SIGNATURES = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image"}


def _check_pytorch_file(path: Path) -> None:
    """Refuses a file that torch.load would misreport (a text or image file "holds pickled objects")."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(_PYTORCH_SIGNATURES):
        return
    kind = next((name for signature, name in _OTHER_SIGNATURES.items() if head.startswith(signature)), None)
    if kind is None:
        kind = "an empty file" if not head else "text or another format"
    raise ModelFileError(
        f"{path} is not a PyTorch checkpoint (it looks like {kind}); expected a .ckpt/.pt/.pth file written by "
        "torch.save, or a .safetensors file"
    )


def _unpickling_reason(error: Exception) -> str:
    """The line of torch's long weights_only message that names what was refused (e.g. an unsupported global)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    for line in lines:
        if "Unsupported global" in line or "WeightsUnpickler error" in line:
            return line.replace("WeightsUnpickler error: ", "")
    return next((line for line in lines if line), type(error).__name__)


def select_weights(
    checkpoint: Any, use_ema: bool = False
) -> Tuple[Dict[str, torch.Tensor], str, str, Optional[int], Dict[str, int]]:
    """Finds the autoencoder's state dict inside a loaded checkpoint.

    Returns ``(state_dict, source_format, weights, step, skipped)``; ``skipped`` counts the entries of the
    checkpoint that are not weights (optimizer states, EMA bookkeeping and the other copy of the weights).
    """
    if not isinstance(checkpoint, Mapping):
        raise ModelFileError(
            "A checkpoint must be a dict (a state dict or a trainer/Lightning dict), "
            f"got {type(checkpoint).__name__}."
        )
    skipped: Dict[str, int] = {}
    step = None
    if "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        source_format = "trainer"
        step = _as_int(checkpoint.get("step"))
        for key in sorted(set(checkpoint) - {"model", "ema", "step"}):
            skipped[key] = 1
        if use_ema:
            ema = checkpoint.get("ema")
            if not isinstance(ema, Mapping):
                raise ModelFileError(
                    "use_ema was requested but the trainer checkpoint has no 'ema' state dict "
                    f"(its keys: {sorted(checkpoint)})."
                )
            state_dict, ema_skipped = _ema_weights(ema)
            skipped.update(ema_skipped)
            skipped["model"] = len(checkpoint["model"])
            weights = f"ema/{EMA_WEIGHTS_PREFIX}"
        else:
            state_dict, weights = dict(checkpoint["model"]), "model"
            if isinstance(checkpoint.get("ema"), Mapping):
                skipped["ema"] = len(checkpoint["ema"])
    elif "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
        source_format, weights = "lightning", "state_dict"
        step = _as_int(checkpoint.get("global_step"))
        if use_ema:
            raise ModelFileError(
                "use_ema applies to the RadioDiff trainer's dict (with 'model' and 'ema'); "
                "this is a Lightning checkpoint."
            )
        state_dict = dict(checkpoint["state_dict"])
        for key in sorted(set(checkpoint) - {"state_dict"}):
            skipped[key] = 1
    else:
        source_format, weights = "state_dict", "state dict"
        state_dict = dict(checkpoint)
        if use_ema:
            if not any(key.startswith(EMA_WEIGHTS_PREFIX) for key in state_dict):
                raise ModelFileError(
                    f"use_ema was requested but no key starts with {EMA_WEIGHTS_PREFIX!r} in this state dict."
                )
            state_dict, ema_skipped = _ema_weights(state_dict)
            skipped.update(ema_skipped)
            weights = f"state dict/{EMA_WEIGHTS_PREFIX}"
    not_tensors = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ModelFileError(
            f"The {weights} weights hold non-tensor entries, e.g. {not_tensors[0]!r} "
            f"({type(state_dict[not_tensors[0]]).__name__}); expected a state dict of tensors."
        )
    return state_dict, source_format, weights, step, skipped


def _ema_weights(ema: Mapping[str, Any]) -> Tuple[Dict[str, torch.Tensor], Dict[str, int]]:
    weights, skipped = {}, Counter()
    for key, value in ema.items():
        if key.startswith(EMA_WEIGHTS_PREFIX):
            weights[key[len(EMA_WEIGHTS_PREFIX):]] = value
        elif key.startswith(EMA_OTHER_PREFIXES):
            skipped["ema/" + key.split(".")[0] + "."] += 1
        elif key in EMA_BOOKKEEPING:
            skipped[f"ema/{key}"] += 1
        else:
            raise ModelFileError(
                f"Unexpected entry {key!r} in the EMA state dict "
                f"(expected {EMA_WEIGHTS_PREFIX}*, online_model.*, initted, step)."
            )
    if not weights:
        raise ModelFileError(f"The EMA state dict has no {EMA_WEIGHTS_PREFIX}* weights.")
    return weights, dict(skipped)


def _as_int(value: Any) -> Optional[int]:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return int(value.item())
    return int(value) if isinstance(value, int) else None


# ------------------------------------------------------------------------------------------------------------------
# splitting and renaming
def split_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor], Optional[torch.Tensor], Dict[str, int]]:
    """Splits original weights into ``(vae, discriminator, logvar, skipped)``; unknown names raise a ValueError.

    ``vae`` keeps the CompVis names without any ``first_stage_model.``/``vae.``/``module.`` prefix; ``discriminator``
    has the ``loss.discriminator.`` prefix removed (``main.0.weight``, ...).
    """
    state_dict, outside = _strip_common_prefix(state_dict)
    vae, discriminator, skipped, unknown = {}, {}, Counter(outside), []
    logvar = None
    for key, value in state_dict.items():
        if key.startswith(VAE_PREFIXES):
            vae[key] = value
        elif key == LOGVAR_KEY:
            logvar = value
        elif key.startswith(DISCRIMINATOR_PREFIX):
            discriminator[key[len(DISCRIMINATOR_PREFIX):]] = value
        elif key.startswith(SKIPPED_PREFIXES):
            skipped[next(prefix for prefix in SKIPPED_PREFIXES if key.startswith(prefix))] += 1
        else:
            unknown.append(key)
    if unknown:
        raise ModelFileError(
            f"{len(unknown)} tensor(s) of the checkpoint belong to no known part of the original autoencoder, e.g. "
            f"{unknown[:3]}; expected names under {list(VAE_PREFIXES)}, {LOGVAR_KEY!r}, {DISCRIMINATOR_PREFIX!r} or "
            f"{list(SKIPPED_PREFIXES)}. Is this a RadioDiff VAE checkpoint?"
        )
    if not vae:
        raise ModelFileError(f"The checkpoint has no autoencoder weights (no name starts with {list(VAE_PREFIXES)}).")
    return vae, discriminator, logvar, dict(skipped)


def _strip_common_prefix(state_dict: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, int]]:
    """Removes a DDP ``module.`` prefix, and keeps only the first stage of a whole latent-diffusion checkpoint.

    Returns ``(state_dict, skipped)``; ``skipped`` counts the tensors outside the first stage.
    """
    state_dict = dict(state_dict)
    if state_dict and all(key.startswith("module.") for key in state_dict):
        state_dict = {key[len("module."):]: value for key, value in state_dict.items()}
    for prefix in FIRST_STAGE_PREFIXES:
        if any(key.startswith(prefix + "encoder.") for key in state_dict):
            first_stage = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
            outside = len(state_dict) - len(first_stage)
            return first_stage, ({f"outside {prefix}": outside} if outside else {})
    return state_dict, {}


def _converter_layout(num_levels: int) -> Dict[str, list]:
    # The two config entries convert_ldm_vae_checkpoint reads: how many encoder and decoder levels there are.
    return {
        "down_block_types": ["DownEncoderBlock2D"] * num_levels,
        "up_block_types": ["UpDecoderBlock2D"] * num_levels,
    }


def map_original_names(vae_state_dict: Mapping[str, torch.Tensor], num_levels: int) -> Dict[str, str]:
    """``{diffusers name: original name}`` as diffusers' ``convert_ldm_vae_checkpoint`` renames CompVis VAE weights.

    The converter runs on one-element probes that carry each tensor's index, so the map follows whatever diffusers
    does (including the 1x1-conv -> linear reshape of the attention weights) without touching the real tensors.
    """
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    names = list(vae_state_dict)
    probes = {
        name: torch.tensor(float(index), dtype=torch.float64).reshape([1] * vae_state_dict[name].ndim)
        for index, name in enumerate(names)
    }
    probed = convert_ldm_vae_checkpoint(probes, _converter_layout(num_levels))
    return {
        new_name: names[int(value.reshape(-1)[0].item())] for new_name, value in probed.items() if value is not None
    }


def convert_vae_state_dict(vae_state_dict: Mapping[str, torch.Tensor], num_levels: int) -> Dict[str, torch.Tensor]:
    """CompVis VAE names -> diffusers ``AutoencoderKL`` names, with diffusers' ``convert_ldm_vae_checkpoint``."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    converted = convert_ldm_vae_checkpoint(dict(vae_state_dict), _converter_layout(num_levels))
    return {key: value for key, value in converted.items() if value is not None}


# ------------------------------------------------------------------------------------------------------------------
# checks
def check_names_and_shapes(
    name_map: Mapping[str, str], originals: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> None:
    """Raises a ValueError naming the first original tensor that is left over, missing, or of the wrong shape/dtype.

    Args:
        name_map: ``{RadioVAE name: original name}`` from `map_original_names`.
        originals: the original VAE tensors by their CompVis names.
        expected: the target model's state dict (shapes only are read; meta tensors are fine).
    """
    used = Counter(name_map.values())
    leftover = [name for name in originals if name not in used]
    if leftover:
        raise ModelFileError(
            f"{len(leftover)} original tensor(s) have no place in a {TARGET_PRESET} RadioVAE, first {leftover[0]!r} "
            f"{tuple(originals[leftover[0]].shape)}: the checkpoint's architecture differs (more blocks or levels, "
            "attention at other resolutions?)."
        )
    duplicated = [name for name, count in used.items() if count > 1]
    if duplicated:
        raise ModelFileError(
            f"Original tensor {duplicated[0]!r} was mapped to several RadioVAE names; the conversion is ambiguous."
        )
    unexpected = [key for key in name_map if key not in expected]
    if unexpected:
        raise ModelFileError(
            f"Original tensor {name_map[unexpected[0]]!r} became {unexpected[0]!r}, "
            f"which a {TARGET_PRESET} RadioVAE does not have."
        )
    missing = [key for key in expected if key not in name_map]
    if missing:
        raise ModelFileError(
            f"The checkpoint lacks {len(missing)} tensor(s) of a {TARGET_PRESET} RadioVAE, first {missing[0]!r} "
            f"{tuple(expected[missing[0]].shape)}: the checkpoint's architecture differs (fewer blocks or levels?)."
        )
    order = {name: index for index, name in enumerate(originals)}
    for key in sorted(name_map, key=lambda new_name: order[name_map[new_name]]):
        original = originals[name_map[key]]
        target_shape = tuple(expected[key].shape)
        # Attention projections are 1x1 convs in the original and linear layers here: trailing 1s may go.
        compatible = tuple(original.shape[: len(target_shape)]) == target_shape and all(
            size == 1 for size in original.shape[len(target_shape):]
        )
        if not compatible:
            raise ModelFileError(
                f"Shape mismatch: {name_map[key]!r} has shape {tuple(original.shape)} but {key!r} of a {TARGET_PRESET} "
                f"RadioVAE has shape {target_shape} (different channels, latent size or input channels?)."
            )
        if not original.is_floating_point():
            raise ModelFileError(f"{name_map[key]!r} holds {original.dtype} values; expected floating-point weights.")


# ------------------------------------------------------------------------------------------------------------------
# building the models
_ENCODER_LEVEL = re.compile(r"^encoder\.down\.(\d+)\.")
_FIRST_LEVEL_RESNET = re.compile(r"^encoder\.down\.0\.block\.(\d+)\.")


def original_layout(vae_state_dict: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """The RadioVAE config values that an original first stage's tensors fix, i.e. its ddconfig's ``ch``,
    ``ch_mult``, ``num_res_blocks``, ``in_channels``, ``out_ch`` and ``z_channels``/``embed_dim``.

    RadioDiff's own configs all use ch 128, ch_mult (1, 2, 4), 2 resnets, 1 channel in and out, z 3 (the
    ``radiodiff-ldm-f4`` preset); reading the numbers from the tensors also brings back a file that
    :func:`export_original_checkpoint` wrote from that preset with other channel counts or latent channels. The
    levels and channels come from the encoder's first resnet per level, the latent from ``post_quant_conv``; every
    other tensor is then checked against the model these numbers build.
    """

    def size(name: str, axis: int) -> int:
        tensor = vae_state_dict.get(name)
        if tensor is None or tensor.ndim <= axis:
            raise ModelFileError(
                f"The checkpoint lacks the weight {name!r}, which every original first stage has, so its layout "
                f"cannot be read (found {len(vae_state_dict)} autoencoder tensors, e.g. {sorted(vae_state_dict)[:2]})."
            )
        return int(tensor.shape[axis])

    levels = 1 + max((int(match[1]) for key in vae_state_dict if (match := _ENCODER_LEVEL.match(key))), default=-1)
    resnets = len({match[1] for key in vae_state_dict if (match := _FIRST_LEVEL_RESNET.match(key))})
    return {
        "block_out_channels": tuple(size(f"encoder.down.{level}.block.0.conv1.weight", 0) for level in range(levels)),
        "layers_per_block": resnets,
        "decoder_layers_per_block": resnets + 1,
        "num_downsamples": levels - 1,
        "in_channels": size("encoder.conv_in.weight", 1),
        "out_channels": size("decoder.conv_out.weight", 0),
        "latent_channels": size("post_quant_conv.weight", 0),
    }


def build_converted_vae(
    vae_state_dict: Mapping[str, torch.Tensor],
    sample_size: int = 320,
    scaling_factor: float = CONVERTED_SCALING_FACTOR,
) -> Tuple[Any, Dict[str, str]]:
    """A ``radiodiff-ldm-f4`` RadioVAE holding the original weights in float32, with the channel counts, resnets
    per level and latent channels of the checkpoint (:func:`original_layout`).

    Returns ``(model, name_map)``. Names and shapes are checked before any tensor is converted.
    """
    from ..models.autoencoder_radio import RadioVAE

    layout = original_layout(vae_state_dict)
    try:
        # Built on the meta device: no random initialisation of ~55M parameters that the checkpoint replaces anyway.
        with torch.device("meta"):
            model = RadioVAE.from_preset(
                TARGET_PRESET, scaling_factor=scaling_factor, sample_size=sample_size, **layout
            )
    except ValueError as error:
        described = ", ".join(f"{key}={value}" for key, value in layout.items())
        raise ModelFileError(
            f"The checkpoint's layout ({described}) builds no {TARGET_PRESET} RadioVAE: {error}"
        ) from None
    expected = model.state_dict()
    num_levels = len(model.config.block_out_channels)
    name_map = map_original_names(vae_state_dict, num_levels)
    check_names_and_shapes(name_map, vae_state_dict, expected)
    converted = convert_vae_state_dict(vae_state_dict, num_levels)
    # Copies: the model must not share storage with (and later train into) the caller's checkpoint tensors.
    weights = {
        key: value.detach().to(dtype=torch.float32, copy=True).reshape(expected[key].shape).contiguous()
        for key, value in converted.items()
    }
    model.load_state_dict(weights, strict=True, assign=True)
    still_meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if still_meta:
        raise ModelFileError(f"RadioVAE tensors were not filled by the checkpoint: {still_meta[:3]}.")
    return model.eval(), name_map


def build_discriminator(state_dict: Mapping[str, torch.Tensor]) -> Any:
    """An ``NLayerDiscriminator`` with the original discriminator's weights; its layout is read from the tensors."""
    from ..models.discriminator import NLayerDiscriminator

    first = state_dict.get("main.0.weight")
    if first is None or first.ndim != 4:
        raise ModelFileError(
            f"The discriminator weights lack {DISCRIMINATOR_PREFIX}main.0.weight (a 4-d conv weight); "
            f"found {sorted(state_dict)[:3]}."
        )
    conv_count = sum(1 for key, value in state_dict.items() if key.endswith(".weight") and value.ndim == 4)
    config = dict(
        in_channels=int(first.shape[1]),
        base_channels=int(first.shape[0]),
        num_layers=conv_count - 2,  # first conv, num_layers normalised convs, output conv
        use_actnorm=any(key.endswith(".loc") for key in state_dict),
    )
    if config["num_layers"] < 1:
        raise ModelFileError(f"The discriminator weights hold {conv_count} convs; a PatchGAN has at least 3.")
    discriminator = NLayerDiscriminator(**config)
    expected = discriminator.state_dict()
    _check_same_tensors(state_dict, expected, DISCRIMINATOR_PREFIX, f"NLayerDiscriminator({config})")
    discriminator.load_state_dict(
        {key: value.to(expected[key].dtype) for key, value in state_dict.items()}, strict=True
    )
    return discriminator


def _check_same_tensors(
    found: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], prefix: str, what: str
) -> None:
    for key in found:
        if key not in expected:
            raise ModelFileError(f"{prefix}{key} has no place in {what}.")
    for key, tensor in expected.items():
        if key not in found:
            raise ModelFileError(f"{prefix}{key} {tuple(tensor.shape)} is missing for {what}.")
        if tuple(found[key].shape) != tuple(tensor.shape):
            raise ModelFileError(
                f"Shape mismatch: {prefix}{key} has shape {tuple(found[key].shape)} "
                f"but {what} expects {tuple(tensor.shape)}."
            )


# ------------------------------------------------------------------------------------------------------------------
# the whole conversion
def convert_original_checkpoint(
    checkpoint: Union[PathLike, Mapping[str, Any]],
    output_dir: Optional[PathLike] = None,
    *,
    use_ema: bool = False,
    include_training_state: bool = True,
    trust_pickle: bool = False,
    sample_size: int = 320,
    scaling_factor: float = CONVERTED_SCALING_FACTOR,
    overwrite: bool = False,
) -> ConversionResult:
    """Converts an original RadioDiff VAE checkpoint into a ``radiodiff-ldm-f4`` RadioVAE.

    Args:
        checkpoint (`str`, `os.PathLike` or `dict`): the file (``.ckpt``/``.pt``/``.pth``/``.safetensors``) or an
            already loaded checkpoint: the trainer's dict, ``{"state_dict": ...}`` or a bare state dict.
        output_dir (`str` or `os.PathLike`, *optional*): where to write the RadioVAE folder; nothing is written when
            None. It must not exist (or be empty) unless ``overwrite``; it appears complete or not at all.
        use_ema (`bool`, defaults to `False`): take the trainer's EMA weights (``ema`` / ``ema_model.*``) instead of
            ``model``. The original ``init_from_ckpt`` silently prefers EMA; here the choice is explicit and recorded.
        include_training_state (`bool`, defaults to `True`): also convert ``loss.discriminator.*`` and
            ``loss.logvar`` (written to ``discriminator.safetensors`` and ``logvar.safetensors``) to continue
            training.
        trust_pickle (`bool`, defaults to `False`): allow ``torch.load(weights_only=False)`` for files that
            ``weights_only=True`` refuses. Only for files from a trusted source.
        sample_size (`int`, defaults to 320): the training resolution recorded in the config.
        scaling_factor (`float`, defaults to 0.3): the latent scale recorded in the config (RadioDiff's diffusion
            configs start from 0.3; pass the ``scale_factor`` your second stage used).
        overwrite (`bool`, defaults to `False`): replace an existing non-empty ``output_dir``.

    Returns:
        `ConversionResult`.
    """
    if output_dir is not None:
        output_dir = check_directory_target(output_dir, overwrite, what="--output_dir")
        if not output_dir.resolve().parent.is_dir():
            raise InputNotFoundError(f"The parent folder of --output_dir {output_dir} does not exist.")

    if isinstance(checkpoint, Mapping):
        loaded, weights_only, source_name = checkpoint, True, "<in-memory checkpoint>"
    else:
        loaded, weights_only = load_original_checkpoint(checkpoint, trust_pickle=trust_pickle)
        source_name = Path(checkpoint).name
    state_dict, source_format, weights, step, skipped = select_weights(loaded, use_ema=use_ema)
    vae_weights, discriminator_weights, logvar, loss_skipped = split_state_dict(state_dict)
    skipped.update(loss_skipped)
    if include_training_state and logvar is not None and logvar.numel() != 1:
        raise ModelFileError(f"{LOGVAR_KEY} has shape {tuple(logvar.shape)}; expected a single value.")

    model, name_map = build_converted_vae(vae_weights, sample_size=sample_size, scaling_factor=scaling_factor)

    discriminator = None
    if include_training_state:
        discriminator = build_discriminator(discriminator_weights) if discriminator_weights else None
        if logvar is not None:
            logvar = logvar.detach().to(torch.float32).reshape(())
    else:
        if discriminator_weights:
            skipped[DISCRIMINATOR_PREFIX] = len(discriminator_weights)
        if logvar is not None:
            skipped[LOGVAR_KEY] = 1
        logvar = None

    result = ConversionResult(
        model=model,
        source_format=source_format,
        weights=weights,
        step=step,
        loaded_with_weights_only=weights_only,
        name_map=name_map,
        skipped=skipped,
        discriminator=discriminator,
        logvar=logvar,
    )
    logger.info(
        "Converted %d tensors from %s (%s, weights: %s%s); skipped %s.",
        len(name_map),
        source_name,
        source_format,
        weights,
        f", step {step}" if step is not None else "",
        skipped or "nothing",
    )
    if output_dir is not None:
        _write_folder(result, output_dir, source_name, overwrite)
        result.output_dir = output_dir
    return result


def _write_folder(result: ConversionResult, output_dir: Path, source_name: str, overwrite: bool) -> None:
    """Writes everything into a staging folder that becomes ``output_dir`` in one rename, with the permissions the
    umask gives (as every other command's output)."""
    from safetensors.torch import save_file

    from ..hub.model_card import save_model_card

    with atomic_directory(output_dir, overwrite=overwrite) as staging:
        result.model.save_pretrained(staging, safe_serialization=True)
        if result.discriminator is not None:
            config = {key: result.discriminator.config[key] for key in DISCRIMINATOR_CONFIG_KEYS}
            state = {key: value.contiguous() for key, value in result.discriminator.state_dict().items()}
            metadata = {"config": json.dumps(config), "format": "pt"}
            save_file(state, str(staging / DISCRIMINATOR_FILENAME), metadata=metadata)
        if result.logvar is not None:
            save_file({"logvar": result.logvar.contiguous()}, str(staging / LOGVAR_FILENAME))
        save_model_card(
            staging,
            result.model,
            model_name=f"RadioDiff VAE converted from {source_name}",
            description=describe(result, source_name),
        )


def describe(result: ConversionResult, source_name: str) -> str:
    """One paragraph for the model card and the command line: where the weights came from."""
    parts = [
        f"Converted from the original RadioDiff checkpoint `{source_name}` ({result.source_format} format, weights "
        f"taken from `{result.weights}`{f', training step {result.step}' if result.step is not None else ''}) by "
        f"`radiodiff-vae convert-original`: {len(result.name_map)} tensors, loaded strictly.",
    ]
    if result.discriminator is not None or result.logvar is not None:
        kept = []
        if result.discriminator is not None:
            kept.append("the discriminator (`discriminator.safetensors`)")
        if result.logvar is not None:
            kept.append("the loss log-variance (`logvar.safetensors`)")
        parts.append(f"Kept for continued training: {' and '.join(kept)}.")
    if result.skipped:
        left_out = ", ".join(f"`{prefix}` ({count})" for prefix, count in sorted(result.skipped.items()))
        parts.append(f"Left out: {left_out}.")
    if not result.loaded_with_weights_only:
        parts.append("The file was read with `torch.load(weights_only=False)` (`--trust_pickle`).")
    return " ".join(parts)


def load_training_state(criterion: Any, folder: PathLike) -> None:
    """Loads a converted ``discriminator.safetensors`` and ``logvar.safetensors`` into a ``RadioVAELoss``, strictly.

    ``criterion`` needs ``.discriminator`` (an ``NLayerDiscriminator``) and ``.logvar`` (a 0-dim parameter). Both
    files are read and checked before anything changes, so a discriminator whose layout differs from the
    criterion's raises a ValueError (naming both layouts) and leaves the criterion untouched.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = Path(folder)
    discriminator_path = folder / DISCRIMINATOR_FILENAME
    logvar_path = folder / LOGVAR_FILENAME
    if not discriminator_path.is_file() and not logvar_path.is_file():
        raise InputNotFoundError(
            f"{folder} holds neither {DISCRIMINATOR_FILENAME} nor {LOGVAR_FILENAME}: convert with the training state "
            "(include_training_state=True, i.e. without --no_training_state)."
        )
    discriminator_state = None
    if discriminator_path.is_file():
        with safe_open(str(discriminator_path), framework="pt") as handle:
            theirs = json.loads((handle.metadata() or {}).get("config", "{}"))
        ours = {key: criterion.discriminator.config[key] for key in DISCRIMINATOR_CONFIG_KEYS}
        if any(theirs.get(key) != ours[key] for key in DISCRIMINATOR_CONFIG_KEYS):
            raise ModelFileError(
                f"{discriminator_path} holds a discriminator with {_describe_config(theirs)} but the loss has "
                f"{_describe_config(ours)}; build RadioVAELoss with the same disc_* settings."
            )
        discriminator_state = load_file(str(discriminator_path))
        _check_same_tensors(discriminator_state, criterion.discriminator.state_dict(), "", "the loss' discriminator")
    logvar = None
    if logvar_path.is_file():
        logvar = load_file(str(logvar_path)).get("logvar")
        if logvar is None or logvar.numel() != 1:
            raise ModelFileError(f"{logvar_path} must hold one value under 'logvar'.")
    if discriminator_state is not None:
        criterion.discriminator.load_state_dict(discriminator_state, strict=True)
    if logvar is not None:
        with torch.no_grad():
            criterion.logvar.copy_(logvar.reshape(criterion.logvar.shape))


def _describe_config(config: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={config.get(key)}" for key in DISCRIMINATOR_CONFIG_KEYS)


# ------------------------------------------------------------------------------------------------------------------
# the other way: a RadioVAE as a checkpoint of the original code
# torch.load reads these; the original code never reads safetensors.
ORIGINAL_CHECKPOINT_SUFFIXES = (".pt", ".ckpt", ".pth")
# LPIPSWithDiscriminator builds its NLayerDiscriminator without passing ndf, so the first conv has 64 filters.
ORIGINAL_DISCRIMINATOR_BASE_CHANNELS = 64
# The loss settings of RadioDiff's configs (configs/first_radio.yaml): its AutoencoderKL needs a lossconfig to be
# built at all, even where (the second stage) the loss is never called.
ORIGINAL_LOSS_CONFIG = {"disc_start": 50001, "kl_weight": 1e-6, "disc_weight": 0.5}
# Values a RadioVAE config must hold for the original code to build the same network: (value, what it means there).
_ORIGINAL_FIXED_VALUES = {
    "upsample_type": ("nearest", "its Upsample is nearest x2 then a 3x3 conv"),
    "upsample_position": ("last", "it upsamples after a level's resnets"),
    "mid_block_add_attention": (True, "each mid block has one self-attention"),
    "norm_num_groups": (32, "its Normalize is GroupNorm(32)"),
    "act_fn": ("silu", "its nonlinearity is swish"),
    "use_quant_conv": (True, "it always has quant_conv"),
    "use_post_quant_conv": (True, "it always has post_quant_conv"),
}


@dataclass
class ExportResult:
    """What ``export_original_checkpoint`` wrote.

    Attributes:
        path (`Path`): the checkpoint, ``torch.save({"model": state_dict})``.
        config_path (`Path`): the YAML snippet for RadioDiff's configs beside it.
        state_dict (`dict`): the original names -> float32 tensors, in the original model's order.
        first_stage (`dict`): ``{"embed_dim", "ddconfig", "lossconfig"}`` as RadioDiff's configs spell them.
        config_text (`str`): the content of ``config_path``.
        training_state (`bool`): whether ``loss.logvar`` / ``loss.discriminator.*`` are in the file.
    """

    path: Path
    config_path: Path
    state_dict: Dict[str, torch.Tensor]
    first_stage: Dict[str, Any]
    config_text: str
    training_state: bool


def original_first_stage_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """``{"embed_dim", "ddconfig"}`` of the original ``AutoencoderKL(ddconfig, lossconfig, embed_dim)`` that builds
    the network of a RadioVAE ``config``.

    The original code (CompVis latent diffusion) builds: a 3x3 ``conv_in`` to ``ch`` channels; level ``i`` with
    ``ch * ch_mult[i]`` channels, ``num_res_blocks`` resnets in the encoder and one more in the decoder; a stride-2
    conv after every encoder level but the last, nearest x2 + 3x3 conv after every decoder level but the last; no
    attention in the levels (``attn_resolutions: []`` here, since RadioVAE has none there), one single-head
    self-attention in each mid block; GroupNorm(32) and swish; 1x1 ``quant_conv`` / ``post_quant_conv`` around an
    ``embed_dim``-channel latent, with ``z_channels`` = ``embed_dim`` (RadioVAE has one latent width). So any
    ``in_channels``, ``out_channels``, ``latent_channels``, resnets per level and channel counts that are multiples
    of the first one are expressible; every other value is refused with a ModelFileError naming each value that
    stands in the way and what the original needs.
    """
    channels = tuple(int(value) for value in config["block_out_channels"])
    levels = len(channels)
    required = dict(_ORIGINAL_FIXED_VALUES)
    required["num_downsamples"] = (levels - 1, "it downsamples after every level but the last")
    required["decoder_layers_per_block"] = (
        int(config["layers_per_block"]) + 1,
        "its decoder levels have num_res_blocks + 1 resnets",
    )
    mismatches = [
        f"{key}={config[key]!r} (expected {value!r}: {reason})"
        for key, (value, reason) in required.items()
        if config[key] != value
    ]
    if any(value % channels[0] for value in channels):
        mismatches.append(
            f"block_out_channels={list(channels)} (expected multiples of the first entry: its ch_mult are integers)"
        )
    if mismatches:
        raise ModelFileError(
            "The original RadioDiff AutoencoderKL cannot build this RadioVAE: " + "; ".join(mismatches) + f". The "
            f"{TARGET_PRESET} layout exports, also with other channel counts (multiples of the first), resnets per "
            "level, latent, input or output channels."
        )
    sample_size = int(config["sample_size"])
    ddconfig = {
        "double_z": True,
        "z_channels": int(config["latent_channels"]),
        "resolution": [sample_size, sample_size],
        "in_channels": int(config["in_channels"]),
        "out_ch": int(config["out_channels"]),
        "ch": channels[0],
        "ch_mult": [value // channels[0] for value in channels],
        "num_res_blocks": int(config["layers_per_block"]),
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    return {"embed_dim": int(config["latent_channels"]), "ddconfig": ddconfig}


def original_state_shapes(first_stage: Mapping[str, Any]) -> Dict[str, Tuple[int, ...]]:
    """Names and shapes of the network tensors of the original ``AutoencoderKL`` built from ``first_stage``
    (``{"embed_dim", "ddconfig"}``), in the order of its state dict (the ``loss.*`` modules, which the model object
    registers between ``decoder`` and ``quant_conv``, are not included)."""
    ddconfig, embed_dim = first_stage["ddconfig"], int(first_stage["embed_dim"])
    ch, ch_mult, num_res_blocks = ddconfig["ch"], list(ddconfig["ch_mult"]), ddconfig["num_res_blocks"]
    z_channels = ddconfig["z_channels"]
    shapes: Dict[str, Tuple[int, ...]] = {}

    def conv(name: str, in_channels: int, out_channels: int, kernel: int) -> None:
        shapes[f"{name}.weight"] = (out_channels, in_channels, kernel, kernel)
        shapes[f"{name}.bias"] = (out_channels,)

    def norm(name: str, channels: int) -> None:
        shapes[f"{name}.weight"] = shapes[f"{name}.bias"] = (channels,)

    def resnet(name: str, in_channels: int, out_channels: int) -> None:
        norm(f"{name}.norm1", in_channels)
        conv(f"{name}.conv1", in_channels, out_channels, 3)
        norm(f"{name}.norm2", out_channels)
        conv(f"{name}.conv2", out_channels, out_channels, 3)
        if in_channels != out_channels:
            conv(f"{name}.nin_shortcut", in_channels, out_channels, 1)

    def mid(name: str, channels: int) -> None:
        resnet(f"{name}.block_1", channels, channels)
        norm(f"{name}.attn_1.norm", channels)
        for projection in ("q", "k", "v", "proj_out"):  # 1x1 convs in the original, linear layers in diffusers
            conv(f"{name}.attn_1.{projection}", channels, channels, 1)
        resnet(f"{name}.block_2", channels, channels)

    conv("encoder.conv_in", ddconfig["in_channels"], ch, 3)
    block_in = ch
    for level, multiplier in enumerate(ch_mult):
        for index in range(num_res_blocks):
            resnet(f"encoder.down.{level}.block.{index}", block_in, ch * multiplier)
            block_in = ch * multiplier
        if level != len(ch_mult) - 1:
            conv(f"encoder.down.{level}.downsample.conv", block_in, block_in, 3)
    mid("encoder.mid", block_in)
    norm("encoder.norm_out", block_in)
    conv("encoder.conv_out", block_in, 2 * z_channels, 3)

    last = len(ch_mult) - 1
    conv("decoder.conv_in", z_channels, ch * ch_mult[last], 3)
    mid("decoder.mid", ch * ch_mult[last])
    # The original builds the levels from the latent up but inserts each at the front of `up`, so its state dict
    # lists up.0 (full resolution) first; a level's first resnet takes the channels of the level below it.
    for level in range(len(ch_mult)):
        block_in = ch * ch_mult[min(level + 1, last)]
        for index in range(num_res_blocks + 1):
            resnet(f"decoder.up.{level}.block.{index}", block_in, ch * ch_mult[level])
            block_in = ch * ch_mult[level]
        if level != 0:
            conv(f"decoder.up.{level}.upsample.conv", block_in, block_in, 3)
    norm("decoder.norm_out", ch * ch_mult[0])
    conv("decoder.conv_out", ch * ch_mult[0], ddconfig["out_ch"], 3)

    conv("quant_conv", 2 * z_channels, 2 * embed_dim, 1)
    conv("post_quant_conv", embed_dim, z_channels, 1)
    return shapes


def to_original_state_dict(
    model: Any, discriminator: Any = None, logvar: Optional[torch.Tensor] = None
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """A RadioVAE's weights under the original names and shapes: ``(state_dict, first_stage)``.

    The inverse of :func:`build_converted_vae`: the names come from the same diffusers converter run on probes of
    the original layout, attention projections become 1x1 conv weights again, and ``NearestConvUpsample2D``'s
    ``upsamplers.0.conv`` (a plain 3x3 conv weight, the computation regrouped) is the original ``upsample.conv``.
    Every tensor is a float32 CPU copy. ``discriminator`` (an ``NLayerDiscriminator``) and ``logvar`` (one value)
    add ``loss.discriminator.*`` and ``loss.logvar``, which the original model object holds in its ``loss``
    module; they go between ``decoder.*`` and ``quant_conv.*`` as in its state dict.

    Raises:
        ModelFileError: a layout the original code cannot build (:func:`original_first_stage_config`), or a
            discriminator it cannot hold (another first-conv width than its 64 filters).
    """
    first_stage = original_first_stage_config(model.config)
    shapes = original_state_shapes(first_stage)
    loss_state = _original_loss_state(discriminator, logvar)
    originals = {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}
    ours = model.state_dict()
    name_map = map_original_names(originals, len(first_stage["ddconfig"]["ch_mult"]))
    # Every RadioVAE tensor must have exactly one original place with a compatible shape; a failure here means the
    # layout check above and the network disagree.
    check_names_and_shapes(name_map, originals, ours)
    ours_by_original = {original: name for name, original in name_map.items()}

    state: Dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        if name.startswith("quant_conv."):
            state.update(loss_state)
            loss_state = {}
        state[name] = _float32_copy(ours[ours_by_original[name]]).reshape(shape)
    return state, first_stage


def _float32_copy(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach()
    if not tensor.is_meta:
        tensor = tensor.to(device="cpu")
    return tensor.to(dtype=torch.float32, copy=True).contiguous()


def _original_loss_state(discriminator: Any, logvar: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
    state: Dict[str, torch.Tensor] = {}
    if logvar is not None:
        if logvar.numel() != 1:
            raise InvalidArgumentError(f"logvar must hold one value, got shape {tuple(logvar.shape)}.")
        state[LOGVAR_KEY] = _float32_copy(logvar).reshape(())
    if discriminator is not None:
        base_channels = discriminator.config["base_channels"]
        if base_channels != ORIGINAL_DISCRIMINATOR_BASE_CHANNELS:
            raise ModelFileError(
                f"The discriminator has base_channels={base_channels}, but the original loss builds its "
                f"NLayerDiscriminator with {ORIGINAL_DISCRIMINATOR_BASE_CHANNELS} filters; leave the training state "
                "out (--no_training_state)."
            )
        for key, value in discriminator.state_dict().items():
            # BatchNorm's num_batches_tracked stays int64, as in the original; everything else float32.
            copied = _float32_copy(value) if value.is_floating_point() else value.detach().to("cpu", copy=True)
            state[f"{DISCRIMINATOR_PREFIX}{key}"] = copied
    return state


def read_training_state(folder: PathLike) -> Tuple[Any, Optional[torch.Tensor]]:
    """``(discriminator, logvar)`` from the ``discriminator.safetensors`` / ``logvar.safetensors`` that
    ``convert-original`` writes beside a RadioVAE; None for a file that is not there."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    loaded = {}
    for filename in (DISCRIMINATOR_FILENAME, LOGVAR_FILENAME):
        path = folder / filename
        if path.is_file():
            try:
                loaded[filename] = load_file(str(path))
            except SafetensorError as error:
                raise ModelFileError(f"{path} is not a readable safetensors file ({error}).") from None
    discriminator = None
    if DISCRIMINATOR_FILENAME in loaded:
        discriminator = build_discriminator(loaded[DISCRIMINATOR_FILENAME])
    logvar = None
    if LOGVAR_FILENAME in loaded:
        logvar = loaded[LOGVAR_FILENAME].get("logvar")
        if logvar is None or logvar.numel() != 1:
            raise ModelFileError(f"{folder / LOGVAR_FILENAME} must hold one value under 'logvar'.")
    return discriminator, logvar


def default_config_path(output: PathLike) -> Path:
    """Where the YAML snippet goes by default: beside the checkpoint, ``model.pt`` -> ``model.yaml``."""
    return Path(output).with_suffix(".yaml")


def check_export_targets(output: PathLike, config_output: PathLike, overwrite: bool = False) -> Tuple[Path, Path]:
    """Raises before any work when the checkpoint or the YAML snippet cannot be written where asked."""
    output, config_output = Path(output), Path(config_output)
    if output.suffix not in ORIGINAL_CHECKPOINT_SUFFIXES:
        raise InvalidArgumentError(
            f"--output {output}: expected a {'/'.join(ORIGINAL_CHECKPOINT_SUFFIXES)} file (the original code reads "
            f"it with torch.load), got {output.suffix or 'no suffix'!r}."
        )
    if output.resolve() == config_output.resolve():
        raise InvalidArgumentError(f"--config_output {config_output} is the checkpoint itself; pick another file.")
    for flag, path in (("--output", output), ("--config_output", config_output)):
        if path.is_dir():
            raise InvalidArgumentError(f"{flag} {path} is a folder; expected the path of a file to write.")
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{flag} {path} exists; pass --overwrite (overwrite=True) to replace it.")
        check_output_folder(str(path.parent), f"the folder of {flag}")
    return output, config_output


def export_original_checkpoint(
    model: Any,
    output: PathLike,
    *,
    discriminator: Any = None,
    logvar: Optional[torch.Tensor] = None,
    config_output: Optional[PathLike] = None,
    overwrite: bool = False,
    source_name: Optional[str] = None,
) -> ExportResult:
    """Writes a ``radiodiff-ldm-f4`` RadioVAE as a checkpoint of the original RadioDiff first stage.

    The file is ``torch.save({"model": state_dict})``: what the original ``AutoencoderKL.init_from_ckpt`` reads
    (it takes ``ema`` first when a file has one, else ``model``; this file has no ``ema``) and what
    ``convert_original_checkpoint`` turns back into the same weights, bit for bit. ``state_dict`` holds exactly the
    tensors of the original network (``encoder.*``, ``decoder.*``, ``quant_conv.*``, ``post_quant_conv.*``: 204 for
    the full preset) and, when given, ``loss.logvar`` and ``loss.discriminator.*``. The other ``loss*`` entries of
    the original model object (LPIPS, which it loads from its own files, and the unused ``loss_pinn*`` copies) are
    not written: its ``strict=False`` load reports them as missing and keeps what its constructor built.

    Args:
        model (`RadioVAE`): a layout the original can build (see :func:`original_first_stage_config`).
        output (`str` or `os.PathLike`): the ``.pt``/``.ckpt``/``.pth`` file to write, atomically.
        discriminator (`NLayerDiscriminator`, *optional*), logvar (`torch.Tensor`, *optional*): the loss' training
            state, e.g. from :func:`read_training_state` or a :class:`ConversionResult`.
        config_output (`str` or `os.PathLike`, *optional*): the YAML snippet for RadioDiff's configs; defaults to
            ``output`` with the suffix ``.yaml``.
        overwrite (`bool`, defaults to `False`): replace existing files.
        source_name (`str`, *optional*): where the model came from, for the snippet's header.

    Returns:
        `ExportResult`.
    """
    config_output = default_config_path(output) if config_output is None else config_output
    output, config_output = check_export_targets(output, config_output, overwrite)
    state, first_stage = to_original_state_dict(model, discriminator, logvar)  # refuses a layout before writing
    first_stage["lossconfig"] = _original_loss_config(model, discriminator)
    config_text = original_config_yaml(
        first_stage,
        checkpoint_path=str(output),
        scaling_factor=float(model.config.scaling_factor),
        shift_factor=model.config.get("shift_factor"),
        source_name=source_name,
    )
    with atomic_path(output) as temporary:
        torch.save({"model": state}, temporary)
    atomic_write_text(config_output, config_text)
    logger.info("Wrote %d tensors to %s and the first-stage config to %s.", len(state), output, config_output)
    return ExportResult(
        path=output,
        config_path=config_output,
        state_dict=state,
        first_stage=first_stage,
        config_text=config_text,
        training_state=discriminator is not None or logvar is not None,
    )


def _original_loss_config(model: Any, discriminator: Any) -> Dict[str, Any]:
    lossconfig: Dict[str, Any] = dict(ORIGINAL_LOSS_CONFIG)
    if discriminator is None:
        lossconfig["disc_in_channels"] = int(model.config.out_channels)
    else:
        lossconfig["disc_in_channels"] = int(discriminator.config["in_channels"])
        lossconfig["disc_num_layers"] = int(discriminator.config["num_layers"])
        lossconfig["use_actnorm"] = bool(discriminator.config["use_actnorm"])
    return lossconfig


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        # PyYAML reads 1e-06 as a string: write floats with a decimal point and no exponent.
        text = repr(value)
        return text if "e" not in text.lower() else f"{value:.12f}".rstrip("0")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_scalar(item) for item in value) + "]"
    return str(value)


def original_config_yaml(
    first_stage: Mapping[str, Any],
    checkpoint_path: str,
    scaling_factor: float,
    shift_factor: Optional[float] = None,
    source_name: Optional[str] = None,
) -> str:
    """The ``model:`` entries of RadioDiff's second-stage configs (``configs/radio_train.yaml``,
    ``radio_sample.yaml``) that follow from the exported VAE: the latent scale and the ``first_stage`` block."""
    ddconfig = first_stage["ddconfig"]
    latent_size = [size // 2 ** (len(ddconfig["ch_mult"]) - 1) for size in ddconfig["resolution"]]
    measured = scaling_factor != 1.0
    lines = [
        f"# RadioDiff config entries for the VAE exported by `radiodiff-vae export-original`"
        + (f" from {source_name}." if source_name else "."),
        "# Merge them into `model:` of configs/radio_train.yaml or radio_sample.yaml (the first_stage block also fits",
        "# configs/first_radio.yaml, one level up). The U-Net of the second stage must take this latent:",
        f"#   unet.channels: {first_stage['embed_dim']}, and unet.input_size / cond_feature_size: {latent_size} for "
        f"image_size {ddconfig['resolution']} (the resolution divided by {2 ** (len(ddconfig['ch_mult']) - 1)}).",
    ]
    if shift_factor is not None:
        lines.append(
            f"# The RadioVAE's shift_factor {shift_factor} has no place here: the original scales latents, "
            "it never shifts them."
        )
    lines += [
        "model:",
        f"  scale_factor: {_yaml_scalar(float(scaling_factor))}"
        + ("  # the RadioVAE's scaling_factor" if measured else "  # 1.0: not measured by this package"),
        "  scale_by_std: True",
        f"  default_scale: {_yaml_scalar(measured)}"
        + (
            "  # True: use scale_factor as given"
            if measured
            else "  # False: the original sets scale_factor to 1/std of the first batch's latents"
        ),
        "  first_stage:",
        f"    embed_dim: {first_stage['embed_dim']}",
        "    lossconfig:",
        *(f"      {key}: {_yaml_scalar(value)}" for key, value in first_stage["lossconfig"].items()),
        "    ddconfig:",
        *(f"      {key}: {_yaml_scalar(value)}" for key, value in ddconfig.items()),
        f"    ckpt_path: {json.dumps(checkpoint_path)}  # as given to --output: relative paths are taken from where "
        "RadioDiff runs",
    ]
    return "\n".join(lines) + "\n"


def describe_export(result: ExportResult) -> str:
    """One line for the command line: what went into the file."""
    ddconfig = result.first_stage["ddconfig"]
    loss = sum(key.startswith("loss.") for key in result.state_dict)
    kept = f" and {loss} of its loss (loss.logvar, loss.discriminator.*)" if loss else ""
    return (
        f"Wrote {result.path}: {len(result.state_dict) - loss} tensors of the original RadioDiff AutoencoderKL's "
        f"network{kept} as {{'model': state_dict}} without an 'ema' entry (ch={ddconfig['ch']}, "
        f"ch_mult={ddconfig['ch_mult']}, num_res_blocks={ddconfig['num_res_blocks']}, "
        f"z_channels=embed_dim={result.first_stage['embed_dim']}, in_channels={ddconfig['in_channels']}, out_ch={ddconfig['out_ch']}); config entries: {result.config_path}"
    )
