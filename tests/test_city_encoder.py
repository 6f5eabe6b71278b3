"""The condition encoder of the construction stage (radiodiff_vae.models.city_encoder): the physics features on
hand-made maps, their vectorised ray sampling against a per-pixel reference, the encoder's shapes, dtypes, config
checks and save/load."""

import math

import pytest
import torch
import torch.nn.functional as F

from radiodiff_vae import CityEncoder
from radiodiff_vae.errors import CityInputError
from radiodiff_vae.models import city_encoder as city_module
from radiodiff_vae.models.city_encoder import (
    DISTANCE_DECADES,
    FEATURE_NAMES,
    WALL_COUNT_SCALE,
    city_features,
    walls_crossed,
    walls_fraction,
)

SIZE = 16


def _city(wall_col: int = 8, tx=(8, 2), size: int = SIZE):
    """A map with one building wall: column ``wall_col``, full height; the transmitter left of it."""
    buildings = torch.zeros(1, 1, size, size)
    buildings[..., wall_col] = 1.0
    transmitter = torch.zeros(1, 1, size, size)
    transmitter[0, 0, tx[0], tx[1]] = 1.0
    return buildings, transmitter


def test_features_of_a_hand_made_city():
    buildings, transmitter = _city()
    features = city_features(buildings, transmitter)
    assert features.shape == (1, 5, SIZE, SIZE) and features.dtype == torch.float32
    assert FEATURE_NAMES == ("buildings", "transmitter", "distance", "walls", "wall_count")
    assert torch.equal(features[:, 0:1], buildings) and torch.equal(features[:, 1:2], transmitter)

    distance = features[0, 2]
    # Half a pixel at the transmitter; d / side elsewhere; one fixed scale (log10(512)) at every map size.
    def expected(pixels: float) -> float:
        return 1 + math.log10(pixels / SIZE) / DISTANCE_DECADES

    assert distance[8, 2].item() == pytest.approx(expected(0.5), abs=1e-6)
    assert distance[8, 14].item() == pytest.approx(expected(12), abs=1e-6)
    assert distance[0, 15].item() == pytest.approx(expected(math.hypot(8, 13)), abs=1e-6)
    assert bool((distance[8, 3:] > distance[8, 2:-1]).all())  # grows away from the transmitter
    assert 0 <= distance.min() and distance.max() <= 1.06

    walls = features[0, 3]
    # Open line of sight: 0 exactly. Through the one-pixel wall: about one pixel of the segment's length.
    assert walls[8, 5].item() == 0.0 and walls[2, 4].item() == 0.0 and walls[15, 0].item() == 0.0
    assert walls[8, 14].item() == pytest.approx(1 / 12, abs=0.02)
    assert walls[0, 14].item() > 0 and walls[15, 12].item() > 0
    assert walls[8, 8].item() > 0.05  # a pixel inside the wall: the half pixel of wall before its centre
    assert 0 <= walls.min() and walls.max() <= 1

    # One wall entered behind the wall, none before it; a pixel inside the wall counts at most the bilinear edge of
    # its own wall (points within END_MARGIN of its centre are left out).
    count = features[0, 4] * WALL_COUNT_SCALE
    assert count[8, 5].item() == 0.0 and count[8, 8].item() < 0.31
    # Through a one-pixel wall the samples straddle its centre: the bilinear peak is a little below one entry.
    assert count[8, 14].item() == pytest.approx(1.0, abs=0.1)
    assert count[0, 15].item() == pytest.approx(1.0, abs=0.1)


def test_wall_count_counts_buildings_not_depth():
    """Two thin walls cost two entries, one thick block one: the count is what a multi-wall loss follows; the
    fraction says the opposite (the block is deeper)."""
    size, tx = 32, (16, 1)
    thin = torch.zeros(1, 1, size, size)
    thin[..., 8] = 1.0
    thin[..., 14] = 1.0
    thick = torch.zeros(1, 1, size, size)
    thick[..., 8:20] = 1.0
    positions = torch.tensor([tx])
    thin_fraction, thin_count = walls_crossed(thin, positions, 128)
    thick_fraction, thick_count = walls_crossed(thick, positions, 128)
    assert thin_count[0, 0, 16, 30].item() == pytest.approx(2.0, abs=0.2)
    assert thick_count[0, 0, 16, 30].item() == pytest.approx(1.0, abs=1e-4)
    assert thick_fraction[0, 0, 16, 30] > thin_fraction[0, 0, 16, 30]
    # Chunked sampling carries the last point over: the same count as one pass.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(city_module, "MAX_RAY_POINTS", size * size * 5)  # 5 samples per chunk
        torch.testing.assert_close(walls_crossed(thin, positions, 128)[1], thin_count, atol=1e-5, rtol=0)


