"""The city inputs of the construction pipelines (radiodiff_vae.pipelines.inputs): every accepted form gives the same
tensors, and every bad input is one line of CityInputError that names what was expected and what came."""

import numpy as np
import pytest
import torch
from PIL import Image

from radiodiff_vae.errors import CityInputError, InvalidArgumentError
from radiodiff_vae.pipelines.inputs import prepare_city

SIZE = 8
POSITIONS = [(1, 2), (6, 7)]


def _masks() -> np.ndarray:
    masks = np.zeros((2, SIZE, SIZE), dtype=np.uint8)
    masks[0, 2:4, 3:6] = 1
    masks[1, 5:, :2] = 1
    return masks  # (2, H, W) in {0, 1}


def _antennas(dtype=np.uint8, value=255) -> np.ndarray:
    images = np.zeros((2, SIZE, SIZE), dtype=dtype)
    for index, (row, col) in enumerate(POSITIONS):
        images[index, row, col] = value
    return images


def _expected():
    buildings = torch.from_numpy(_masks()).float()[:, None]
    transmitter = torch.from_numpy(_antennas(np.float32, 1.0))[:, None]
    return buildings, transmitter


BUILDING_FORMS = {
    "tensor (B, 1, H, W) float": lambda: torch.from_numpy(_masks()).float()[:, None],
    "tensor (B, H, W) bool": lambda: torch.from_numpy(_masks()).bool(),
    "tensor (B, H, W) int64": lambda: torch.from_numpy(_masks()).long(),
    "array (B, H, W) uint8 0/255": lambda: _masks() * 255,
    "array (B, 1, H, W) float64": lambda: _masks()[:, None].astype(np.float64),
    "list of PIL mode L 0/255": lambda: [Image.fromarray(mask * 255) for mask in _masks()],
    "list of PIL mode 1": lambda: [Image.fromarray(mask.astype(bool)) for mask in _masks()],
    "list of arrays (1, H, W)": lambda: [mask[None] for mask in _masks()],
    "list of tensors (H, W)": lambda: [torch.from_numpy(mask).float() for mask in _masks()],
}

TRANSMITTER_FORMS = {
    "positions list of tuples": lambda: POSITIONS,
    "positions list of lists": lambda: [list(position) for position in POSITIONS],
    "positions tensor (B, 2)": lambda: torch.tensor(POSITIONS),
    "positions array (B, 2) float": lambda: np.array(POSITIONS, dtype=np.float32),
    "antenna tensor (B, 1, H, W)": lambda: torch.from_numpy(_antennas(np.float32, 1.0))[:, None],
    "antenna array uint8": lambda: _antennas(),
    "antenna list of PIL": lambda: [Image.fromarray(image) for image in _antennas()],
    "antenna images with a faint background": lambda: _antennas() + 3 * (_antennas() == 0),
}


@pytest.mark.parametrize("form", sorted(BUILDING_FORMS))
def test_every_building_form_gives_the_same_tensors(form):
    buildings, transmitter = prepare_city(BUILDING_FORMS[form](), POSITIONS)
    expected_buildings, expected_transmitter = _expected()
    assert buildings.dtype == torch.float32 and buildings.shape == (2, 1, SIZE, SIZE)
    assert torch.equal(buildings, expected_buildings) and torch.equal(transmitter, expected_transmitter)


@pytest.mark.parametrize("form", sorted(TRANSMITTER_FORMS))
def test_every_transmitter_form_gives_the_same_tensors(form):
    buildings, transmitter = prepare_city(_masks(), TRANSMITTER_FORMS[form]())
    expected_buildings, expected_transmitter = _expected()
    assert torch.equal(buildings, expected_buildings) and torch.equal(transmitter, expected_transmitter)


def test_single_map_forms_and_broadcasting():
    mask = _masks()[0]
    buildings, transmitter = prepare_city(Image.fromarray(mask * 255), (1, 2))  # one PIL image, one (row, col)
    assert buildings.shape == transmitter.shape == (1, 1, SIZE, SIZE) and transmitter[0, 0, 1, 2] == 1
    buildings, transmitter = prepare_city(torch.from_numpy(mask), torch.tensor([6, 7]))  # (H, W) and (2,)
    assert transmitter.sum() == 1 and transmitter[0, 0, 6, 7] == 1
    # One city for several transmitters: the map is repeated.
    buildings, transmitter = prepare_city(mask, POSITIONS, divisor=4, dtype=torch.bfloat16)
    assert buildings.shape == (2, 1, SIZE, SIZE) and buildings.dtype == torch.bfloat16
    assert torch.equal(buildings[0], buildings[1]) and transmitter.sum() == 2


