"""The resize baseline (radiodiff_vae.baseline) and its place in the evaluation: same values, same maps, same pixels."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from radiodiff_vae import RadioVAE
from radiodiff_vae.baseline import ResizeBaseline, baseline_for_model, resize_baseline, resize_reconstruct
from radiodiff_vae.cli import main
from radiodiff_vae.data.conventions import model_to_unit
from radiodiff_vae.evaluation import evaluate_vae
from radiodiff_vae.metrics import compute_metrics


@pytest.mark.parametrize(
    "latent_shape, size, expected",
    [
        ((3, 8, 8), (64, 64), (14, 14)),  # 192 values -> 196, the nearest square
        ((3, 40, 40), (320, 320), (69, 69)),  # the report's 4800 -> 4761
        ((4, 4, 4), (32, 32), (8, 8)),  # an exact square
    ],
)
def test_square_maps_take_the_nearest_square(latent_shape, size, expected):
    baseline = resize_baseline(latent_shape, *size)
    assert (baseline.height, baseline.width) == expected
    assert baseline.rule == "square"
    assert baseline.latent_values == latent_shape[0] * latent_shape[1] * latent_shape[2]
    assert "bicubic back" in baseline.describe() and f"{expected[0]}x{expected[1]}" in baseline.describe()


def test_non_square_maps_scale_each_side_by_the_square_root_of_the_channels():
    # a 64x32 map with an 8x-downsampling, 3-channel latent (3, 8, 4): each side x sqrt(3)
    baseline = resize_baseline((3, 8, 4), 64, 32)
    assert (baseline.height, baseline.width) == (14, 7)
    assert baseline.rule == "per-side"
    assert "not square" in baseline.describe()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"positive latent shape"):
        resize_baseline((0, 8, 8), 64, 64)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        resize_reconstruct(torch.zeros(64, 64), ResizeBaseline(8, 8, 64, "square"))


def test_reconstruction_is_area_down_then_bicubic_up():
    maps = torch.rand(2, 1, 32, 32) * 2 - 1
    baseline = ResizeBaseline(8, 8, 64, "square")
    expected = F.interpolate(F.avg_pool2d(maps, 4), size=(32, 32), mode="bicubic", align_corners=False)
    torch.testing.assert_close(resize_reconstruct(maps, baseline), expected)
    constant = torch.full((1, 1, 32, 32), 0.25)
    torch.testing.assert_close(resize_reconstruct(constant, baseline), constant)  # nothing to lose


def _items(count: int, size: int = 32) -> list:
    generator = torch.Generator().manual_seed(1)
    items = []
    for index in range(count):
        gain = torch.rand(1, size, size, generator=generator) * 2 - 1
        buildings = (torch.rand(1, size, size, generator=generator) > 0.7).float()
        items.append({"pixel_values": gain, "buildings": buildings, "name": f"{index}_0"})
    return items


def test_evaluation_scores_the_baseline_on_the_same_maps_and_pixels():
    torch.manual_seed(0)
    vae = RadioVAE.from_preset("tiny", sample_size=32).eval()
    items = _items(3)
    result = evaluate_vae(vae, items, batch_size=2, non_building_only=True, draw_figure=False, progress=False)
    maps = torch.stack([item["pixel_values"] for item in items])
    mask = torch.stack([item["buildings"] for item in items]) < 0.5
    baseline = baseline_for_model(vae, 32, 32)
    assert (baseline.height, baseline.width) == (7, 7)  # latent (3, 4, 4): 48 values -> 49
    resized = model_to_unit(resize_reconstruct(maps, baseline).clamp(-1, 1))
    expected = compute_metrics(resized, model_to_unit(maps), mask=mask)
    torch.testing.assert_close(result.baseline_per_image["psnr"], expected["psnr"].double())
    block = result.metrics["baseline"]
    assert block["values_per_map"] == 49 and block["latent_values_per_map"] == 48
    gap = (result.per_image["psnr"] - result.baseline_per_image["psnr"]).mean().item()
    assert block["psnr_gap_db"]["mean"] == pytest.approx(gap)
    assert block["maps_where_model_wins"] == int((result.per_image["psnr"] > result.baseline_per_image["psnr"]).sum())
    assert "| resize 7x7, bicubic back | 49 |" in result.table
    assert f"{gap:+.2f} dB PSNR" in result.table


def test_cli_evaluate_writes_the_baseline(tmp_path, capsys):
    torch.manual_seed(0)
    model = tmp_path / "vae"
    RadioVAE.from_preset("tiny", sample_size=32).save_pretrained(model)
    out = tmp_path / "eval"
    code = main(
        ["evaluate", str(model), "--output_dir", str(out), "--synthetic_maps", "2", "--synthetic_tx", "1",
         "--resolution", "32", "--no_figure"]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["baseline"]["method"].startswith("area-resize to 7x7")
    gap = metrics["psnr"]["mean"] - metrics["baseline"]["psnr"]["mean"]
    assert metrics["baseline"]["psnr_gap_db"]["mean"] == pytest.approx(gap, abs=1e-9)
    assert "resize 7x7, bicubic back" in (out / "metrics.md").read_text()
    header = (out / "per_image.csv").read_text().splitlines()[0].split(",")
    assert "baseline_psnr" in header and "baseline_ssim" in header
    assert "resize 7x7" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------------------------
# the log-distance fit (construction's classic baseline)
def _law_maps(a: float, b: float, positions, size: int = 32, seed: int = 0):
    """Maps whose gain is exactly ``a + b log10 d`` dB (d in pixels, at least 1) outside random buildings, 0 (the
    -147 dB floor) on them, as RadioMapSeer stores them: (pixel_values, buildings, transmitter), each (B, 1, H, W)."""
    from radiodiff_vae.baseline import log10_distance
    from radiodiff_vae.data.conventions import db_to_unit, unit_to_model

    transmitter = torch.zeros(len(positions), 1, size, size)
    for index, (row, col) in enumerate(positions):
        transmitter[index, 0, row, col] = 1.0
    gain_db = a + b * log10_distance(transmitter)
    generator = torch.Generator().manual_seed(seed)
    buildings = ((torch.rand(transmitter.shape, generator=generator) < 0.25) & (transmitter == 0)).float()
    unit = torch.where(buildings > 0.5, torch.zeros_like(gain_db), db_to_unit(gain_db)).float()
    return unit_to_model(unit), buildings, transmitter


def test_log_distance_fit_recovers_the_law_exactly():
    from radiodiff_vae.baseline import LogDistanceNormalEquations

    a, b = -55.0, -31.5  # stays inside (-147, -47) dB over a 32 x 32 map: nothing clipped
    positions = [(3, 4), (16, 20), (31, 0), (10, 30), (0, 0)]
    pixel_values, buildings, transmitter = _law_maps(a, b, positions)
    equations = LogDistanceNormalEquations()
    for start in range(0, 5, 2):  # streamed over batches of 2, 2, 1
        equations.update(pixel_values[start : start + 2], buildings[start : start + 2], transmitter[start : start + 2])
    fit = equations.solve()
    assert fit.a == pytest.approx(a, abs=1e-4) and fit.b == pytest.approx(b, abs=1e-4)
    assert fit.rmse_db < 1e-3 and fit.building_unit == 0.0
    assert fit.num_maps == 5 and fit.num_pixels == int((buildings < 0.5).sum())
    assert (fit.height, fit.width) == (32, 32)
    # the prediction is the maps themselves: the law outside buildings, 0 on them
    torch.testing.assert_close(fit.predict(buildings, transmitter), model_to_unit(pixel_values), atol=2e-6, rtol=0)


def test_streamed_fit_equals_one_batch_and_survives_json():
    from radiodiff_vae.baseline import LogDistanceFit, LogDistanceNormalEquations

    generator = torch.Generator().manual_seed(3)
    pixel_values = torch.rand(6, 1, 16, 16, generator=generator) * 2 - 1
    buildings = (torch.rand(6, 1, 16, 16, generator=generator) < 0.3).float()
    transmitter = torch.zeros(6, 1, 16, 16)
    transmitter[torch.arange(6), 0, torch.arange(6) * 2, 15 - torch.arange(6)] = 1.0
    whole, streamed = LogDistanceNormalEquations(), LogDistanceNormalEquations()
    whole.update(pixel_values, buildings, transmitter)
    for index in range(6):
        streamed.update(pixel_values[index : index + 1], buildings[index : index + 1], transmitter[index : index + 1])
    first, second = whole.solve(), streamed.solve()
    assert first.a == pytest.approx(second.a, rel=1e-12) and first.b == pytest.approx(second.b, rel=1e-12)
    # building pixels are predicted as what the training maps hold there (their mean)
    expected_building = float(model_to_unit(pixel_values)[buildings > 0.5].double().mean())
    assert first.building_unit == pytest.approx(expected_building, rel=1e-9)
    assert LogDistanceFit.from_dict(json.loads(json.dumps(first.to_dict()))) == first
    with pytest.raises(ValueError, match=r"missing \['b'"):
        LogDistanceFit.from_dict({k: v for k, v in first.to_dict().items() if k != "b"})
    with pytest.raises(ValueError, match=r"unknown \['c'\]"):
        LogDistanceFit.from_dict({**first.to_dict(), "c": 1})


def test_log_distance_fit_measures_distance_in_the_fits_pixels():
    from radiodiff_vae.baseline import LogDistanceFit

    fit = LogDistanceFit(a=-60.0, b=-20.0, building_unit=0.0, height=32, width=32)
    transmitter = torch.zeros(1, 1, 16, 16)
    transmitter[0, 0, 2, 3] = 1.0
    gain_db = fit.predict_db(transmitter)  # (1, 1, 16, 16): one pixel here is two of the fit's
    assert gain_db[0, 0, 2, 3].item() == pytest.approx(-60.0)  # the transmitter's pixel: d clamped at 1
    assert gain_db[0, 0, 2, 8].item() == pytest.approx(-60.0 - 20.0 * math.log10(10.0))  # 5 px here = 10 px there
    buildings = torch.zeros(1, 1, 16, 16)
    buildings[0, 0, 10:, 10:] = 1.0
    unit = fit.predict(buildings, transmitter)
    assert unit.shape == (1, 1, 16, 16) and unit.dtype == torch.float32
    assert unit[0, 0, 10:, 10:].eq(0).all() and unit[0, 0, 2, 3].item() == pytest.approx(0.87)  # (-60 + 147) / 100


def test_log_distance_fit_refuses_what_determines_no_line():
    from radiodiff_vae.baseline import LogDistanceFit, LogDistanceNormalEquations
    from radiodiff_vae.errors import DataError

    equations = LogDistanceNormalEquations()
    transmitter = torch.zeros(1, 1, 8, 8)
    transmitter[0, 0, 4, 4] = 1.0
    equations.update(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8), transmitter)  # all buildings
    with pytest.raises(DataError, match="two distances at least, got 0 pixels from 1 maps"):
        equations.solve()
    with pytest.raises(DataError, match="no transmitter"):
        equations.update(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(DataError, match="one size"):
        equations.update(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), transmitter[..., :4, :4])
    with pytest.raises(DataError, match="empty dataset"):
        LogDistanceFit.from_dataset([])
