"""Unit tests of radiodiff_vae.training: configuration files, atomic checkpoints, the non-finite guard, the
learning-rate schedule, step noise, gradient helpers and the validation grid. No training runs here (see
test_train_script.py)."""

import argparse
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import Accelerator
from conftest import reset_accelerate_state
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from radiodiff_vae.errors import CheckpointError, InputNotFoundError, InvalidArgumentError
from radiodiff_vae.training import (
    NonFiniteGuard,
    TrainingProgress,
    build_lr_scheduler,
    checkpointing,
    clip_grad_norms,
    epoch_length,
    find_latest_checkpoint,
    list_checkpoints,
    make_reconstruction_grid,
    parse_args_with_config,
    prune_checkpoints,
    remove_temporary_checkpoints,
    resolve_resume_checkpoint,
    resume_position,
    save_checkpoint,
    step_generator,
)
from radiodiff_vae.training.script import out_of_memory_message, save_final_model, tracker_config


# ------------------------------------------------------------------------------------------------------------------
# configuration files
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=str, default=None)
    parser.add_argument("--learning_rate", type=float, default=1.0)
    parser.add_argument("--max_train_steps", type=int, default=10)
    parser.add_argument("--lr_scheduler", type=str, default="constant", choices=["constant", "polynomial"])
    parser.add_argument("--use_ema", action="store_true")
    parser.add_argument("--hub_model_id", type=str, default=None)
    parser.add_argument("--steps", type=int, nargs="*", default=[])
    return parser


def _write_yaml(path: Path, content) -> str:
    path.write_text(yaml.safe_dump(content) if not isinstance(content, str) else content)
    return str(path)


def test_config_values_become_defaults_and_command_line_wins(tmp_path):
    # "5e-6" is a string for PyYAML and 1.0e4 a float: both must come out as the flag's type.
    config = _write_yaml(
        tmp_path / "c.yaml",
        "learning_rate: 5e-6\nmax_train_steps: 1.0e4\nlr_scheduler: polynomial\nuse_ema: true\nsteps: [3, 4]\n",
    )
    args = parse_args_with_config(_parser(), ["--config", config])
    assert args.learning_rate == 5e-6 and isinstance(args.learning_rate, float)
    assert args.max_train_steps == 10_000 and isinstance(args.max_train_steps, int)
    assert (args.lr_scheduler, args.use_ema, args.steps, args.config) == ("polynomial", True, [3, 4], config)

    args = parse_args_with_config(_parser(), ["--config", config, "--learning_rate", "0.25", "--steps", "7"])
    assert args.learning_rate == 0.25 and args.steps == [7]
    assert args.max_train_steps == 10_000  # untouched keys keep the file's value

    assert parse_args_with_config(_parser(), []).learning_rate == 1.0  # no file: parser defaults


@pytest.mark.parametrize(
    "content, message",
    [
        ("learning_rat: 1.0\n", "unknown key 'learning_rat' (did you mean 'learning_rate'?)"),
        ("learning_rate: fast\n", "key 'learning_rate': invalid float value: 'fast'"),
        ("max_train_steps: 2.5\n", "key 'max_train_steps': invalid int value: '2.5'"),
        ("lr_scheduler: cosine\n", "key 'lr_scheduler': invalid choice: 'cosine'"),
        ("steps: [3, x]\n", "key 'steps': invalid int value: 'x'"),
        ("learning_rate: [1, 2]\n", "key 'learning_rate': expected a single value, got [1, 2]"),
        ("use_ema: 1\n", "key 'use_ema': expected true or false, got 1"),
        ("max_train_steps: true\n", "key 'max_train_steps': expected a number, got the boolean True"),
        ("config: other.yaml\n", "cannot name another one"),
        ("- learning_rate\n", "must hold a mapping of flag names to values, got a list"),
    ],
)
def test_bad_config_files_name_the_key(tmp_path, content, message):
    config = _write_yaml(tmp_path / "bad.yaml", content)
    with pytest.raises(InvalidArgumentError) as error:
        parse_args_with_config(_parser(), ["--config", config])
    assert message in str(error.value)
    assert config in str(error.value)


