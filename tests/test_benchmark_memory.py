"""benchmarks/benchmark_memory.py on the tiny preset at a small size: the JSON it writes, the order of the modes, and
the fake-tensor count against the same count of the real step."""

import importlib.util
import json
from pathlib import Path

import pytest

from radiodiff_vae.errors import InvalidArgumentError

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "benchmark_memory.py"


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("benchmark_memory_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def random_trunk(benchmark, monkeypatch, tmp_path):
    """No VGG16 weights where torch looks: the benchmark counts with the package's random trunk."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))


def test_counts_every_mode_into_the_json(benchmark, random_trunk, fresh_accelerate_state, tmp_path, capsys):
    output = tmp_path / "memory.json"
    arguments = ["--preset", "tiny", "--resolution", "32", "--batch_size", "2", "--precision", "bf16", "--phases", "1"]
    arguments += ["--fused_group_norm", "on", "--disc_base_channels", "16", "--output_json", str(output)]
    assert benchmark.main(arguments) == 0
    printed = capsys.readouterr().out
    assert "| selective | 1 |" in printed and "no GPU measurement of this configuration" in printed
    results = json.loads(output.read_text())
    assert set(results["modes"]) == {"none", "selective", "full_resolution", "all"}
    modes = results["modes"]
    for mode, row in modes.items():
        assert row["predicted_peak_gib"] > 0 and 0 <= row["recompute_flop_fraction"] < 1, mode
        assert row["fused_group_norm"] is True
        phase = row["phases"]["1"]
        assert phase["kept_mib_per_map"]["autoencoder"] > 0 and phase["kept_mib_per_map"]["discriminator"] == 0
        assert phase["weights_gib"] > 0 and phase["adam_states_gib"] > 0
    assert modes["selective"]["predicted_peak_gib"] <= modes["none"]["predicted_peak_gib"]
    kept = {mode: row["phases"]["1"]["kept_mib_per_map"]["autoencoder"] for mode, row in modes.items()}
    assert kept["all"] < kept["selective"] < kept["none"]
    # selective recomputes element-wise work only; full_resolution and all recompute convolutions
    assert modes["selective"]["phases"]["1"]["recompute_matmul_flop_fraction"] == 0
    assert 0 < modes["selective"]["recompute_flop_fraction"] < 0.05
    assert 0 < modes["full_resolution"]["recompute_flop_fraction"] < modes["all"]["recompute_flop_fraction"]
    assert results["calibration"] == []  # measured on a GPU only at the report's size


def test_fake_count_equals_the_count_of_the_real_step(benchmark, random_trunk, fresh_accelerate_state):
    """The same counter on real tensors (the step computed) gives the same bytes and FLOPs as on fake ones."""
    args = benchmark.parse_args(["--preset", "tiny", "--resolution", "32", "--batch_size", "2", "--precision", "fp32",
                                 "--disc_base_channels", "16"])  # fmt: skip
    models = benchmark.RealModels(args)
    variant = benchmark.Variant("selective", fused=True, phase=2)
    fake = benchmark.count_step(args, models, variant)
    real = benchmark.count_step(args, models, variant, fake=False)
    assert fake["predicted_peak_gib"] == pytest.approx(real["predicted_peak_gib"], rel=1e-6)
    assert fake["flops"] == real["flops"]
    for name, mib in real["kept_mib_per_map"].items():
        assert fake["kept_mib_per_map"][name] == pytest.approx(mib, rel=1e-6), name
    assert real["kept_mib_per_map"]["discriminator"] > 0  # phase 2


def test_bad_arguments_fail_in_one_line(benchmark):
    with pytest.raises(InvalidArgumentError, match="--batch_size must be >= 1, got 0"):
        benchmark.parse_args(["--batch_size", "0"])
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--modes", "some"])
