"""The city inputs of the construction pipelines: parsed into tensors and checked before any model work.

Buildings
    a torch tensor `(B, 1, H, W)`, `(B, H, W)` or `(H, W)`; a numpy array of the same shapes; a PIL image; or a list
    of images / arrays / tensors of one size (`(H, W)` or `(1, H, W)` each). Values must be binary: {0, 1} for any
    dtype (bool, integer, float), or {0, 255} for uint8 data and PIL images (RadioMapSeer's PNG files); 1 / 255 is a
    building. Anything else (grey levels of a resized mask, a 0..255 float image) is refused rather than thresholded.
Transmitters
    antenna images in the same forms (RadioMapSeer's ``png/antennas``): the one brightest pixel of each image is the
    transmitter; or pixel positions (row, col): a `(B, 2)` / `(2,)` tensor or array of integers, a ``(row, col)``
    tuple, or a list of them. A tensor or array whose last dimension is 2 and that is not the maps' size is read as
    positions.

One building map may go with several transmitters (it is repeated); any other batch mismatch is an error. Every
error is a :class:`~radiodiff_vae.errors.CityInputError`, one line naming what was expected and what came.
"""

import numbers
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import CityInputError

CityImages = Union[torch.Tensor, np.ndarray, Any, Sequence[Any]]  # Any: a PIL image
Transmitters = Union[CityImages, Sequence[Tuple[int, int]], Tuple[int, int]]