def test_config_lists_and_switches(tmp_path):
    # one value for a list flag is a one-item list; ints written as strings or 1e1 convert; a switch can be false;
    # null is None
    parser = _parser()
    parser.add_argument("--pair", type=float, nargs=2, default=None)
    parser.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True)
    config = _write_yaml(
        tmp_path / "c.yaml", "steps: ['5', 1e1, -2]\nuse_ema: false\ntf32: false\npair: [1, 2.5]\nhub_model_id: null\n"
    )
    args = parse_args_with_config(parser, ["--config", config])
    assert (args.steps, args.use_ema, args.tf32) == ([5, 10, -2], False, False)
    assert (args.pair, args.hub_model_id) == ([1.0, 2.5], None)
    assert parse_args_with_config(parser, ["--config", config, "--tf32", "--use_ema"]).tf32 is True
    config = _write_yaml(tmp_path / "one.yaml", "steps: 4\n")
    assert parse_args_with_config(_parser(), ["--config", config]).steps == [4]
    config = _write_yaml(tmp_path / "bad.yaml", "pair: [1]\n")
    with pytest.raises(InvalidArgumentError, match="key 'pair': expected 2 arguments"):
        parse_args_with_config(parser, ["--config", config])


def test_missing_config_file(tmp_path):
    with pytest.raises(InputNotFoundError, match="nowhere.yaml"):
        parse_args_with_config(_parser(), ["--config", str(tmp_path / "nowhere.yaml")])


# ------------------------------------------------------------------------------------------------------------------
# checkpoints
@pytest.fixture
def accelerator():
    reset_accelerate_state()
    yield Accelerator(cpu=True)
    reset_accelerate_state()


def _prepared_linear(accelerator, value: float):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(value)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    return accelerator.prepare(model, optimizer)


def _fake_checkpoint(output_dir: Path, step: int, marker_step=None) -> Path:
    folder = output_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if marker_step is not None:
        (folder / checkpointing.COMPLETE_MARKER).write_text(json.dumps({"step": marker_step}))
    return folder


def test_latest_ignores_temporary_incomplete_and_mismatched_checkpoints(tmp_path):
    assert find_latest_checkpoint(str(tmp_path)) is None
    assert resolve_resume_checkpoint("latest", str(tmp_path)) is None  # starts fresh
    good = _fake_checkpoint(tmp_path, 2, marker_step=2)
    _fake_checkpoint(tmp_path, 10, marker_step=None)  # killed before the marker (older, non-atomic writer)
    _fake_checkpoint(tmp_path, 8, marker_step=4)  # a marker copied from elsewhere
    (tmp_path / "checkpoint-12.tmp").mkdir()  # killed while saving
    (tmp_path / "checkpoint-12.tmp" / checkpointing.COMPLETE_MARKER).write_text(json.dumps({"step": 12}))
    (tmp_path / "checkpoint-x").mkdir()

    assert [step for step, _ in list_checkpoints(str(tmp_path))] == [2]
    assert find_latest_checkpoint(str(tmp_path)) == str(good)
    assert resolve_resume_checkpoint("latest", str(tmp_path)) == str(good)
    assert resolve_resume_checkpoint("checkpoint-2", str(tmp_path)) == str(tmp_path / "checkpoint-2")

    with pytest.raises(CheckpointError, match="incomplete"):
        resolve_resume_checkpoint("checkpoint-10", str(tmp_path))
    with pytest.raises(CheckpointError, match="checkpoint-N"):
        resolve_resume_checkpoint(str(tmp_path / "checkpoint-x"), str(tmp_path))
    with pytest.raises(InputNotFoundError, match="checkpoint-99"):
        resolve_resume_checkpoint("checkpoint-99", str(tmp_path))

    assert remove_temporary_checkpoints(str(tmp_path)) == [str(tmp_path / "checkpoint-12.tmp")]
    assert not (tmp_path / "checkpoint-12.tmp").exists()
    assert (tmp_path / "checkpoint-10").exists()  # not ours to delete


