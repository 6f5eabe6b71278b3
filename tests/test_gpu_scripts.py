"""The one-call GPU scripts, run as the device runs them but on the CPU at toy sizes (``--dry_run``): every part
finishes, and each writes the numbers its summary promises."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(BENCHMARKS / script), *arguments, "--dry_run"]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=BENCHMARKS.parent)


def test_benchmark_gpu_dry_run_measures_every_part(tmp_path):
    parts = ["step_bf16", "step_bf16_checkpointing", "inference"]
    completed = _run("benchmark_gpu.py", "--output_dir", str(tmp_path), "--parts", *parts)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [row["part"] for row in summary["parts"]] == parts
    assert all(row["status"] == "ok" for row in summary["parts"])
    step = summary["parts"][0]["result"]
    assert [row["phase"] for row in step["rows"]] == [1, 2]
    assert all(row["seconds"] > 0 and row["gflop"] > 0 for row in step["rows"])
    assert set(step["host_syncs"]) == {"stream_or_device_syncs_per_step", "device_to_host_copies_per_step"}
    assert "Self CPU" in (tmp_path / "profile_bf16.txt").read_text()
    models = {row["model"] for row in summary["parts"][2]["result"]["results"]}
    assert models == {"radiodiff-vae", "radiodiff-ldm-f4", "AutoencoderKL"}
    assert "| step_bf16 | ok |" in (tmp_path / "summary.md").read_text()


def test_gpu_recipe_dry_run_trains_scores_and_draws(tmp_path):
    completed = _run("gpu_recipe.py", "--output_dir", str(tmp_path), "--parts", "recipe", "compare")
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    unseen = summary["recipe"]["unseen_cities"]
    assert unseen["maps"] == 8 and abs(unseen["psnr_gap_db"] - (unseen["psnr"] - unseen["baseline_psnr"])) < 1e-6
    assert summary["recipe"]["steps"] == 8 and len(summary["recipe"]["curve"]) >= 2
    assert "unseen synthetic cities" in (tmp_path / "recipe" / "README.md").read_text()
    rows = summary["compare"]["rows"]
    assert [row["latent_values_per_map"] for row in rows] == [3 * 4 * 4, 3 * 8 * 8, 8 * 4 * 4]
    for name in ("recipe_curve.png", "compare_curves.png"):
        assert (tmp_path / name).stat().st_size > 1000
