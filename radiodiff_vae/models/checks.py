"""The checks of a RadioVAE's architecture and inputs: each stops with one line that names the value, what was
expected and what came, before any module is built or any compute runs. Loading is diffusers' own.

:func:`check_size_divisible` is the package's one rule for map sizes (the model, evaluation, the command lines and
the training script call it).
"""

import os
import sys
import warnings
from typing import Optional, Tuple

import torch

from ..errors import InvalidArgumentError

UPSAMPLE_TYPES = ("conv_transpose", "nearest")
UPSAMPLE_POSITIONS = ("first", "last")


def check_architecture(
    block_out_channels: Tuple[int, ...],
    num_downsamples: int,
    upsample_type: str,
    upsample_position: str,
    norm_num_groups: int,
    sample_size: int,
) -> None:
    """Raises ``InvalidArgumentError`` for a combination of config values that builds no network."""
    if isinstance(num_downsamples, bool) or not isinstance(num_downsamples, int):
        raise InvalidArgumentError(f"num_downsamples must be an integer, got {num_downsamples!r}.")
    if not 0 <= num_downsamples <= len(block_out_channels):
        raise InvalidArgumentError(
            f"num_downsamples must be between 0 and len(block_out_channels)={len(block_out_channels)}, "
            f"got {num_downsamples}."
        )
    if upsample_type not in UPSAMPLE_TYPES:
        raise InvalidArgumentError(f"upsample_type must be one of {UPSAMPLE_TYPES}, got {upsample_type!r}.")
    if upsample_position not in UPSAMPLE_POSITIONS:
        raise InvalidArgumentError(
            f"upsample_position must be one of {UPSAMPLE_POSITIONS}, got {upsample_position!r}."
        )
    bad = [channels for channels in block_out_channels if channels % norm_num_groups]
    if bad:
        raise InvalidArgumentError(
            f"Every entry of block_out_channels must be divisible by norm_num_groups={norm_num_groups}, got {bad}."
        )
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
        InvalidArgumentError: one line naming the size, the factor and what is expected.
    """
    sizes = (height,) if width is None else (height, width)
    if all(size > 0 and size % factor == 0 for size in sizes):
        return
    size = "x".join(str(size) for size in sizes)
    problem = "which has a zero side" if 0 in sizes else f"not divisible by {owner} downsampling factor {factor}"
    raise InvalidArgumentError(
        f"{what} is {size}, {problem}: height and width must be positive multiples of {factor}"
        + (f"; {remedy}" if remedy else "")
    )


def check_tensor(
    x: torch.Tensor, channels: int, factor: int, what: str, method: str, check_values: bool = True
) -> None:
    """Rejects anything `method` cannot turn into a meaningful result, before any compute."""
    if not isinstance(x, torch.Tensor):
        raise InvalidArgumentError(f"RadioVAE.{method} expected a torch.Tensor {what}, got {type(x).__name__}.")
    if x.ndim != 4:
        raise InvalidArgumentError(
            f"RadioVAE.{method} expected a 4-D {what} tensor (batch, {channels}, height, width), "
            f"got shape {tuple(x.shape)}."
        )
    if x.shape[1] != channels:
        raise InvalidArgumentError(
            f"RadioVAE.{method} expected a {what} with {channels} channel(s) (batch, {channels}, height, width), "
            f"got {x.shape[1]} channel(s) in shape {tuple(x.shape)}."
        )
    if x.shape[0] == 0:
        raise InvalidArgumentError(f"RadioVAE.{method} got an empty batch (shape {tuple(x.shape)}).")
    remedy = "crop or resize it (RadioMapSeer's 256x256 and the report's 320x320 both work)" if factor > 1 else ""
    check_size_divisible(x.shape[-2], x.shape[-1], factor, f"RadioVAE.{method}: the {what} size", remedy=remedy)
    if not torch.is_floating_point(x):
        raise InvalidArgumentError(f"RadioVAE.{method} expected a floating-point {what}, got dtype {x.dtype}.")
    # One device sync per call; skipped while torch.compile traces so that compiled graphs stay whole.
    if check_values and not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise InvalidArgumentError(f"RadioVAE.{method} got a {what} with {bad} non-finite value(s) (NaN or inf).")


# Maps enter in [-1, 1]; beyond this the input is almost surely unscaled (0..255 pixels, dB values).
INPUT_RANGE_LIMIT = 2.0


def _internal_folders() -> Tuple[str, ...]:
    """Folders of the frames between the user's call and the warning: this one (the model's methods), diffusers'
    (``apply_forward_hook`` wraps ``encode``) and torch's ``Module.__call__`` (``vae(x)`` -> ``forward`` ->
    ``encode``)."""
    modules = (sys.modules[__name__], sys.modules.get("diffusers"), sys.modules.get("torch.nn.modules.module"))
    return tuple(os.path.dirname(module.__file__) + os.sep for module in modules if module is not None)


def _caller_stacklevel() -> int:
    """The ``warnings.warn`` stacklevel, for a warning raised by the caller of this function, of the first frame
    outside the model, diffusers and torch's module machinery: the line of the user's code that passed the maps."""
    internal = _internal_folders()
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(internal):
        frame, level = frame.f_back, level + 1
    return level


def warn_if_not_model_range(x: torch.Tensor) -> None:
    if torch.compiler.is_compiling():
        return
    low, high = (float(value) for value in torch.aminmax(x.detach()))
    if low < -INPUT_RANGE_LIMIT or high > INPUT_RANGE_LIMIT:
        # Python's default warning filter shows this once per calling line, not once per batch.
        warnings.warn(
            f"RadioVAE.encode got maps with values in [{low:.4g}, {high:.4g}]; it expects [-1, 1] "
            "(radiodiff_vae.data.unit_to_model(pixels / 255) for 8-bit maps). The latents will be meaningless.",
            stacklevel=_caller_stacklevel(),
        )