def test_save_checkpoint_is_atomic_prunes_after_success_and_loads_back(tmp_path, accelerator):
    model, optimizer = _prepared_linear(accelerator, 1.0)
    first = save_checkpoint(accelerator, str(tmp_path), 5, total_limit=2, metadata={"phase": 1})
    marker = json.loads(Path(first, checkpointing.COMPLETE_MARKER).read_text())
    assert marker["step"] == 5 and marker["metadata"] == {"phase": 1} and marker["num_processes"] == 1
    assert os.path.isfile(os.path.join(first, "model.safetensors"))

    with torch.no_grad():
        model.weight.fill_(2.0)
    save_checkpoint(accelerator, str(tmp_path), 10, total_limit=2)
    with torch.no_grad():
        model.weight.fill_(3.0)
    save_checkpoint(accelerator, str(tmp_path), 15, total_limit=2)
    assert [step for step, _ in list_checkpoints(str(tmp_path))] == [10, 15]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-10", "checkpoint-15"]

    # A save that dies half-way leaves only a *.tmp folder: `latest` still names the last good checkpoint, and
    # the pruning that would have followed did not delete anything.
    real_save_state = accelerator.save_state

    def dying_save_state(output_dir, **kwargs):
        Path(output_dir, "model.safetensors").write_bytes(b"half a file")
        raise KeyboardInterrupt("killed while saving")

    accelerator.save_state = dying_save_state
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(accelerator, str(tmp_path), 20, total_limit=2)
    accelerator.save_state = real_save_state
    assert (tmp_path / "checkpoint-20.tmp").is_dir() and not (tmp_path / "checkpoint-20").exists()
    latest = resolve_resume_checkpoint("latest", str(tmp_path))
    assert latest == str(tmp_path / "checkpoint-15")
    assert [step for step, _ in list_checkpoints(str(tmp_path))] == [10, 15]

    with torch.no_grad():
        model.weight.fill_(-7.0)
    accelerator.load_state(latest)
    assert torch.all(model.weight == 3.0)

    # Saving a step again replaces the old folder in one move.
    save_checkpoint(accelerator, str(tmp_path), 15, total_limit=None)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-10", "checkpoint-15", "checkpoint-20.tmp"]


def test_prune_keeps_the_newest(tmp_path):
    for step in (3, 30, 12):
        _fake_checkpoint(tmp_path, step, marker_step=step)
    assert prune_checkpoints(str(tmp_path), None) == []
    removed = prune_checkpoints(str(tmp_path), 1)
    assert sorted(removed) == sorted([str(tmp_path / "checkpoint-3"), str(tmp_path / "checkpoint-12")])
    assert os.listdir(tmp_path) == ["checkpoint-30"]
    with pytest.raises(ValueError, match="checkpoints_total_limit"):
        prune_checkpoints(str(tmp_path), 0)


# ------------------------------------------------------------------------------------------------------------------
# step counters, non-finite guard, resume arithmetic
def test_nonfinite_guard_counts_streaks_and_round_trips():
    guard = NonFiniteGuard(max_consecutive=3)
    outcomes = [guard.record(finite, step) for step, finite in enumerate([True, False, False, True, False, False])]
    assert outcomes == [True, False, False, True, False, False]
    assert (guard.consecutive, guard.total, guard.exhausted) == (2, 4, False)
    assert "steps 4..5" in guard.describe_streak(5)

    progress = TrainingProgress(guard)
    progress.global_step = 6
    state = progress.state_dict()
    restored = TrainingProgress(NonFiniteGuard(3))
    restored.load_state_dict(state)
    assert restored.global_step == 6 and restored.guard.state_dict() == guard.state_dict()

    guard.record(False, 6)
    assert guard.exhausted and "3 consecutive" in guard.describe_streak(6)
    with pytest.raises(InvalidArgumentError, match="max_consecutive"):
        NonFiniteGuard(0)


