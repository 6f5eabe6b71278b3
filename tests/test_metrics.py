"""Metrics: known values, scikit-image as an independent reference, masks and summaries."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from radiodiff_vae.metrics import (
    METRIC_NAMES,
    compute_metrics,
    mae,
    nmse,
    psnr,
    rmse,
    ssim,
    summarize_metrics,
)


def _smooth_maps(batch: int = 3, size: int = 48, seed: int = 0) -> tuple:
    """Radio-map-like targets (a smooth decay around a point) and noisy predictions, float64 in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    coords = torch.linspace(-1, 1, size, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    centres = torch.rand(batch, 2, generator=generator, dtype=torch.float64) - 0.5
    distance = ((xx - centres[:, 0, None, None]) ** 2 + (yy - centres[:, 1, None, None]) ** 2).sqrt()
    target = (1 - distance / 3).clamp(0, 1).unsqueeze(1)  # (B, 1, H, W)
    noise = 0.05 * torch.randn(target.shape, generator=generator, dtype=torch.float64)
    pred = (target + noise).clamp(0, 1)
    return pred, target


def test_known_values_of_a_constant_offset():
    target = torch.full((2, 1, 16, 16), 0.5)
    pred = target + torch.tensor([0.1, 0.2]).view(2, 1, 1, 1)
    assert torch.allclose(mae(pred, target), torch.tensor([0.1, 0.2]), atol=1e-6)
    assert torch.allclose(rmse(pred, target), torch.tensor([0.1, 0.2]), atol=1e-6)
    # PSNR = 10 log10(1 / 0.01) = 20 dB and 10 log10(1 / 0.04) = 13.98 dB.
    assert torch.allclose(psnr(pred, target), torch.tensor([20.0, 10 * math.log10(25)]), atol=1e-4)
    # NMSE = 0.01 / 0.25 and 0.04 / 0.25.
    assert torch.allclose(nmse(pred, target), torch.tensor([0.04, 0.16]), atol=1e-6)


def test_perfect_reconstruction_scores():
    pred, target = _smooth_maps()
    scores = compute_metrics(target.clone(), target)
    assert torch.isinf(scores["psnr"]).all()
    assert torch.allclose(scores["ssim"], torch.ones(3, dtype=torch.float64))
    assert (scores["nmse"] == 0).all() and (scores["rmse"] == 0).all() and (scores["mae"] == 0).all()
    # An all-zero map reconstructed exactly is a perfect NMSE, not 0 / 0.
    zeros = torch.zeros(1, 1, 16, 16)
    assert nmse(zeros, zeros).item() == 0.0
    assert math.isinf(nmse(zeros + 0.1, zeros).item())


def test_psnr_and_ssim_match_scikit_image():
    pred, target = _smooth_maps(batch=3, size=48)
    ours_psnr = psnr(pred, target)
    ours_ssim = ssim(pred, target)
    for index in range(3):
        p, t = pred[index, 0].numpy(), target[index, 0].numpy()
        ref_psnr = peak_signal_noise_ratio(t, p, data_range=1.0)
        ref_ssim = structural_similarity(
            t, p, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert ours_psnr[index].item() == pytest.approx(ref_psnr, abs=1e-9)
        assert ours_ssim[index].item() == pytest.approx(ref_ssim, abs=1e-9)
    # float32 inputs agree to float32 precision.
    assert torch.allclose(ssim(pred.float(), target.float()).double(), ours_ssim, atol=1e-5)


def test_ssim_drops_with_structure_loss_and_is_symmetric():
    pred, target = _smooth_maps(batch=2, size=32)
    blurred = torch.nn.functional.avg_pool2d(target, 5, stride=1, padding=2, count_include_pad=False)
    noisy = ssim(pred, target)
    assert (noisy < 0.99).all() and (ssim(blurred, target) > noisy).all()
    assert torch.allclose(ssim(pred, target), ssim(target, pred))


def test_mask_restricts_every_metric_to_selected_pixels():
    target = torch.full((1, 1, 32, 32), 0.5)
    pred = target.clone()
    pred[..., :, :16] += 0.3  # error only in the left half
    right_half = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    right_half[..., :, 16:] = True
    left_half = ~right_half
    scores = compute_metrics(pred, target, mask=right_half)
    assert scores["rmse"].item() == 0 and scores["mae"].item() == 0 and scores["nmse"].item() == 0
    assert torch.isinf(scores["psnr"]).all()
    left = compute_metrics(pred, target, mask=left_half.float())  # float masks are thresholded at 0.5
    assert left["mae"].item() == pytest.approx(0.3, abs=1e-6)
    assert left["psnr"].item() == pytest.approx(10 * math.log10(1 / 0.09), abs=1e-4)
    # SSIM windows are chosen by their centre: the windows centred in the right half, away from the step, are exact.
    far_right = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    far_right[..., :, 22:] = True
    assert ssim(pred, target, mask=far_right).item() == pytest.approx(1.0, abs=1e-6)
    assert ssim(pred, target, mask=left_half).item() < 1.0


def test_empty_mask_gives_nan_and_summary_skips_it():
    pred, target = _smooth_maps(batch=2, size=16)
    mask = torch.ones(2, 1, 16, 16, dtype=torch.bool)
    mask[1] = False
    scores = compute_metrics(pred, target, mask=mask)
    assert not torch.isnan(scores["rmse"][0]) and torch.isnan(scores["rmse"][1])
    summary = summarize_metrics(scores)
    assert summary["rmse"]["count"] == 1 and summary["rmse"]["num_nan"] == 1
    assert summary["rmse"]["mean"] == pytest.approx(scores["rmse"][0].item())


def test_db_errors_scale_by_the_range_width():
    target = torch.full((1, 1, 16, 16), 0.4)
    pred = target + 0.05
    scores = compute_metrics(pred, target, db_range=(-147.0, -47.0))
    assert set(scores) == set(METRIC_NAMES) | {"rmse_db", "mae_db"}
    assert scores["rmse_db"].item() == pytest.approx(5.0, abs=1e-4)  # 0.05 of a 100 dB range
    assert scores["mae_db"].item() == pytest.approx(5.0, abs=1e-4)
    assert set(compute_metrics(pred, target)) == set(METRIC_NAMES)


def test_summary_statistics_match_numpy():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    summary = summarize_metrics({"psnr": values})["psnr"]
    array = values.numpy().astype(np.float64)
    assert summary["mean"] == pytest.approx(array.mean())
    assert summary["std"] == pytest.approx(array.std())
    assert summary["p50"] == pytest.approx(np.percentile(array, 50))
    assert summary["p95"] == pytest.approx(np.percentile(array, 95))
    assert (summary["min"], summary["max"], summary["count"]) == (1.0, 10.0, 5)
    assert summarize_metrics({"ssim": [0.5]})["ssim"]["std"] == 0.0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: psnr(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9)), "same shape"),
        (lambda: psnr(torch.zeros(8, 8), torch.zeros(8, 8)), r"\(B, C, H, W\)"),
        (lambda: ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)), "at least 11x11"),
        (lambda: mae(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), mask=torch.ones(2, 1, 4, 4)), "mask"),
        (lambda: compute_metrics(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16), db_range=(0, -1)), "db_min"),
        (lambda: psnr(np.zeros((1, 1, 8, 8)), torch.zeros(1, 1, 8, 8)), "torch tensors"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
