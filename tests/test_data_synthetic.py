"""The synthetic generator: physics (free space, walls, buildings), determinism, items, shadowing statistics."""

import math
import random

import numpy as np
import pytest
import torch

from radiodiff_vae.data import RADIOMAPSEER_DB_RANGE, SyntheticCityConfig, SyntheticRadioMaps, generate_radio_maps
from radiodiff_vae.data.conventions import model_to_unit
from radiodiff_vae.data.simulation.synthetic import path_gain_db, pixel_centres, shadowing_field

WAVELENGTH_M = 299_792_458.0 / 5.9e9


def _free_space_gain_db(distance_m: np.ndarray) -> np.ndarray:
    return -20.0 * np.log10(4.0 * math.pi * np.maximum(distance_m, 1.0) / WAVELENGTH_M)


def test_open_space_is_free_space_loss_at_5_9_ghz_and_falls_with_distance():
    size = 64  # 4 m pixels over 256 m
    tx = torch.tensor([[101.0, 130.0]])
    gain = path_gain_db(torch.zeros(1, size, size, dtype=torch.bool), tx, SyntheticCityConfig())[0]
    distance = (pixel_centres(size, 256.0) - tx).norm(dim=-1).numpy()
    np.testing.assert_allclose(gain.reshape(-1).numpy(), _free_space_gain_db(distance), atol=1e-4)
    # Sorted by distance the gain never rises; at 100 m it is about -87.9 dB.
    order = np.argsort(distance)
    assert np.all(np.diff(gain.reshape(-1).numpy()[order]) <= 1e-5)
    assert _free_space_gain_db(np.array([100.0]))[0] == pytest.approx(-87.86, abs=0.01)


def test_each_building_on_the_path_costs_two_walls():
    size, wall_loss = 64, 12.0
    config = SyntheticCityConfig(wall_loss_db=wall_loss)
    buildings = torch.zeros(1, size, size, dtype=torch.bool)
    buildings[0, 26:39, 30:34] = True  # a building east of the transmitter (rows 26-38, columns 30-33)
    tx = torch.tensor([[15.5 * 4.0, 32.5 * 4.0]])  # centre of pixel (row 32, col 15)
    open_gain = path_gain_db(torch.zeros_like(buildings), tx, config)[0]
    gain = path_gain_db(buildings, tx, config)[0]

    assert gain[32, 50] == pytest.approx(open_gain[32, 50].item() - 2 * wall_loss, abs=1e-4)  # behind it
    assert gain[5, 50] == pytest.approx(open_gain[5, 50].item(), abs=1e-4)  # the path passes north of it
    assert gain[32, 5] == pytest.approx(open_gain[32, 5].item(), abs=1e-4)  # on the other side of the tx

    buildings[0, 26:39, 40:44] = True  # a second building further east
    two = path_gain_db(buildings, tx, config)[0]
    assert two[32, 55] == pytest.approx(open_gain[32, 55].item() - 4 * wall_loss, abs=1e-4)
    assert two[32, 37] == pytest.approx(open_gain[32, 37].item() - 2 * wall_loss, abs=1e-4)  # between the two


def test_generated_maps_follow_radiomapseer_conventions():
    out = generate_radio_maps([1, 2, 3], num_tx=2, seed=5, resolution=64)
    gain, buildings, tx_pixels = out["gain"], out["buildings"], out["tx_pixels"]
    assert gain.shape == (3, 2, 64, 64) and buildings.shape == (3, 64, 64)
    assert gain.min() >= 0.0 and gain.max() <= 1.0
    assert torch.all(gain.masked_select(buildings[:, None].expand_as(gain)) == 0.0)  # buildings are 0
    built = buildings.float().mean().item()
    assert 0.05 < built < 0.6, f"a city should be partly built, got a building fraction of {built:.2f}"
    for m in range(3):
        for t in range(2):
            row, col = tx_pixels[m, t].tolist()
            assert not buildings[m, row, col]  # the transmitter stands outside the buildings
            # Next to the transmitter the gain is near -47 dB, the top of RadioMapSeer's range.
            assert gain[m, t, row, col] > 0.9
    # Open space far from the transmitter is darker than open space next to it, on average over the maps.
    centres = pixel_centres(64, 256.0)
    distance = (centres[None, None] - out["tx_positions"][:, :, None]).norm(dim=-1).view(3, 2, 64, 64)
    outdoor = ~buildings[:, None].expand_as(gain)
    near = gain[(distance < 20) & outdoor].mean()
    far = gain[(distance > 120) & outdoor].mean()
    assert near > far + 0.2


def test_generator_is_deterministic_per_seed_map_and_transmitter():
    first = generate_radio_maps([4, 5], num_tx=2, seed=11, resolution=32)
    again = generate_radio_maps([4, 5], num_tx=2, seed=11, resolution=32)
    for key in ("gain", "buildings", "tx_positions"):
        assert torch.equal(first[key], again[key])
    # A map does not depend on its batch or on how many transmitters were asked for.
    alone = generate_radio_maps([5], num_tx=3, seed=11, resolution=32)
    assert torch.equal(alone["gain"][0, :2], first["gain"][1])
    other_seed = generate_radio_maps([4, 5], num_tx=2, seed=12, resolution=32)
    assert not torch.equal(other_seed["buildings"], first["buildings"])
    # The geometry lives in metres: another resolution keeps the city's transmitters where they were.
    finer = generate_radio_maps([4, 5], num_tx=2, seed=11, resolution=64)
    assert torch.equal(finer["tx_positions"], first["tx_positions"])