def test_resume_arithmetic():
    # 10 micro-batches per epoch, accumulation 4: 3 optimizer steps per epoch (the last one over 2 micro-batches)
    assert epoch_length(10, 4, max_train_steps=7) == (3, 3)
    assert resume_position(0, 3, 4) == (0, 0)
    assert resume_position(4, 3, 4) == (1, 4)  # epoch 1, its first step done: skip its first 4 micro-batches
    assert resume_position(6, 3, 4) == (2, 0)


class _Tiny(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, width: int = 3):
        super().__init__()
        self.linear = torch.nn.Linear(width, 2)


def test_checkpoint_hooks_save_model_folders_and_leave_other_modules_to_accelerate(tmp_path, accelerator):
    torch.manual_seed(0)
    tiny, plain = _Tiny(), torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD([*tiny.parameters(), *plain.parameters()], lr=0.1)
    tiny, plain, optimizer = accelerator.prepare(tiny, plain, optimizer)
    checkpointing.register_checkpoint_hooks(accelerator, {_Tiny: "tiny"})
    progress = TrainingProgress(NonFiniteGuard(3))
    progress.global_step = 1
    accelerator.register_for_checkpointing(progress)
    saved = Path(save_checkpoint(accelerator, str(tmp_path), 1))
    files = sorted(str(path.relative_to(saved)) for path in saved.rglob("*.safetensors"))
    assert files == ["model.safetensors", "tiny/diffusion_pytorch_model.safetensors"]  # plain: accelerate's file
    checkpointing.check_checkpoint_architecture(str(saved), {"tiny": {"width": 3, "_class_name": "Other"}})
    with pytest.raises(CheckpointError, match=r"its tiny has another architecture \(width 3 there, 5 here\)"):
        checkpointing.check_checkpoint_architecture(str(saved), {"tiny": {"width": 5}})

    expected = [parameter.detach().clone() for parameter in [*tiny.parameters(), *plain.parameters()]]
    with torch.no_grad():
        for parameter in [*tiny.parameters(), *plain.parameters()]:
            parameter.fill_(7.0)
    progress.global_step = 0
    checkpointing.load_checkpoint(accelerator, str(saved), progress)
    assert progress.global_step == 1
    assert all(torch.equal(a, b) for a, b in zip([*tiny.parameters(), *plain.parameters()], expected))
    renamed = saved.rename(tmp_path / "checkpoint-2")
    with pytest.raises(CheckpointError, match="holds step 1, its name says 2"):
        checkpointing.load_checkpoint(accelerator, str(renamed), progress)


def test_save_final_model_writes_beside_other_files_config_last(tmp_path, monkeypatch):
    from radiodiff_vae import atomic

    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "config.json").write_text("{}")  # an older model's
    moved = []
    real_replace = atomic.os.replace

    def recording_replace(source, target):
        moved.append(Path(target).name)
        real_replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", recording_replace)
    save_final_model(_Tiny(width=4), str(tmp_path))
    assert moved == ["diffusion_pytorch_model.safetensors", "config.json"]
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["checkpoint-3", "config.json", "diffusion_pytorch_model.safetensors"]  # no staging left
    assert _Tiny.from_pretrained(tmp_path).config.width == 4
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o666 & ~atomic.current_umask()


def test_tracker_config_and_out_of_memory_message():
    args = argparse.Namespace(learning_rate=1e-4, steps=[1, 2], name=None, flag=True)
    assert tracker_config(args) == {"learning_rate": 1e-4, "steps": "[1, 2]", "name": "None", "flag": True}
    line = out_of_memory_message("tiny", 8, 2, None, 320, None, remedies=["--gradient_checkpointing"])
    assert line.startswith("CUDA out of memory training tiny at batch 8, 320x320, precision the accelerate config's")
    assert line.endswith(
        "--gradient_checkpointing; or --train_batch_size 4 --gradient_accumulation_steps 4 (the same maps per step); "
        "or --mixed_precision bf16"
    )
    assert out_of_memory_message("m", 1, 1, "bf16").endswith("lower the memory with a smaller --resolution")


