"""examples/train_vae.py end to end on the CPU: a short two-phase run, resuming it to the same weights, the non-finite
guard, the example configurations, and two processes (DDP over gloo) that must end with identical weights.

Runs use the `tiny` preset on 32x32 synthetic maps, batch 2, no LPIPS, a handful of steps, with the discriminator
switched on in the middle of the run.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import load_example, reset_accelerate_state
from safetensors.torch import load_file

from hub_server import HubServer
from radiodiff_vae.errors import InputNotFoundError, InvalidArgumentError
from radiodiff_vae.training import checkpointing, debug

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "examples" / "train_vae.py"
CONFIGS = REPO_ROOT / "examples" / "configs"
WEIGHTS = "diffusion_pytorch_model.safetensors"

# 8 cities x 2 transmitters = 16 maps = 8 batches of 2 = 4 optimizer steps per epoch (accumulation 2): the checkpoint
# at step 3 is in the middle of an epoch, and the discriminator starts at step 2.
TINY_RUN = [
    "--preset", "tiny", "--resolution", "32", "--synthetic_num_maps", "8", "--synthetic_num_tx", "2",
    "--num_validation_maps", "2", "--num_validation_images", "2", "--scaling_factor_maps", "4",
    "--train_batch_size", "2", "--gradient_accumulation_steps", "2", "--perceptual_weight", "0",
    "--disc_start", "2", "--disc_base_channels", "16", "--learning_rate", "1e-3", "--lr_end", "1e-4",
    "--logging_steps", "2", "--report_to", "tensorboard", "--seed", "3",
]  # fmt: skip


train_vae = load_example("train_vae.py", "train_vae_under_test")


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def train(argv, nonfinite_steps=()) -> int:
    """``examples/train_vae.py ARGV`` in this process, instrumented (radiodiff_vae.training.debug): it writes
    output_dir/debug/rank-<i>.json, and its generator objective is NaN at ``nonfinite_steps``."""
    with debug.instrumented(trace=True, nonfinite_steps=nonfinite_steps):
        return train_vae.main(train_vae.parse_args(argv))


def _trace(output_dir: Path, rank: int = 0) -> dict:
    return json.loads((output_dir / "debug" / f"rank-{rank}.json").read_text())


def _scalars(output_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (output_dir / "logs" / "radiodiff-vae").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    scalars = {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }
    return scalars, accumulator.Tags()["images"]


# ------------------------------------------------------------------------------------------------------------------
# arguments
@pytest.mark.parametrize(
    "extra, error, message",
    [
        (["--push_to_hub"], InvalidArgumentError, "--push_to_hub needs --hub_model_id"),
        (["--learning_rate", "1e-4", "--lr_end", "1e-4"], InvalidArgumentError, "--lr_end must be >= 0 and below"),
        (["--data_dir", "/no/such/RadioMapSeer"], InputNotFoundError, "--data_dir '/no/such/RadioMapSeer'"),
        (["--data_dir", ".", "--dataset_name", "x/y"], InvalidArgumentError, "either --data_dir"),
        (["--train_batch_size", "0"], InvalidArgumentError, "--train_batch_size must be >= 1, got 0"),
        (["--max_grad_norm", "-1"], InvalidArgumentError, "--max_grad_norm must be >= 0"),
        (["--random_flip"], InvalidArgumentError, "--random_flip applies to RadioMapSeer"),
        (["--num_tx", "2"], InvalidArgumentError, "--num_tx applies to RadioMapSeer .--data_dir. only, got it with synthetic"),
        (["--dataset_name", "u/d", "--num_tx", "2"], InvalidArgumentError, "--num_tx .* only, got it with --dataset_name u/d"),
        (["--simulation", "DPM"], InvalidArgumentError, "--simulation 'DPM' applies to --data_dir or --dataset_name"),
    ],
)
def test_bad_arguments_fail_before_any_work(extra, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(")):
        train_vae.parse_args(TINY_RUN + extra)


def test_mistyped_flags_are_errors(capsys):
    with pytest.raises(SystemExit):
        train_vae.parse_args(TINY_RUN + ["--learning_rat", "1"])  # not an abbreviation of --learning_rate
    assert "unrecognized arguments: --learning_rat" in capsys.readouterr().err


def test_resume_from_a_missing_checkpoint_fails_before_training(tmp_path):
    with pytest.raises(InputNotFoundError, match="checkpoint-7"):
        train(TINY_RUN + ["--output_dir", str(tmp_path), "--resume_from_checkpoint", "checkpoint-7"])
    assert not list(tmp_path.glob("checkpoint-*")) and not (tmp_path / "logs").exists()


def test_report_configuration_is_the_reports():
    args = train_vae.parse_args(["--config", str(CONFIGS / "radiodiff_vae.yaml")])
    assert (args.preset, args.resolution, args.train_batch_size, args.gradient_accumulation_steps) == (
        "radiodiff-vae", 320, 8, 2
    )
    assert (args.learning_rate, args.lr_end, args.lr_scheduler, args.max_train_steps) == (
        5e-6, 5e-7, "polynomial", 150_000
    )
    assert (args.kl_weight, args.perceptual_weight, args.disc_start, args.disc_factor, args.disc_weight) == (
        1e-6, 1.0, 50_001, 0.5, 0.5
    )
    assert (args.gan_loss, args.disc_num_layers, args.mixed_precision, args.freeze_logvar) == ("hinge", 3, "no", False)
    assert args.max_grad_norm == 0 and train_vae.build_parser().get_default("max_grad_norm") == 0  # no clipping
    # departure (documented in the YAML): 3 kept plus the last phase-1 checkpoint, not all 30
    assert (args.checkpointing_steps, args.checkpoints_total_limit, args.logging_steps) == (5000, 3, 100)

    quick = train_vae.parse_args(["--config", str(CONFIGS / "quickstart.yaml"), "--max_train_steps", "7"])
    assert (quick.preset, quick.perceptual_weight, quick.data_dir, quick.dataset_name) == ("tiny-f4", 0.0, None, None)
    assert quick.max_train_steps == 7  # the command line wins
    assert quick.max_grad_norm == 0
    # the quick start is phase 1 only; the longer CPU recipe runs both phases
    assert quick.disc_start > train_vae.parse_args(["--config", str(CONFIGS / "quickstart.yaml")]).max_train_steps
    small = train_vae.parse_args(["--config", str(CONFIGS / "small_cpu.yaml")])
    assert small.preset == "tiny-f4" and 0 < small.disc_start < small.max_train_steps and small.use_ema


def test_every_flag_is_documented():
    documentation = (REPO_ROOT / "docs" / "training.md").read_text()
    flags = [action.option_strings[0] for action in train_vae.build_parser()._actions if action.dest != "help"]
    assert len(flags) > 60
    assert [flag for flag in flags if f"`{flag}`" not in documentation] == []


# ------------------------------------------------------------------------------------------------------------------
# a full run, and the same run resumed from its middle checkpoint
@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """Six steps with EMA, a NaN injected at step 1, checkpoints at 3 and 6, and --push_to_hub to a local Hub."""
    import huggingface_hub.constants

    output_dir = tmp_path_factory.mktemp("full")
    reset_accelerate_state()
    patch = pytest.MonkeyPatch()
    with HubServer() as hub:
        patch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        patch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # the test Hub has LFS, not Xet
        patch.setenv("HF_HOME", str(output_dir.parent / "hf_home"))
        code = train(
            TINY_RUN
            + ["--output_dir", str(output_dir), "--max_train_steps", "6", "--checkpointing_steps", "3"]
            + ["--validation_steps", "3", "--use_ema", "--ema_decay", "0.5"]
            + ["--push_to_hub", "--hub_model_id", "test-user/tiny-radio-vae"],
            nonfinite_steps={1},
        )
        repo = hub.repos[("model", "test-user/tiny-radio-vae")]
        uploaded = sorted(repo.commits[-1].files)
    patch.undo()
    return output_dir, code, uploaded


def test_full_run_writes_model_card_checkpoints_logs_and_uploads(full_run):
    output_dir, code, uploaded = full_run
    assert code == 0
    umask = os.umask(0)
    os.umask(umask)
    for name in ["config.json", WEIGHTS, "sample.png", "training_args.json", "validation/step-3.png"]:
        assert (output_dir / name).is_file(), name
        assert (output_dir / name).stat().st_mode & 0o777 == 0o666 & ~umask, name  # atomic writes keep the umask
    assert (output_dir / "README.md").is_file()
    assert [step for step, _ in checkpointing.list_checkpoints(str(output_dir))] == [3, 6]
    assert not list(output_dir.glob("*.tmp"))

    config = json.loads((output_dir / "config.json").read_text())
    assert config["sample_size"] == 32 and config["block_out_channels"] == [32, 64, 128]
    assert config["scaling_factor"] != 1.0 and 0.01 < config["scaling_factor"] < 100  # measured 1/std

    card = (output_dir / "README.md").read_text()
    assert "| psnr |" in card and "| ssim |" in card and "sample.png" in card and "RADIODIFF_VAE" not in card
    # 32x32 maps, latent 3x4x4 = 48 values: the card sets the model beside a 7x7 thumbnail
    assert "| metric | value | resize baseline | unit |" in card and "area-resize to 7x7" in card

    # The saved model is the EMA of the weights, not the weights themselves.
    ema_weights = load_file(output_dir / WEIGHTS)
    raw_weights = load_file(output_dir / "checkpoint-6" / "vae" / WEIGHTS)
    assert ema_weights.keys() == raw_weights.keys()
    assert any(not torch.equal(ema_weights[key], raw_weights[key]) for key in raw_weights)

    scalars, images = _scalars(output_dir)
    for tag in ["train/nll", "train/kl", "train/rec", "train/logvar", "train/lr_autoencoder", "train/images_per_second",
                "train/seconds_per_step", "train/peak_memory_mib", "validation/psnr", "validation/ssim"]:  # fmt: skip
        assert tag in scalars, tag
    assert [step for step, _ in scalars["train/nll"]] == [2, 4, 6]
    assert [value for _, value in scalars["train/phase"]] == [1, 2, 2]
    assert [step for step, _ in scalars["train/disc_loss"]] == [4, 6]  # logged once the discriminator runs
    assert scalars["train/nonfinite_steps_skipped"][-1][1] == 1
    rates = [value for _, value in scalars["train/lr_autoencoder"]]
    assert rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(1e-4)
    # The discriminator's schedule starts at --disc_start (2): full rate there, then down to lr_end over steps 2..6.
    assert [value for _, value in scalars["train/lr_discriminator"]] == pytest.approx([1e-3, 5.5e-4, 1e-4])
    assert [step for step, _ in scalars["validation/psnr"]] == [3, 6]
    gaps = [value for _, value in scalars["validation/psnr_gap_db"]]
    baseline = [value for _, value in scalars["validation/baseline_psnr"]]
    model = [value for _, value in scalars["validation/psnr"]]
    assert gaps == pytest.approx([m - b for m, b in zip(model, baseline)], abs=1e-4)
    assert baseline[0] == pytest.approx(baseline[1])  # the same maps, the same thumbnail, at every validation
    assert images == ["validation/input_reconstruction_error"]

    assert _trace(output_dir)["nonfinite_steps_skipped"] == 1
    assert {"README.md", "config.json", WEIGHTS, "sample.png"} <= set(uploaded)
    assert not [name for name in uploaded if name.startswith(("checkpoint-", "logs", "validation", "debug"))]
    assert not [name for name in uploaded if ".tmp" in name]
    assert not set(uploaded) & checkpointing.LOCK_FILES
    assert not set(os.listdir(output_dir)) & checkpointing.LOCK_FILES  # the finished folder holds no lock


@pytest.mark.slow
def test_resumed_run_ends_with_the_same_weights(full_run, tmp_path):
    """Steps 0-2 (phase 1, then the discriminator joins at 2) come from the full run's checkpoint-3; steps 3-5 are
    trained again and must give bitwise the same weights, EMA, logvar and data order."""
    full_dir, code, _ = full_run
    assert code == 0
    shutil.copytree(full_dir / "checkpoint-3", tmp_path / "checkpoint-3")
    code = train(
        TINY_RUN
        + ["--output_dir", str(tmp_path), "--max_train_steps", "6", "--checkpointing_steps", "3"]
        + ["--validation_steps", "3", "--use_ema", "--ema_decay", "0.5"]
        + ["--resume_from_checkpoint", "latest"],
        nonfinite_steps={1},
    )
    assert code == 0
    full, resumed = _trace(full_dir), _trace(tmp_path)
    assert resumed["global_step"] == full["global_step"] == 6
    assert resumed["names"] == full["names"][3 * 2 * 2 :]  # the maps the full run saw after step 3, in order
    assert resumed["vae_sha256"] == full["vae_sha256"]
    assert resumed["discriminator_parameters_sha256"] == full["discriminator_parameters_sha256"]
    assert resumed["logvar"] == full["logvar"] and resumed["nonfinite_steps_skipped"] == 1

    full_model, resumed_model = load_file(full_dir / WEIGHTS), load_file(tmp_path / WEIGHTS)  # EMA weights
    assert all(torch.equal(full_model[key], resumed_model[key]) for key in full_model)
    for name in ["optimizer.bin", "optimizer_1.bin"]:  # Adam moments of both models
        saved = [
            torch.load(folder / "checkpoint-6" / name, weights_only=False)["state"] for folder in (full_dir, tmp_path)
        ]
        assert saved[0].keys() == saved[1].keys() and len(saved[0]) > 0
        for index in saved[0]:
            assert torch.equal(saved[0][index]["exp_avg_sq"], saved[1][index]["exp_avg_sq"])
    full_config, resumed_config = (json.loads((d / "config.json").read_text()) for d in (full_dir, tmp_path))
    assert full_config["scaling_factor"] == resumed_config["scaling_factor"]


def test_nonfinite_streak_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, caplog):
    arguments = TINY_RUN + ["--output_dir", str(tmp_path), "--max_train_steps", "4", "--checkpointing_steps", "1"]
    arguments += ["--validation_steps", "100", "--report_to", "none"]
    code = train(arguments + ["--max_nonfinite_steps", "2"], nonfinite_steps={1, 2})
    assert code == 3
    assert "2 consecutive optimizer steps with a non-finite loss" in caplog.text
    assert [step for step, _ in checkpointing.list_checkpoints(str(tmp_path))] == [1, 2]
    assert not (tmp_path / "config.json").exists()  # no final model from a failed run
    # The skipped step 1 changed no weight: checkpoint-2 holds the weights of checkpoint-1.
    after_one, after_two = (load_file(tmp_path / f"checkpoint-{n}" / "vae" / WEIGHTS) for n in (1, 2))
    assert all(torch.equal(after_one[key], after_two[key]) for key in after_one)

    # The run continues from there once the cause is gone.
    reset_accelerate_state()
    assert train(arguments + ["--resume_from_checkpoint", "latest"]) == 0
    # step 2 was not checkpointed: the resumed run counts the skipped step 1 only
    assert _trace(tmp_path)["global_step"] == 4 and _trace(tmp_path)["nonfinite_steps_skipped"] == 1
    assert (tmp_path / "config.json").is_file()


@pytest.mark.parametrize(
    "extra",
    [
        # fp16: the gradient scaler unscales both optimizers once; the discriminator's clipping must not unscale again
        ["--mixed_precision", "fp16"],
        ["--mixed_precision", "bf16", "--gradient_checkpointing", "--channels_last", "on", "--cudnn_benchmark", "on"],
        ["--gradient_checkpointing", "--gradient_checkpointing_scope", "all"],
        ["--max_grad_norm", "0", "--lr_scheduler", "cosine", "--lr_warmup_steps", "1", "--disc_use_actnorm"]
        + ["--gan_loss", "vanilla", "--freeze_logvar"],
    ],
)
@pytest.mark.slow
def test_precision_and_option_variants_train_both_phases(tmp_path, extra):
    arguments = TINY_RUN + ["--output_dir", str(tmp_path), "--max_train_steps", "3", "--disc_start", "1"]
    arguments += ["--checkpointing_steps", "100", "--validation_steps", "100", "--report_to", "none"]
    assert train(arguments + extra) == 0
    trace = _trace(tmp_path)
    assert trace["global_step"] == 3 and trace["nonfinite_steps_skipped"] == 0
    assert (trace["logvar"] == 0.0) == ("--freeze_logvar" in extra)
    assert json.loads((tmp_path / "config.json").read_text())["scaling_factor"] != 1.0


@pytest.mark.parametrize("source", ["folder", "folder_as_dataset", "saved_hf_dataset"])
def test_radiomapseer_folder_and_hf_dataset(tmp_path, source):
    """10 synthetic 32x32 maps in RadioMapSeer's layout, with RadioUNet's disjoint split (training never sees the
    validation map): read by --data_dir, by --dataset_name (load_radio_dataset on the folder), and as a 🤗 dataset
    written by radiomapseer_to_hf + save_to_disk."""
    from radiodiff_vae.data import radiomapseer_to_hf, split_map_ids, write_synthetic_folder

    root = write_synthetic_folder(tmp_path / "seer", num_maps=10, num_tx=1, resolution=32, show_progress=False)
    train_ids = {str(map_id) for map_id in split_map_ids(range(1, 11), "train", "disjoint")}
    (validation_id,) = split_map_ids(range(1, 11), "val", "disjoint")
    assert str(validation_id) not in train_ids
    if source == "folder":
        data = ["--data_dir", str(root)]
    elif source == "folder_as_dataset":
        data = ["--dataset_name", str(root)]
    else:
        hf_folder = tmp_path / "hf"
        converted = radiomapseer_to_hf(root, simulation="synthetic", split_scheme="disjoint", cache_dir=tmp_path / "c")
        converted.save_to_disk(str(hf_folder))
        data = ["--dataset_name", str(hf_folder)]
    output_dir = tmp_path / "run"
    arguments = TINY_RUN + data + ["--simulation", "synthetic", "--split_scheme", "disjoint"]
    arguments += ["--output_dir", str(output_dir), "--max_train_steps", "2", "--report_to", "none"]
    assert train(arguments + ["--checkpointing_steps", "100", "--validation_steps", "100"]) == 0
    names = _trace(output_dir)["names"]
    assert len(names) == 2 * 2 * 2 and {name.split("_")[0] for name in names} <= train_ids
    card = (output_dir / "README.md").read_text()
    assert ("RadioMapSeer-synthetic" if source == "folder" else data[1]) in card


# ------------------------------------------------------------------------------------------------------------------
# two processes
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_stay_identical_shard_the_data_and_write_once(tmp_path):
    environment = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    environment[debug.TRACE_VARIABLE] = "1"
    environment[debug.NONFINITE_STEPS_VARIABLE] = "1"  # a skipped step must not desync DDP
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), "-m", "radiodiff_vae.training.debug", str(SCRIPT)] + TINY_RUN  # fmt: skip
    command += ["--output_dir", str(tmp_path), "--max_train_steps", "4", "--checkpointing_steps", "2"]
    command += ["--validation_steps", "2"]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]

    first, second = _trace(tmp_path, 0), _trace(tmp_path, 1)
    assert (first["num_processes"], second["num_processes"]) == (2, 2)
    # DDP averaged the gradients (and logvar's, which lives outside DDP): the replicas never drifted apart.
    assert first["vae_sha256"] == second["vae_sha256"]
    assert first["discriminator_parameters_sha256"] == second["discriminator_parameters_sha256"]
    assert first["logvar"] == second["logvar"] != 0.0
    assert first["nonfinite_steps_skipped"] == second["nonfinite_steps_skipped"] == 1
    # Epoch 0 is 16 maps: 2 steps x 2 micro-batches x 2 maps on each process, without overlap.
    epoch_first, epoch_second = set(first["names"][:8]), set(second["names"][:8])
    assert len(epoch_first) == len(epoch_second) == 8 and not epoch_first & epoch_second

    # One checkpoint per step, with both processes' RNG states; one TensorBoard run; one model.
    assert [step for step, _ in checkpointing.list_checkpoints(str(tmp_path))] == [2, 4]
    assert sorted(p.name for p in (tmp_path / "checkpoint-4").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"
    ]
    assert not list(tmp_path.glob("*.tmp"))
    assert len(list((tmp_path / "logs" / "radiodiff-vae").glob("events.out.tfevents.*"))) == 1
    scalars, _ = _scalars(tmp_path)
    assert [step for step, _ in scalars["train/nll"]] == [2, 4]
    assert (tmp_path / WEIGHTS).is_file() and (tmp_path / "README.md").is_file()


def test_overlapping_validation_is_called_so_and_maps_outside_training_are_scored(tmp_path):
    """RadioDiff's split scheme validates on training maps: the card says so, and the run also scores RadioUNet's
    disjoint test split. With clipping on, each group's clip ratio is logged (logvar on its own)."""
    from radiodiff_vae.data import write_synthetic_folder

    root = write_synthetic_folder(tmp_path / "seer", num_maps=14, num_tx=1, resolution=32, show_progress=False)
    output_dir = tmp_path / "run"
    arguments = TINY_RUN + ["--data_dir", str(root), "--simulation", "synthetic", "--output_dir", str(output_dir)]
    arguments += ["--max_train_steps", "1", "--logging_steps", "1", "--max_grad_norm", "1"]
    assert train(arguments + ["--checkpointing_steps", "100", "--validation_steps", "100"]) == 0
    card = (output_dir / "README.md").read_text()
    assert "validation maps that overlap the training maps (split scheme radiodiff)" in card
    assert "held-out" not in card
    assert re.search(r"On [1-9]\d* maps outside training \(RadioUNet's disjoint test split.*: mae [\d.]+, nmse", card)
    scalars, _ = _scalars(output_dir)
    assert "test/psnr" in scalars and "validation/psnr" in scalars
    for group in ["autoencoder", "logvar"]:
        (step, ratio), = scalars[f"train/clip_ratio_{group}"]
        (_, norm), = scalars[f"train/grad_norm_{group}"]
        assert step == 1 and ratio == pytest.approx(norm)  # max_grad_norm 1
    assert "train/clip_ratio_discriminator" not in scalars  # phase 1: the discriminator has no gradient


def test_the_test_hooks_are_not_flags_and_refuse_bad_values(tmp_path, monkeypatch):
    help_text = train_vae.build_parser().format_help()
    assert "--debug" not in help_text and "nonfinite_steps" not in help_text.replace("max_nonfinite_steps", "")
    monkeypatch.setenv(debug.NONFINITE_STEPS_VARIABLE, "1,x")
    with pytest.raises(InvalidArgumentError, match="RADIODIFF_VAE_NONFINITE_STEPS takes optimizer steps >= 0"):
        debug.nonfinite_steps()
    monkeypatch.setenv(debug.NONFINITE_STEPS_VARIABLE, " 3, 5 ")
    assert debug.nonfinite_steps() == {3, 5}