def test_walls_match_a_per_pixel_reference_and_chunking(monkeypatch):
    torch.manual_seed(0)
    buildings = (torch.rand(2, 1, 12, 10) > 0.7).float()
    positions = torch.tensor([[3, 4], [11, 0]])
    samples = 16
    fast = walls_fraction(buildings, positions, samples)  # (2, 1, 12, 10)

    # Reference: one grid_sample per pixel along its own segment, in pixel-centre coordinates.
    reference = torch.zeros_like(fast)
    t = (torch.arange(samples) + 0.5) / samples
    for b in range(2):
        tx_row, tx_col = positions[b].tolist()
        for row in range(12):
            for col in range(10):
                rows = tx_row + t * (row - tx_row)
                cols = tx_col + t * (col - tx_col)
                grid = torch.stack([(2 * cols + 1) / 10 - 1, (2 * rows + 1) / 12 - 1], dim=-1).view(1, 1, -1, 2)
                sampled = F.grid_sample(buildings[b : b + 1], grid, align_corners=False, padding_mode="border")
                reference[b, 0, row, col] = sampled.mean()
    torch.testing.assert_close(fast, reference, atol=1e-6, rtol=0)

    # Chunks of a few points give the same answer as one pass.
    monkeypatch.setattr(city_module, "MAX_RAY_POINTS", 12 * 10 * 2 * 3)  # 3 samples per chunk
    torch.testing.assert_close(walls_fraction(buildings, positions, samples), fast, atol=1e-6, rtol=0)
    # Positions given explicitly are the same samples.
    torch.testing.assert_close(walls_fraction(buildings, positions, t), fast, atol=1e-6, rtol=0)


def test_features_at_the_report_size_stay_bounded():
    buildings = torch.zeros(1, 1, 320, 320)
    buildings[..., 100:140, 200:240] = 1
    transmitter = torch.zeros_like(buildings)
    transmitter[0, 0, 120, 100] = 1
    features = city_features(buildings, transmitter, ray_samples=16)
    assert features.shape == (1, 5, 320, 320)
    assert features[0, 3, 120, 300] > 0.1 and features[0, 3, 10, 10] == 0  # shadow behind the block; open corner


def test_feature_selection_and_bad_inputs():
    buildings, transmitter = _city()
    both = city_features(buildings, transmitter, features=("walls", "buildings"))
    full = city_features(buildings, transmitter)
    assert torch.equal(both, full[:, [3, 0]])
    with pytest.raises(ValueError, match="features must be a non-empty selection"):
        city_features(buildings, transmitter, features=("height",))
    with pytest.raises(CityInputError, match="one shape"):
        city_features(buildings, transmitter[..., :8])


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_encoder_shapes(factor):
    torch.manual_seed(0)
    encoder = CityEncoder(out_channels=12, block_out_channels=(8, 16, 16), downsample_factor=factor, ray_samples=8)
    buildings, transmitter = _city(size=32)
    buildings = buildings.repeat(3, 1, 1, 1)
    transmitter = transmitter.repeat(3, 1, 1, 1)
    output = encoder(buildings, transmitter)
    assert output.shape == (3, 12, 32 // factor, 32 // factor) and output.dtype == torch.float32
    # The last five channels are the features averaged over each f x f cell.
    features = encoder.features(buildings, transmitter)
    pooled = F.avg_pool2d(features, factor) if factor > 1 else features
    torch.testing.assert_close(output[:, 12 - len(FEATURE_NAMES) :], pooled)
    # Features computed earlier (a training loop's cache) give the same output.
    assert torch.equal(encoder(buildings, transmitter, features=features), output)
    with pytest.raises(CityInputError, match=r"expected precomputed features of shape \(3, 5, 32, 32\)"):
        encoder(buildings, transmitter, features=features[:, :3])


def test_features_only_encoder_and_dtypes(tmp_path):
    encoder = CityEncoder(out_channels=len(FEATURE_NAMES), downsample_factor=1, ray_samples=8)
    assert encoder.learned_channels == 0 and sum(p.numel() for p in encoder.parameters()) == 0
    buildings, transmitter = _city()
    torch.testing.assert_close(encoder(buildings, transmitter), city_features(buildings, transmitter, 8))
    encoder.save_pretrained(tmp_path / "features")  # the ray positions buffer gives it a weights file
    loaded = CityEncoder.from_pretrained(tmp_path / "features")
    assert torch.equal(loaded(buildings, transmitter), encoder(buildings, transmitter))

    learned = CityEncoder(out_channels=8, block_out_channels=(8, 8), downsample_factor=4, ray_samples=8)
    learned.save_pretrained(tmp_path / "learned")
    reloaded = CityEncoder.from_pretrained(tmp_path / "learned")
    assert torch.equal(reloaded(buildings, transmitter), learned(buildings, transmitter))
    half = learned.to(torch.bfloat16)(buildings, transmitter)
    assert half.dtype == torch.bfloat16 and half.shape == (1, 8, 4, 4) and bool(half.isfinite().all())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"downsample_factor": 3}, "power of two"),
        ({"downsample_factor": 0}, "power of two"),
        ({"out_channels": 4}, "must be >= 5"),
        ({"in_features": ("buildings", "height")}, "in_features must be distinct names"),
        ({"in_features": ("walls", "walls")}, "in_features must be distinct names"),
        ({"block_out_channels": (8,), "downsample_factor": 4}, "needs at least 2 level"),
        ({"block_out_channels": (12, 16)}, "multiples of norm_num_groups 8"),
        ({"ray_samples": 0}, "ray_samples must be >= 1"),
    ],
)
def test_encoder_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        CityEncoder(**kwargs)
    assert "\n" not in str(error.value)


def test_encoder_refuses_a_size_it_does_not_divide():
    encoder = CityEncoder(out_channels=8, block_out_channels=(8, 8), downsample_factor=4, ray_samples=4)
    buildings, transmitter = _city(size=18)
    with pytest.raises(CityInputError, match="18x18 is not divisible by its downsample_factor 4"):
        encoder(buildings, transmitter)