# ------------------------------------------------------------------------------------------------------------------
# learning rate, noise, gradients, grid
def test_polynomial_schedule_decays_to_lr_end():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=5e-6)
    scheduler = build_lr_scheduler("polynomial", optimizer, num_warmup_steps=0, num_training_steps=10, lr_end=5e-7)
    rates = []
    for _ in range(12):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(5e-6)
    assert rates[5] == pytest.approx((5e-6 + 5e-7) / 2)  # power 1: a straight line
    assert rates[10] == pytest.approx(5e-7) and rates[11] == pytest.approx(5e-7)

    with pytest.raises(InvalidArgumentError, match="lr_end"):
        build_lr_scheduler("polynomial", optimizer, num_warmup_steps=0, num_training_steps=10, lr_end=5e-6)
    with pytest.raises(InvalidArgumentError, match="lr_scheduler"):
        build_lr_scheduler("exponential", optimizer, num_warmup_steps=0, num_training_steps=10)


def test_step_generator_depends_only_on_its_indices():
    def draw(*indices):
        return torch.randn(4, generator=step_generator(torch.device("cpu"), 42, *indices))

    assert torch.equal(draw(7, 0, 0), draw(7, 0, 0))
    assert not torch.equal(draw(7, 0, 0), draw(7, 0, 1))  # another process
    assert not torch.equal(draw(7, 0, 0), draw(8, 0, 0))  # another step
    with pytest.raises(ValueError, match=">= 0"):
        step_generator(torch.device("cpu"), 42, -1)


def test_clip_grad_norms_per_group(accelerator):
    first, second = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(4))
    first.grad = torch.full((4,), 3.0)  # norm 6
    norms = clip_grad_norms(accelerator, {"autoencoder": [first], "discriminator": [second]}, max_norm=1.0)
    assert norms["autoencoder"].item() == pytest.approx(6.0) and norms["discriminator"] is None
    assert first.grad.norm().item() == pytest.approx(1.0, rel=1e-4)


def test_reconstruction_grid_layout():
    inputs = torch.zeros(2, 1, 8, 8)
    inputs[1] = 1.0
    outputs = inputs.clone()
    outputs[0, 0, 0, 0] = 0.5  # error 0.5 >= error_vmax: full colour
    grid = make_reconstruction_grid(inputs, outputs, error_vmax=0.1)
    gap = 2
    assert grid.shape == (2 * 8 + 3 * gap, 3 * 8 + 4 * gap, 3) and grid.dtype.name == "uint8"
    top = gap + 8 + gap  # second row
    assert (grid[top : top + 8, gap : gap + 8] == 255).all()  # input of map 1 is white
    assert (grid[gap, gap + 8 + gap] == 128).all()  # reconstruction 0.5 as grey
    error_left = gap + 2 * (8 + gap)
    assert grid[gap, error_left].tolist() != grid[gap, error_left + 1].tolist()  # the wrong pixel stands out
    assert (grid[0] == 255).all()  # white separator
    with pytest.raises(ValueError, match="reconstructions must match"):
        make_reconstruction_grid(inputs, outputs[:1])
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        make_reconstruction_grid(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
    enlarged = make_reconstruction_grid(inputs, outputs, error_vmax=0.1, min_panel_size=20)  # 8 px -> 3 x 8 = 24 px
    assert enlarged.shape == (2 * 24 + 3 * gap, 3 * 24 + 4 * gap, 3)
    assert (enlarged[gap : gap + 24, gap : gap + 24] == grid[gap : gap + 8, gap : gap + 8].repeat(3, 0).repeat(3, 1)).all()
