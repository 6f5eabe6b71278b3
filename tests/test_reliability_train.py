"""examples/train_vae.py on bad input (issue 16): every case is one line ``train_vae.py: error: ...``, exit code 2, no
traceback, and nothing written, run as a separate process (tests/process_runner.py explains how it stays fast).
Plus: the same line under ``accelerate launch -q``, a busy output folder, and a map file that breaks once the run
has started."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from process_runner import OFFLINE, TRAIN_SCRIPT, ProcessRunner, assert_one_line_error, snapshot
from radiodiff_vae.models.autoencoder_radio import PRESETS
from radiodiff_vae.training import checkpointing

TINY = [
    "--preset", "tiny", "--resolution", "32", "--synthetic_num_maps", "4", "--synthetic_num_tx", "1",
    "--num_validation_maps", "1", "--num_validation_images", "1", "--scaling_factor_maps", "2",
    "--train_batch_size", "2", "--gradient_accumulation_steps", "1", "--perceptual_weight", "0",
    "--disc_start", "2", "--disc_base_channels", "16", "--report_to", "none", "--output_dir", "out",
]  # fmt: skip
@pytest.fixture(scope="module")
def runner():
    return ProcessRunner()


def fake_checkpoint(output_dir: Path, step: int, marker_step=None, vae_config=None, files=True) -> Path:
    """A checkpoint-N folder with a valid marker (sizes and checksums included) and model configs."""
    folder = output_dir / f"checkpoint-{step}"
    (folder / "vae").mkdir(parents=True)
    (folder / "discriminator").mkdir()
    vae = {"_class_name": "RadioVAE", **(vae_config or PRESETS["tiny"])}
    (folder / "vae" / "config.json").write_text(json.dumps(vae))
    discriminator = {"_class_name": "NLayerDiscriminator", "num_layers": 3, "base_channels": 16, "use_actnorm": False}
    (folder / "discriminator" / "config.json").write_text(json.dumps(discriminator))
    (folder / "optimizer.bin").write_bytes(os.urandom(256))
    (folder / "random_states_0.pkl").write_bytes(os.urandom(64))
    if marker_step is not False:
        marker = {"format": 2, "step": step if marker_step is None else marker_step}
        if files:
            marker["files"] = checkpointing.file_manifest(str(folder))
        (folder / checkpointing.COMPLETE_MARKER).write_text(json.dumps(marker))
    return folder


def _png_folder(root: Path) -> None:
    root.mkdir()
    for index in range(3):
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / f"{index}.png")


def _synthetic_folder(root: Path) -> None:
    from radiodiff_vae.data import write_synthetic_folder

    write_synthetic_folder(root, num_maps=12, num_tx=1, resolution=32, show_progress=False)


# name -> (prepare(tmp_path) -> extra flags, words the line must hold)
CASES = {
    "batch_size_0": (lambda tmp: ["--train_batch_size", "0"], "--train_batch_size must be >= 1, got 0"),
    "checkpointing_steps_0": (lambda tmp: ["--checkpointing_steps", "0"], "--checkpointing_steps must be >= 1"),
    "resolution_60": (lambda tmp: ["--resolution", "60"], "is 60, not divisible by the tiny preset's downsampling factor 8"),
    "resolution_16": (lambda tmp: ["--resolution", "16"], "below the discriminator's minimum 24"),
    "seed_-1": (lambda tmp: ["--seed", "-1"], "--seed must be between 0 and 2**32 - 1"),
    "seed_2**32": (lambda tmp: ["--seed", str(2**32)], "--seed must be between 0"),
    "adam_beta1_1.5": (lambda tmp: ["--adam_beta1", "1.5"], "--adam_beta1 must be in [0, 1), got 1.5"),
    "adam_epsilon_0": (lambda tmp: ["--adam_epsilon", "0"], "--adam_epsilon must be > 0"),
    "kl_weight_-1": (lambda tmp: ["--kl_weight", "-1"], "--kl_weight must be >= 0"),
    "disc_start_-5": (lambda tmp: ["--disc_start", "-5"], "--disc_start must be >= 0, got -5"),
    "max_grad_norm_nan": (lambda tmp: ["--max_grad_norm", "nan"], "--max_grad_norm must be a finite number, got nan"),
    "learning_rate_inf": (lambda tmp: ["--learning_rate", "inf"], "--learning_rate must be a finite number"),
    "simulation_without_data": (lambda tmp: ["--simulation", "DPM"], "--simulation 'DPM' applies to --data_dir"),
    "unknown_flag": (lambda tmp: ["--learning_rat", "1"], "unrecognized arguments: --learning_rat"),
    "bad_choice": (lambda tmp: ["--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
    "config_missing": (lambda tmp: ["--config", "nowhere.yaml"], "configuration file 'nowhere.yaml' does not exist"),
    "config_not_yaml": (
        lambda tmp: (tmp / "c.yaml").write_text("learning_rate: [1e-4\n  seed: {") and ["--config", "c.yaml"],
        "is not valid YAML",
    ),
    "config_unknown_key": (
        lambda tmp: (tmp / "c.yaml").write_text("learning_rat: 1.0e-4\n") and ["--config", "c.yaml"],
        "unknown key 'learning_rat' (did you mean 'learning_rate'?)",
    ),
    "config_wrong_type": (
        lambda tmp: (tmp / "c.yaml").write_text("train_batch_size: eight\n") and ["--config", "c.yaml"],
        "key 'train_batch_size': invalid int value: 'eight'",
    ),
    "data_dir_empty": (lambda tmp: (tmp / "data").mkdir() or ["--data_dir", "data"], "no simulation folder data/gain/IRT4"),
    "data_dir_of_pngs": (lambda tmp: _png_folder(tmp / "data") or ["--data_dir", "data"], "no simulation folder"),
    "data_dir_wrong_simulation": (
        lambda tmp: _synthetic_folder(tmp / "data") or ["--data_dir", "data", "--simulation", "DPM"],
        "simulations found under data/gain: ['synthetic']",
    ),
    "data_dir_a_file": (
        lambda tmp: (tmp / "data.txt").write_text("maps") and ["--data_dir", "data.txt"],
        "--data_dir 'data.txt' is not a folder",
    ),
    "resume_missing": (lambda tmp: ["--resume_from_checkpoint", "checkpoint-7"], "'checkpoint-7': no such folder"),
    "resume_not_checkpoint_n": (
        lambda tmp: (tmp / "out" / "weights").mkdir(parents=True) or ["--resume_from_checkpoint", "out/weights"],
        "expected a folder named checkpoint-N",
    ),
    "resume_no_marker": (
        lambda tmp: fake_checkpoint(tmp / "out", 3, marker_step=False) and ["--resume_from_checkpoint", "checkpoint-3"],
        "the checkpoint is incomplete",
    ),
    "resume_marker_of_another_step": (
        lambda tmp: fake_checkpoint(tmp / "out", 3, marker_step=2) and ["--resume_from_checkpoint", "checkpoint-3"],
        "the checkpoint is incomplete",
    ),
    "resume_other_architecture": (
        lambda tmp: fake_checkpoint(tmp / "out", 3, vae_config=PRESETS["radiodiff-vae"])
        and ["--resume_from_checkpoint", "latest"],
        "its vae has another architecture (block_out_channels [128, 256, 512] there, (32, 64, 128) here",
    ),
    "resume_damaged": (
        lambda tmp: fake_checkpoint(tmp / "out", 2)
        and (fake_checkpoint(tmp / "out", 4) / "optimizer.bin").write_bytes(b"cut")
        and ["--resume_from_checkpoint", "checkpoint-4"],
        "optimizer.bin has 3 bytes, 256 when it was written; resume from the previous checkpoint, out/checkpoint-2",
    ),
    "output_dir_under_a_file": (
        lambda tmp: (tmp / "file").write_text("x") and ["--output_dir", "file/run"],
        "--output_dir 'file/run'",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_writes_nothing(case, runner, tmp_path):
    prepare, expected = CASES[case]
    extra = prepare(tmp_path)
    before = snapshot(tmp_path)
    finished = runner.train(TINY + extra, tmp_path, environment=OFFLINE)
    assert_one_line_error(finished, expected)
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(runner, tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    finished = runner.train(TINY + ["--output_dir", "ro/run"], tmp_path, environment=OFFLINE)
    assert_one_line_error(finished, "is not writable (no write permission")


def test_second_run_into_a_busy_output_folder_is_refused(runner, tmp_path):
    (tmp_path / "out").mkdir()
    with checkpointing.acquire_output_lock(str(tmp_path / "out")):
        before = snapshot(tmp_path)
        finished = runner.train(TINY + ["--max_train_steps", "1"], tmp_path, environment=OFFLINE)
        assert_one_line_error(finished, "--output_dir out is in use by another training run", f"PID {os.getpid()} on")
        assert snapshot(tmp_path) == before


def test_truncated_map_in_training_names_the_file_and_the_checkpoint(runner, tmp_path):
    _synthetic_folder(tmp_path / "data")
    fake_checkpoint(tmp_path / "out", 1)
    # Truncated files keep their header, so the dataset opens; the first map read fails.
    for gain in (tmp_path / "data" / "gain" / "synthetic").glob("*.png"):
        gain.write_bytes(gain.read_bytes()[: gain.stat().st_size // 2])
    flags = ["--data_dir", "data", "--simulation", "synthetic", "--split_scheme", "disjoint"]
    finished = runner.train(TINY + flags + ["--resume_from_checkpoint", "latest"], tmp_path, environment=OFFLINE)
    line = [line for line in finished.lines if "error" in line]
    assert "Traceback" not in finished.output and finished.code == 2, finished.output
    assert len(line) == 1 and line[0].startswith("train_vae.py: error: "), finished.output
    assert "data/gain/synthetic/" in line[0] and "cannot be read as an image" in line[0]
    assert "the checkpoints are intact" in line[0] and "resume from out/checkpoint-1" in line[0]
    checkpointing.verify_checkpoint(str(tmp_path / "out" / "checkpoint-1"))


@pytest.mark.slow
def test_accelerate_launch_prints_the_childs_line(tmp_path):
    """The real command line (no forkserver): under ``accelerate launch -q`` the child's line and nothing else."""
    accelerate = Path(sys.executable).with_name("accelerate")
    launched = subprocess.run(
        [str(accelerate), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-q", str(TRAIN_SCRIPT), "--seed", "-1"],
        cwd=tmp_path, env={**os.environ, **OFFLINE}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # accelerate's launcher turns any failure of the child into its own exit code 1
    assert launched.returncode == 1 and launched.stdout == "", launched.stderr
    assert launched.stderr == "train_vae.py: error: --seed must be between 0 and 2**32 - 1 = 4294967295, got -1\n"
    assert os.listdir(tmp_path) == []


def test_an_internal_error_keeps_its_traceback(runner, tmp_path):
    """A ValueError that no input check raised (here: injected into the training step) is a bug: its traceback is
    printed and the exit code is not 2."""
    wrapper = tmp_path / "buggy_train_vae.py"
    wrapper.write_text(
        "import runpy\n"
        "from radiodiff_vae.training import VAEGANStep\n"
        "def broken(*args, **kwargs):\n"
        "    raise ValueError('internal bug in the step')\n"
        "VAEGANStep.__call__ = broken\n"
        f"runpy.run_path({str(TRAIN_SCRIPT)!r}, run_name='__main__')\n"
    )
    finished = runner.run(str(wrapper), TINY + ["--max_train_steps", "1"], tmp_path, environment=OFFLINE)
    assert finished.code == 1, finished.output
    assert "Traceback (most recent call last)" in finished.output and "in broken" in finished.output
    assert "ValueError: internal bug in the step" in finished.output
    assert "train_vae.py: error:" not in finished.output


def test_a_map_that_is_not_8_bit_stops_the_run_with_one_line_on_stderr(runner, tmp_path):
    """Gain files holding float32 values (a TIFF under a .png name): the run has locked and created its output
    folder when the first map is read. It prints one line on stderr, removes the folder (empty once the lock and its
    files are gone) and nothing more: the lock is released before the folder goes (no 'Exception ignored')."""
    _synthetic_folder(tmp_path / "data")
    for gain in (tmp_path / "data" / "gain" / "synthetic").glob("*.png"):
        Image.fromarray(np.full((32, 32), 0.5, np.float32)).save(gain, format="TIFF")
    flags = ["--data_dir", "data", "--simulation", "synthetic", "--split_scheme", "disjoint"]
    finished = runner.train(TINY + flags, tmp_path, environment=OFFLINE, separate_stderr=True)
    assert finished.code == 2, finished.output + finished.stderr
    (line,) = finished.stderr.splitlines()
    assert line.startswith("train_vae.py: error: data/gain/synthetic/") and "is a mode-F image" in line, line
    assert "expected single-channel 8-bit grey" in line and line.endswith("; no checkpoint was saved yet"), line
    assert "Accelerator" not in finished.stderr and "Distributed environment" in finished.output  # logs: stdout
    assert not (tmp_path / "out").exists()


def test_a_finished_run_leaves_no_lock_files(runner, tmp_path):
    arguments = TINY + ["--max_train_steps", "1", "--validation_steps", "10"]
    finished = runner.train(arguments, tmp_path, environment=OFFLINE)
    assert finished.code == 0, finished.output
    names = set(os.listdir(tmp_path / "out"))
    assert {"config.json", "diffusion_pytorch_model.safetensors", "README.md"} <= names
    assert not names & checkpointing.LOCK_FILES and not [name for name in names if name.startswith(".")]
