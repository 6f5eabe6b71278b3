"""The resize baseline (radiodiff_vae.baseline) and its place in the evaluation: same values, same maps, same pixels."""

import json

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