def test_shadowing_field_has_unit_variance_and_exponential_correlation():
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal((8, 128, 128), dtype=np.float32))
    field = shadowing_field(noise, pixel_size=1.0, correlation_m=10.0)
    assert field.std().item() == pytest.approx(1.0, abs=0.05)
    lag = 10  # one correlation distance: correlation exp(-1)
    correlation = (field[:, :, :-lag] * field[:, :, lag:]).mean() / field.var()
    assert correlation.item() == pytest.approx(math.exp(-1.0), abs=0.06)


def test_synthetic_dataset_items():
    dataset = SyntheticRadioMaps(num_maps=3, num_tx=2, seed=0, resolution=32, show_progress=False)
    assert len(dataset) == 6
    item = dataset[3]
    assert item["name"] == "2_1" and item["simulation"] == "synthetic"
    assert item["pixel_values"].shape == item["buildings"].shape == item["transmitter"].shape == (1, 32, 32)
    assert item["pixel_values"].min() >= -1.0 and item["pixel_values"].max() <= 1.0
    # 8-bit grey values, as in RadioMapSeer's files: model_to_unit(pixel) * 255 is an integer.
    grey = model_to_unit(item["pixel_values"]) * 255.0
    assert torch.allclose(grey, grey.round(), atol=1e-3)
    assert set(item["buildings"].unique().tolist()) <= {0.0, 1.0}
    assert torch.all(item["pixel_values"][item["buildings"] > 0] == -1.0)
    assert item["transmitter"].sum() == 1.0
    assert dataset[-1]["name"] == "3_1"
    with pytest.raises(IndexError):
        dataset[6]
    exact = SyntheticRadioMaps(num_maps=1, num_tx=1, seed=0, resolution=32, quantize=False, show_progress=False)
    assert torch.allclose(exact[0]["pixel_values"], dataset[0]["pixel_values"], atol=1.0 / 255.0)

    flipping = SyntheticRadioMaps(num_maps=3, num_tx=2, seed=0, resolution=32, flip=True, show_progress=False)
    random.seed(1)
    draws = [flipping[3] for _ in range(12)]
    mirrored = [torch.equal(draw["pixel_values"], item["pixel_values"].flip(-1)) for draw in draws]
    assert any(mirrored) and not all(mirrored)
    for draw, flipped in zip(draws, mirrored):
        for key in ("pixel_values", "buildings", "transmitter"):
            assert torch.equal(draw[key], item[key].flip(-1) if flipped else item[key]), key


def test_bad_configuration_is_rejected_with_the_field_name():
    with pytest.raises(ValueError, match="street_width_m"):
        SyntheticCityConfig(street_width_m=(10.0, 50.0))
    with pytest.raises(ValueError, match="building_probability"):
        SyntheticCityConfig(building_probability=(0.5, 1.5))
    with pytest.raises(ValueError, match="wall_loss_db"):
        SyntheticCityConfig(wall_loss_db=-1.0)
    with pytest.raises(ValueError, match="num_tx"):
        SyntheticRadioMaps(num_maps=2, num_tx=0)
    with pytest.raises(ValueError, match="first_map_id"):
        SyntheticRadioMaps(num_maps=2, num_tx=1, first_map_id=0)
    with pytest.raises(ValueError, match="tx_positions"):
        path_gain_db(torch.zeros(2, 16, 16, dtype=torch.bool), torch.zeros(1, 2), SyntheticCityConfig())
    assert SyntheticCityConfig().db_range == RADIOMAPSEER_DB_RANGE


def test_cities_vary_in_building_size_and_orientation():
    from scipy import ndimage

    from radiodiff_vae.data.simulation.synthetic import rasterize_buildings, sample_city_layouts

    config = SyntheticCityConfig()
    layout = sample_city_layouts(range(1, 7), seed=0, config=config)
    masks = rasterize_buildings(layout, 128, config).numpy()  # 2 m pixels: 4 m^2 each
    areas = []
    for mask in masks:
        labels, count = ndimage.label(mask)
        areas.extend(np.bincount(labels.ravel())[1:] * 4.0)
    areas = np.array(areas)
    assert len(areas) > 60
    assert areas.min() < 150 and areas.max() > 1500  # from small houses to block-sized buildings (m^2)
    angles = np.degrees(layout.angle.numpy())
    assert np.all((angles >= 0) & (angles < 90)) and np.ptp(angles) > 20  # street grids at different orientations


@pytest.mark.slow  # worker processes
def test_generation_in_worker_processes_gives_the_same_maps():
    from radiodiff_vae.data import SyntheticRadioMaps

    kwargs = dict(num_maps=5, num_tx=2, seed=3, resolution=16, batch_size=2, show_progress=False)
    serial, parallel = SyntheticRadioMaps(**kwargs), SyntheticRadioMaps(**kwargs, num_workers=2)
    assert len(serial) == len(parallel) == 10
    for index in (0, 5, 9):  # first, middle and last batch
        for key in ("pixel_values", "buildings", "transmitter"):
            assert torch.equal(serial[index][key], parallel[index][key]), (index, key)
        assert serial[index]["name"] == parallel[index]["name"]
    assert serial[9]["name"] == "5_1"
