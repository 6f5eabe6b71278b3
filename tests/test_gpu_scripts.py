"""The one-call GPU scripts, run as the device runs them but on the CPU at toy sizes (``--dry_run``): every part
finishes, and each writes the numbers its summary promises."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_gpu_recipe_construction_dry_run(tmp_path):
    """The construction part end to end at toy sizes: a tiny VAE, the pipeline and the direct baseline trained with
    train_radiodiff.py and radiodiff_gpu.yaml, scored by evaluate-construction on unseen cities at 1, 2, 4, 10 steps
    and on a folder standing in for the ray-traced one (a make-synthetic folder)."""
    from radiodiff_vae.cli import main as radiodiff_vae

    traced = tmp_path / "traced"
    arguments = ["--out", str(traced), "--maps", "2", "--tx", "2", "--resolution", "32", "--seed", "7"]
    assert radiodiff_vae(["make-synthetic", *arguments]) == 0
    out = tmp_path / "out"
    completed = _run("gpu_recipe.py", "--output_dir", str(out), "--parts", "construction", "--raytraced_dir",
                     str(traced), "--raytraced_simulation", "synthetic")  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    result = json.loads((out / "summary.json").read_text())["construction"]
    assert "error" not in result and result["vae_source"] == "a tiny VAE trained for the dry run"
    assert json.loads((out / "construction.json").read_text())["steps"] == result["steps"]
    for name in ("pipeline", "direct"):
        run = result[f"{name}_run"]
        assert (run["steps"], run["planned_steps"], run["stopped_by"]) == (4, 4, "steps")
        assert run["training_seconds"] > 0 and abs(run["seconds_per_step"] * 4 - run["training_seconds"]) < 0.01
        assert [step for step, _ in run["validation_rmse_db"]] == [1, 2, 3, 4]
    direct_args = json.loads((out / "construction_direct" / "training_args.json").read_text())
    assert direct_args["direct"] and direct_args["unet_block_out_channels"] == [8, 16]

    methods = {"pipeline", "direct", "log_distance", "ceiling"}
    for key, maps in (("unseen_cities", 8), ("raytraced", 4)):
        scores = result[key]
        assert scores["maps"] == maps and scores["num_inference_steps"] == 1 and set(scores["methods"]) == methods
        for method, row in scores["methods"].items():
            assert 0 <= row["ssim"] <= 1 and row["nmse"] >= 0
            assert abs(row["rmse_db"] - 100 * row["rmse"]) < 1e-3  # the default dB range spans 100 dB
            assert (row.get("maps_per_second", 0) > 0) == (method in ("pipeline", "direct"))

    rows = result["steps"]
    assert [row["num_inference_steps"] for row in rows] == [1, 2, 4, 10]
    assert all(row["maps_per_second"] > 0 for row in rows)
    assert rows[0] == {"num_inference_steps": 1, **result["unseen_cities"]["methods"]["pipeline"]}
    # the same maps and the same fit in every run: the baselines do not move with the pipeline's steps
    unseen = json.loads((out / "construction_eval_unseen" / "metrics.json").read_text())
    for folder in ("construction_eval_steps_10", "construction_eval_raytraced"):
        metrics = json.loads((out / folder / "metrics.json").read_text())
        assert metrics["log_distance"]["fit"] == unseen["log_distance"]["fit"]
    steps_10 = json.loads((out / "construction_eval_steps_10" / "metrics.json").read_text())
    assert steps_10["ceiling"]["rmse_db"] == unseen["ceiling"]["rmse_db"]

    table = (out / "construction.md").read_text()
    assert table.count("| pipeline |") == 3 and "| log_distance |" in table and "| 10 |" in table
    assert (out / "construction_curves.png").stat().st_size > 1000