def _is_pil(value: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency of the package
        return False
    return isinstance(value, Image.Image)


def _pil_pixels(image: Any, what: str) -> np.ndarray:
    """An 8-bit PIL image as `(H, W)` uint8 ('1' and colour modes are converted to grey)."""
    if image.mode not in ("L", "1", "P", "RGB", "RGBA", "LA"):
        raise CityInputError(f"{what}: expected an 8-bit image (PIL mode L), got PIL mode {image.mode!r}")
    return np.asarray(image.convert("L") if image.mode != "L" else image, dtype=np.uint8)


def _to_tensor(value: Any, what: str) -> torch.Tensor:
    """A tensor of `value` (tensor, array, PIL image); uint8 stays uint8."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if _is_pil(value):
        return torch.from_numpy(_pil_pixels(value, what).copy())
    if isinstance(value, np.ndarray):
        if value.dtype == object or not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
            raise CityInputError(f"{what}: expected a numeric array, got dtype {value.dtype}")
        if np.iscomplexobj(value):
            raise CityInputError(f"{what}: expected real values, got dtype {value.dtype}")
        return torch.from_numpy(np.ascontiguousarray(value))
    raise CityInputError(
        f"{what}: expected a torch tensor, a numpy array, a PIL image or a list of them, got {type(value).__name__}"
    )


def _image_batch(value: CityImages, what: str) -> torch.Tensor:
    """`(B, H, W)` tensor of the raw values (dtype kept) of any accepted image form."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise CityInputError(f"{what}: expected at least one image, got an empty {type(value).__name__}")
        images = []
        for index, item in enumerate(value):
            image = _to_tensor(item, f"{what}[{index}]")
            if image.ndim == 3 and image.shape[0] == 1:
                image = image[0]
            if image.ndim != 2:
                raise CityInputError(
                    f"{what}[{index}]: expected an (H, W) or (1, H, W) image, got shape {tuple(image.shape)}"
                )
            if images and image.shape != images[0].shape:
                raise CityInputError(
                    f"{what}: expected images of one size, got {what}[{index}] {image.shape[0]}x{image.shape[1]} "
                    f"and {what}[0] {images[0].shape[0]}x{images[0].shape[1]}"
                )
            images.append(image)
        dtypes = {image.dtype for image in images}
        if len(dtypes) > 1:
            raise CityInputError(f"{what}: expected images of one dtype, got {sorted(map(str, dtypes))}")
        return torch.stack(images)
    tensor = _to_tensor(value, what)
    if tensor.ndim == 2:
        return tensor[None]
    if tensor.ndim == 3:
        return tensor
    if tensor.ndim == 4 and tensor.shape[1] == 1:
        return tensor[:, 0]
    raise CityInputError(f"{what}: expected shape (B, 1, H, W), (B, H, W) or (H, W), got {tuple(tensor.shape)}")


def _check_dtype(tensor: torch.Tensor, what: str) -> None:
    if tensor.is_complex() or not (tensor.is_floating_point() or tensor.dtype == torch.bool or _is_integer(tensor)):
        raise CityInputError(f"{what}: expected bool, integer or floating-point values, got dtype {tensor.dtype}")
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise CityInputError(
            f"{what}: expected finite values, got {int((~torch.isfinite(tensor)).sum())} NaN or inf value(s)"
        )


def _is_integer(tensor: torch.Tensor) -> bool:
    return not tensor.is_floating_point() and not tensor.is_complex() and tensor.dtype != torch.bool


def _binary_mask(raw: torch.Tensor, what: str) -> torch.Tensor:
    """{0, 1} float32 `(B, 1, H, W)` from `(B, H, W)` raw values; refuses anything not binary."""
    _check_dtype(raw, what)
    if raw.dtype == torch.bool:
        return raw.float()[:, None]
    values = torch.unique(raw)
    if raw.dtype == torch.uint8 and bool(torch.isin(values, torch.tensor([0, 255], dtype=torch.uint8)).all()):
        return (raw == 255).float()[:, None]
    if bool(((values == 0) | (values == 1)).all()):
        return (raw == 1).float()[:, None]
    shown = ", ".join(f"{float(value):g}" for value in values[:6]) + (", ..." if values.numel() > 6 else "")
    allowed = "0/1 or 0/255 (uint8 images)" if raw.dtype == torch.uint8 else "0/1 (divide 0..255 images by 255)"
    raise CityInputError(f"{what}: expected a binary building mask with values {allowed}, got values {shown}")


def _valid_sizes(size: int, divisor: int) -> str:
    below, above = size // divisor * divisor, (size // divisor + 1) * divisor
    return f"{below} or {above}" if below > 0 else str(above)


def check_map_size(height: int, width: int, divisor: int, divisor_note: str = "") -> None:
    """Raises a CityInputError unless `height` and `width` are positive multiples of `divisor`."""
    if height > 0 and width > 0 and height % divisor == 0 and width % divisor == 0:
        return
    note = f" ({divisor_note})" if divisor_note else ""
    raise CityInputError(
        f"the map size {height}x{width} is not divisible by the pipeline's size divisor {divisor}{note}: expected "
        f"multiples of {divisor}; nearest valid sizes: height {_valid_sizes(height, divisor)}, width "
        f"{_valid_sizes(width, divisor)}"
    )


def _looks_like_positions(value: Any, size: Tuple[int, int]) -> bool:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        shape = tuple(value.shape)
        return shape[-2:] != size and shape[-1:] == (2,) and len(shape) <= 2
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(item, numbers.Number) for item in value):
        return True  # one (row, col)
    if isinstance(value, (list, tuple)) and value:
        return all(_looks_like_positions(item, size) for item in value)
    return False


def _positions(value: Any) -> torch.Tensor:
    """`(B, 2)` int64 (row, col) of any position form."""
    what = "transmitters"
    if isinstance(value, (list, tuple)) and value and not isinstance(value[0], numbers.Number):
        parts = [_positions_tensor(item, f"{what}[{index}]").reshape(-1, 2) for index, item in enumerate(value)]
        return torch.cat(parts)
    return _positions_tensor(value, what).reshape(-1, 2)


def _positions_tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list):
        if not all(isinstance(item, numbers.Number) and not isinstance(item, bool) for item in value):
            raise CityInputError(f"{what}: expected a (row, col) pair of integers, got {value!r}")
        value = torch.tensor(value, dtype=torch.float64)
    tensor = _to_tensor(value, what)
    if tensor.shape[-1:] != (2,) or tensor.ndim > 2:
        raise CityInputError(
            f"{what}: expected (row, col) positions of shape (B, 2) or (2,), got {tuple(tensor.shape)}"
        )
    _check_dtype(tensor, what)
    if tensor.dtype == torch.bool:
        raise CityInputError(f"{what}: expected integer (row, col) positions, got dtype bool")
    if tensor.is_floating_point() and not bool((tensor == tensor.round()).all()):
        raise CityInputError(f"{what}: expected integer (row, col) pixel positions, got {tensor.tolist()}")
    return tensor.round().long() if tensor.is_floating_point() else tensor.long()