MASKS_255 = (_masks() * 255).astype(np.float32)
MIXED = np.stack([_masks()[0], _masks()[0] * 255]).astype(np.uint8) + np.eye(SIZE, dtype=np.uint8)
TWO_BRIGHT = _antennas() + _antennas()[:, ::-1]
BAD_INPUTS = [
    # (buildings, transmitters, divisor, message)
    (np.zeros((2, 10, 12)), POSITIONS, 4, r"map size 10x12 is not divisible by the pipeline's size divisor 4 \(why\): "
     r"expected multiples of 4; nearest valid sizes: height 8 or 12, width 12 or 16"),
    (np.zeros((1, 2, 2)), [(0, 0)], 4, r"nearest valid sizes: height 4, width 4"),
    (_masks(), [(1, 2), (8, 0)], 1, r"transmitter 1 at \(row 8, col 0\) is outside the 8x8 map: expected rows 0..7"),
    (_masks(), [(-1, 2), (3, 3)], 1, r"transmitter 0 at \(row -1, col 2\) is outside"),
    (_masks() * 0.5, POSITIONS, 1, r"binary building mask with values 0/1 \(divide 0..255 images by 255\), got "
     r"values 0, 0.5"),
    (MASKS_255, POSITIONS, 1, r"values 0/1 \(divide .*got values 0, 255"),
    (_masks() * 128, POSITIONS, 1, r"values 0/1 or 0/255 \(uint8 images\), got values 0, 128"),
    (MIXED, POSITIONS, 1, r"got values 0, 1, 2, 255"),
    (_masks(), [(1, 2), (3, 3), (4, 4)], 1, r"batch mismatch: 2 building maps but 3 transmitter positions"),
    (_masks(), _antennas()[:1], 1, r"batch mismatch: 2 building maps but 1 antenna images"),
    (np.zeros((2, 3, SIZE, SIZE)), POSITIONS, 1, r"buildings: expected shape \(B, 1, H, W\), \(B, H, W\) or "
     r"\(H, W\), got \(2, 3, 8, 8\)"),
    (np.zeros(SIZE), POSITIONS, 1, r"got \(8,\)"),
    (np.zeros((2, SIZE, SIZE), dtype=np.complex64), POSITIONS, 1, r"expected real values, got dtype complex64"),
    (np.full((2, SIZE, SIZE), "a"), POSITIONS, 1, r"expected a numeric array, got dtype <U1"),
    ("buildings.png", POSITIONS, 1, r"expected a torch tensor, a numpy array, a PIL image or a list of them, got str"),
    ([], POSITIONS, 1, r"buildings: expected at least one image, got an empty list"),
    ([np.zeros((SIZE, SIZE)), np.zeros((4, 4))], POSITIONS, 1, r"expected images of one size, got buildings\[1\] "
     r"4x4 and buildings\[0\] 8x8"),
    (np.full((1, SIZE, SIZE), np.nan), POSITIONS[:1], 1, r"buildings: expected finite values, got 64 NaN or inf"),
    (np.zeros((0, SIZE, SIZE)), POSITIONS, 1, r"expected at least one map, got an empty batch"),
    ([Image.new("I", (SIZE, SIZE))], POSITIONS, 1, r"buildings\[0\]: expected an 8-bit image \(PIL mode L\), got "
     r"PIL mode 'I'"),
    (_masks(), np.zeros((2, SIZE, SIZE), dtype=np.uint8), 1, r"transmitters\[0\]: expected an antenna image with "
     r"one bright pixel \(the transmitter\), got an image whose pixels are all 0"),
    (_masks(), TWO_BRIGHT, 1, r"transmitters\[0\]: expected one transmitter per map \(one brightest pixel\), got 2 "
     r"pixels at the maximum 255"),
    (_masks(), np.zeros((2, 4, 4)), 1, r"expected antenna images of the buildings' size 8x8 or \(row, col\) "
     r"positions, got images of 4x4"),
    (_masks(), [(1.5, 2), (3, 3)], 1, r"expected integer \(row, col\) pixel positions"),
    (_masks(), torch.tensor([[True, False], [False, True]]), 1, r"expected integer \(row, col\) positions, got "
     r"dtype bool"),
    (_masks(), [("a", 2)], 1, r"transmitters\[0\]: expected a torch tensor, a numpy array, a PIL image"),
]


@pytest.mark.parametrize("buildings, transmitters, divisor, message", BAD_INPUTS)
def test_bad_inputs_are_one_line_typed_errors(buildings, transmitters, divisor, message):
    with pytest.raises(CityInputError, match=message) as error:
        prepare_city(buildings, transmitters, divisor=divisor, divisor_note="why")
    text = str(error.value)
    assert "\n" not in text and "expected" in text
    assert isinstance(error.value, (ValueError, InvalidArgumentError))
