"""examples/train_radiodiff.py end to end on the CPU: a short latent-diffusion run writes a pipeline that loads and
constructs maps, resuming it from its middle checkpoint gives the same weights bit for bit (EMA on), the direct
baseline trains through the same loop, --max_train_seconds stops the run, and bad input is one line with exit code 2.

Runs use a `tiny-f4` VAE (random weights) at 32x32, 8 synthetic maps (4 cities x 2 transmitters), batch 2 and a UNet
of 8/16 channels.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import load_example, reset_accelerate_state
from safetensors.torch import load_file

from process_runner import OFFLINE, ProcessRunner, assert_one_line_error
from radiodiff_vae import RadioDiffPipeline, RadioUNetPipeline
from radiodiff_vae.models.autoencoder_radio import RadioVAE
from radiodiff_vae.models.city_encoder import FEATURE_NAMES
from radiodiff_vae.training import checkpointing

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "examples" / "train_radiodiff.py"
CONFIGS = REPO_ROOT / "examples" / "configs"
WEIGHTS = "diffusion_pytorch_model.safetensors"
VAE_SEED = 5  # the seed the tiny VAE "was trained" with: its synthetic cities are the construction stage's

# 8 maps = 4 batches of 2 per epoch.
TINY_RUN = [
    "--synthetic_num_maps", "4", "--synthetic_num_tx", "2", "--num_validation_maps", "2",
    "--num_validation_images", "2", "--unet_block_out_channels", "8", "16", "--layers_per_block", "1",
    "--city_channels", "12", "--city_block_out_channels", "8", "8", "--ray_samples", "8", "--train_batch_size", "2",
    "--learning_rate", "1e-3", "--logging_steps", "1", "--validation_steps", "3", "--report_to", "tensorboard",
    "--seed", "3",
]  # fmt: skip

# 10 maps = 5 micro-batches = 3 optimizer steps per epoch (the last of a single micro-batch): the checkpoint at step 2
# is in the middle of the first epoch, step 4 in the second.
ACCUMULATING_RUN = TINY_RUN + [
    "--synthetic_num_maps", "5", "--gradient_accumulation_steps", "2", "--max_train_steps", "4",
    "--checkpointing_steps", "2", "--checkpoints_total_limit", "0", "--use_ema", "--ema_decay", "0.9",
]  # fmt: skip

train_radiodiff = load_example("train_radiodiff.py", "train_radiodiff_under_test")


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory) -> Path:
    """A tiny-f4 RadioVAE at 32x32 saved as train_vae.py would, with its training_args.json."""
    folder = tmp_path_factory.mktemp("vae")
    torch.manual_seed(0)
    RadioVAE.from_preset("tiny-f4", sample_size=32).save_pretrained(folder)
    (folder / "training_args.json").write_text(json.dumps({"seed": VAE_SEED, "data_dir": None, "dataset_name": None}))
    return folder


def run(argv) -> int:
    reset_accelerate_state()
    try:
        return train_radiodiff.main(train_radiodiff.parse_args(argv))
    finally:
        reset_accelerate_state()


def weights(folder: Path) -> dict:
    return {
        name: tensor for part in ("unet", "city_encoder") for name, tensor in load_file(folder / part / WEIGHTS).items()
    }


def assert_bit_equal(first: dict, second: dict) -> None:
    assert sorted(first) == sorted(second)
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert different == []


def scalars(output_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (output_dir / "logs" / "radiodiff-construction").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    found = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}
    return found, accumulator.Tags()["images"]


# ------------------------------------------------------------------------------------------------------------------
# arguments
def test_defaults_follow_the_mode_and_the_vae(vae_folder, tmp_path):
    latent = train_radiodiff.parse_args(["--pretrained_vae", str(vae_folder), "--output_dir", str(tmp_path)])
    assert (latent.unet_block_out_channels, latent.attention, latent.city_channels) == ([64, 128, 256], True, 32)
    assert latent.unet_norm_num_groups == 32
    # the VAE's synthetic cities and map size; the latent cache inside the output folder
    assert (latent.synthetic_seed, latent.resolution) == (VAE_SEED, 32)
    assert latent.latent_cache == str(tmp_path / "latents.safetensors")
    direct = train_radiodiff.parse_args(
        ["--pretrained_vae", str(vae_folder), "--output_dir", str(tmp_path), "--direct", "--seed", "9"]
    )
    assert (direct.unet_block_out_channels, direct.attention, direct.city_channels) == ([32, 64, 128], False, len(FEATURE_NAMES))
    quick = train_radiodiff.parse_args(
        ["--config", str(CONFIGS / "radiodiff_quickstart.yaml"), "--pretrained_vae", str(vae_folder)]
    )
    assert not quick.use_ema and quick.max_train_seconds > 0 and quick.prediction_type == "sample"
    assert quick.default_num_inference_steps == 1 and "wall_count" in quick.in_features
    assert quick.resolution == 64 and quick.data_dir is None  # the yaml's size wins over the VAE's


# ------------------------------------------------------------------------------------------------------------------
# a run, and the same run resumed from its middle checkpoint
@pytest.fixture(scope="module")
def full_run(vae_folder, tmp_path_factory) -> Path:
    """Four steps with EMA, accumulation 2 and checkpoints at steps 2 and 4."""
    output_dir = tmp_path_factory.mktemp("full")
    assert run(ACCUMULATING_RUN + ["--pretrained_vae", str(vae_folder), "--output_dir", str(output_dir)]) == 0
    return output_dir


def test_run_writes_a_pipeline_that_constructs_maps(full_run):
    assert sorted(path.name for path in full_run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not list(full_run.glob("*.lock")) and not list(full_run.glob("*.owner"))
    pipe = RadioDiffPipeline.from_pretrained(full_run)
    assert pipe.config.default_num_inference_steps == 4 and pipe.scheduler.config.prediction_type == "v_prediction"
    buildings = torch.zeros(3, 1, 32, 32)
    buildings[:, :, 4:10, 4:12] = 1
    maps = pipe(buildings, [(20, 20), (1, 30), (31, 0)], num_inference_steps=2, output_type="pt").images
    assert maps.shape == (3, 1, 32, 32) and maps.dtype == torch.float32
    assert 0 <= float(maps.min()) and float(maps.max()) <= 1
    # the EMA weights went into the pipeline, the raw ones into the checkpoint: they differ
    final, raw = weights(full_run), weights(full_run / "checkpoint-4")
    assert any(not torch.equal(final[name], raw[name]) for name in final)
    card = (full_run / "README.md").read_text()
    assert "RadioDiffPipeline" in card and "rmse_db" in card and "sample.png" in card
    assert (full_run / "validation" / "step-3.png").is_file() and (full_run / "validation" / "step-4.png").is_file()
    logged, images = scalars(full_run)
    assert [step for step, _ in logged["train/loss"]] == [1, 2, 3, 4]
    assert [step for step, _ in logged["validation/rmse_db"]] == [3, 4]
    assert all(0 < value < 100 for _, value in logged["validation/rmse_db"])
    assert "validation/psnr" in logged and images == ["validation/city_truth_constructed_error"]
    saved = json.loads((full_run / "training_args.json").read_text())
    assert saved["synthetic_seed"] == VAE_SEED and saved["unet_norm_num_groups"] == 8


def test_resume_gives_the_same_weights_bit_for_bit(full_run, vae_folder, tmp_path):
    shutil.copytree(full_run / "checkpoint-2", tmp_path / "checkpoint-2")
    argv = ACCUMULATING_RUN + [
        "--pretrained_vae", str(vae_folder), "--output_dir", str(tmp_path), "--resume_from_checkpoint", "latest",
        "--latent_cache", str(full_run / "latents.safetensors"),
    ]  # fmt: skip
    assert run(argv) == 0
    first, last = weights(full_run / "checkpoint-2"), weights(full_run / "checkpoint-4")
    assert any(not torch.equal(first[name], last[name]) for name in first)  # steps 3 and 4 changed the weights
    assert_bit_equal(weights(full_run / "checkpoint-4"), weights(tmp_path / "checkpoint-4"))  # trained weights
    assert_bit_equal(weights(full_run), weights(tmp_path))  # EMA weights, in the pipelines
    logged, _ = scalars(tmp_path)
    assert [step for step, _ in logged["train/loss"]] == [3, 4]


def test_resume_with_another_objective_is_refused(full_run, vae_folder):
    with pytest.raises(ValueError, match="trained for 'v_prediction', this run for 'epsilon'"):
        train_radiodiff.parse_args(
            TINY_RUN + ["--pretrained_vae", str(vae_folder), "--output_dir", str(full_run), "--prediction_type",
                        "epsilon", "--resume_from_checkpoint", "checkpoint-2"]
        )  # fmt: skip


# ------------------------------------------------------------------------------------------------------------------
# the direct baseline, and the time limit
def test_direct_baseline_trains_through_the_same_loop(vae_folder, tmp_path):
    argv = TINY_RUN + [
        "--pretrained_vae", str(vae_folder), "--output_dir", str(tmp_path), "--direct", "--max_train_steps", "2",
        "--checkpointing_steps", "2", "--city_channels", "5",
    ]  # fmt: skip
    assert run(argv) == 0
    assert not (tmp_path / "latents.safetensors").exists()  # no latent in pixel space
    pipe = RadioUNetPipeline.from_pretrained(tmp_path)
    maps = pipe(torch.zeros(2, 1, 32, 32), [(3, 4), (30, 1)], output_type="np").images
    assert maps.shape == (2, 32, 32, 1)
    logged, _ = scalars(tmp_path)
    assert [step for step, _ in logged["validation/rmse_db"]] == [2]
    assert (tmp_path / "checkpoint-2" / "unet" / WEIGHTS).is_file()
    assert not (tmp_path / "checkpoint-2" / "city_encoder").exists()  # the features alone: nothing to train


def test_max_train_seconds_stops_at_a_step_saves_and_uploads(vae_folder, tmp_path, hub, hub_endpoint, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    output_dir = tmp_path / "run"
    argv = TINY_RUN + [
        "--pretrained_vae", str(vae_folder), "--output_dir", str(output_dir), "--max_train_steps", "50",
        "--checkpointing_steps", "100", "--max_train_seconds", "1e-6", "--default_num_inference_steps", "1",
    ]  # fmt: skip
    assert run(argv + ["--push_to_hub", "--hub_model_id", "test-user/tiny-radiodiff"]) == 0
    assert [path.name for path in output_dir.glob("checkpoint-*")] == ["checkpoint-1"]  # saved where it stopped
    marker = checkpointing.read_checkpoint_marker(str(output_dir / "checkpoint-1"))
    assert marker["metadata"]["training_seconds"] > 0
    assert RadioDiffPipeline.from_pretrained(output_dir).config.default_num_inference_steps == 1
    uploaded = set(hub.repos[("model", "test-user/tiny-radiodiff")].commits[-1].files)
    assert {"model_index.json", "README.md", "sample.png", f"unet/{WEIGHTS}", f"vae/{WEIGHTS}"} <= uploaded
    assert not [name for name in uploaded if name.startswith(("checkpoint-", "logs", "validation", "latents"))]
    # resumed with the same budget: no step more, the pipeline saved again over the first one
    assert run(argv + ["--resume_from_checkpoint", "latest"]) == 0
    assert [path.name for path in output_dir.glob("checkpoint-*")] == ["checkpoint-1"]
    assert_bit_equal(weights(output_dir), weights(output_dir / "checkpoint-1"))


# ------------------------------------------------------------------------------------------------------------------
# bad input: one line, exit code 2, nothing written
@pytest.fixture(scope="module")
def runner():
    return ProcessRunner()


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--pretrained_vae", "no/such/vae/folder"], "--pretrained_vae 'no/such/vae/folder' does not exist"),
        (["--resolution", "30"], "--resolution is 30, not divisible by the VAE"),
        (["--resolution", "36"], "--resolution is 36, not divisible by the pipeline's (VAE x UNet)"),
        (["--prediction_type", "noise"], "argument --prediction_type: invalid choice: 'noise'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(runner, vae_folder, tmp_path, extra, words):
    argv = TINY_RUN + ["--pretrained_vae", str(vae_folder), "--output_dir", "out", "--max_train_steps", "1"] + extra
    finished = runner.run(str(SCRIPT), argv, tmp_path, environment=OFFLINE)
    assert_one_line_error(finished, words, prefix="train_radiodiff.py: error: ")
    assert list(tmp_path.iterdir()) == []  # no output folder