def _antenna_positions(raw: torch.Tensor, what: str) -> torch.Tensor:
    """`(B, 2)` (row, col) of the single brightest pixel of each `(B, H, W)` antenna image."""
    _check_dtype(raw, what)
    flat = raw.reshape(raw.shape[0], -1).double()  # (B, H * W)
    peak = flat.max(dim=1).values  # (B,)
    for index in range(raw.shape[0]):
        if not peak[index] > flat[index].min():
            raise CityInputError(
                f"{what}[{index}]: expected an antenna image with one bright pixel (the transmitter), got an image "
                f"whose pixels are all {peak[index].item():g}"
            )
        count = int((flat[index] == peak[index]).sum())
        if count > 1:
            raise CityInputError(
                f"{what}[{index}]: expected one transmitter per map (one brightest pixel), got {count} pixels at "
                f"the maximum {peak[index].item():g}"
            )
    width = raw.shape[-1]
    index = flat.argmax(dim=1)
    return torch.stack([index // width, index % width], dim=1)


def prepare_city(
    buildings: CityImages,
    transmitters: Transmitters,
    divisor: int = 1,
    divisor_note: str = "",
    device: Optional[Union[str, torch.device]] = None,
    dtype: torch.dtype = torch.float32,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Parses and checks a batch of cities (see the module docstring for the accepted forms).

    Args:
        buildings: building masks.
        transmitters: antenna images or (row, col) pixel positions.
        divisor (`int`, defaults to 1): map height and width must be multiples of it (a pipeline's size divisor).
        divisor_note (`str`): where the divisor comes from, for the message (e.g. ``"VAE 4 x UNet 2"``).
        device, dtype: of the returned tensors.

    Returns:
        `(buildings, transmitter)`, both `(B, 1, H, W)`: the mask in {0, 1} and the transmitter's one-hot image.

    Raises:
        CityInputError: one line naming what was expected and what came.
    """
    mask = _binary_mask(_image_batch(buildings, "buildings"), "buildings")  # (B, 1, H, W)
    batch, _, height, width = mask.shape
    if batch == 0:
        raise CityInputError("buildings: expected at least one map, got an empty batch")
    check_map_size(height, width, int(divisor), divisor_note)

    if _looks_like_positions(transmitters, (height, width)):
        positions = _positions(transmitters)  # (B_t, 2)
        kind = "transmitter positions"
    else:
        raw = _image_batch(transmitters, "transmitters")  # (B_t, H', W')
        if tuple(raw.shape[-2:]) != (height, width):
            raise CityInputError(
                f"transmitters: expected antenna images of the buildings' size {height}x{width} or (row, col) "
                f"positions, got images of {raw.shape[-2]}x{raw.shape[-1]}"
            )
        positions = _antenna_positions(raw, "transmitters")
        kind = "antenna images"
    if positions.shape[0] == 0:
        raise CityInputError("transmitters: expected at least one transmitter, got none")
    outside = (positions[:, 0] < 0) | (positions[:, 0] >= height) | (positions[:, 1] < 0) | (positions[:, 1] >= width)
    if bool(outside.any()):
        index = int(outside.nonzero()[0])
        row, col = positions[index].tolist()
        raise CityInputError(
            f"transmitter {index} at (row {row}, col {col}) is outside the {height}x{width} map: expected rows "
            f"0..{height - 1} and cols 0..{width - 1}"
        )
    if positions.shape[0] != batch:
        if batch != 1:
            raise CityInputError(
                f"batch mismatch: {batch} building maps but {positions.shape[0]} {kind}; expected one transmitter "
                "per map (or one map for all transmitters)"
            )
        mask = mask.expand(positions.shape[0], -1, -1, -1)
        batch = positions.shape[0]
    transmitter = torch.zeros(batch, height * width, dtype=torch.float32)
    transmitter[torch.arange(batch), positions[:, 0] * width + positions[:, 1]] = 1.0
    transmitter = transmitter.view(batch, 1, height, width)
    return mask.to(device=device, dtype=dtype).contiguous(), transmitter.to(device=device, dtype=dtype)

