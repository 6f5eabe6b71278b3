"""Checkpoints under faults (issue 16, 12.11): damage after the marker was written is caught by the recorded sizes
and checksums, ``latest`` falls back to the newest intact checkpoint, a kill while pruning leaves only a ``*.tmp``
folder, a full disk or read-only folder is one line, one permission rule, the output-folder lock, and the retention
rule that keeps the last checkpoint before ``disc_start``."""

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from conftest import reset_accelerate_state

from radiodiff_vae.atomic import default_file_mode
from radiodiff_vae.errors import DamagedCheckpointError, NoSpaceLeftError, NotWritableError, OutputFolderInUseError
from radiodiff_vae.training import checkpointing


@pytest.fixture
def accelerator():
    reset_accelerate_state()
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    accelerator.prepare(model, optimizer, scheduler)
    yield accelerator
    reset_accelerate_state()


def _two_checkpoints(accelerator, output_dir: Path):
    first = checkpointing.save_checkpoint(accelerator, str(output_dir), 2)
    second = checkpointing.save_checkpoint(accelerator, str(output_dir), 4)
    return first, second


DAMAGES = {
    "optimizer.bin truncated": ("optimizer.bin", lambda path: path.write_bytes(path.read_bytes()[:100]), "has 100 bytes"),
    "safetensors truncated": ("model.safetensors", lambda path: path.write_bytes(path.read_bytes()[:-8]), "bytes"),
    "scheduler.bin deleted": ("scheduler.bin", lambda path: path.unlink(), "scheduler.bin is missing"),
    "random_states_0.pkl emptied": ("random_states_0.pkl", lambda path: path.write_bytes(b""), "has 0 bytes"),
    "one byte flipped": (
        "optimizer.bin",
        lambda path: path.write_bytes(bytes([path.read_bytes()[0] ^ 1]) + path.read_bytes()[1:]),
        "the checksum of optimizer.bin differs",
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_checkpoint_is_refused_and_latest_falls_back(damage, accelerator, tmp_path, caplog):
    name, apply, words = DAMAGES[damage]
    first, second = _two_checkpoints(accelerator, tmp_path)
    marker = json.loads(Path(second, checkpointing.COMPLETE_MARKER).read_text())
    assert name in marker["files"] and marker["format"] == 2
    checkpointing.verify_checkpoint(second)
    apply(Path(second, name))

    with pytest.raises(DamagedCheckpointError) as raised:
        checkpointing.resolve_resume_checkpoint(second, str(tmp_path))
    message = str(raised.value)
    assert "\n" not in message and words in message and name in message
    assert message.endswith(f"resume from the previous checkpoint, {first}")
    with caplog.at_level(logging.WARNING, logger=checkpointing.__name__):
        assert checkpointing.resolve_resume_checkpoint("latest", str(tmp_path)) == first
    assert f"{second} is damaged" in caplog.text and "falling back to an older checkpoint" in caplog.text


def test_latest_refuses_when_every_checkpoint_is_damaged(accelerator, tmp_path):
    first, second = _two_checkpoints(accelerator, tmp_path)
    for folder in (first, second):
        Path(folder, "optimizer.bin").write_bytes(b"")
    with pytest.raises(DamagedCheckpointError, match=f"every checkpoint in {tmp_path} is damaged"):
        checkpointing.resolve_resume_checkpoint("latest", str(tmp_path))


def test_a_data_loader_workers_error_is_one_line():
    from torch.utils.data import DataLoader

    from radiodiff_vae.errors import MapFileError, one_line

    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            raise MapFileError(f"maps/{index}.png cannot be read as an image (image file is truncated)")

    with pytest.raises(MapFileError) as raised:
        next(iter(DataLoader(Broken(), num_workers=1, multiprocessing_context="fork")))
    assert "Original Traceback" in str(raised.value)
    assert one_line(raised.value) == "maps/0.png cannot be read as an image (image file is truncated)"


def test_every_checkpoint_file_follows_the_umask(accelerator, tmp_path):
    path = Path(checkpointing.save_checkpoint(accelerator, str(tmp_path), 1))
    modes = {str(file.relative_to(path)): file.stat().st_mode & 0o777 for file in path.rglob("*") if file.is_file()}
    assert "model.safetensors" in modes  # safetensors alone would write it 0600
    assert set(modes.values()) == {default_file_mode()}, modes


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 512 vs 0"),  # torch, full disk
    ],
    ids=["ENOSPC", "torch_iostream"],
)
def test_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(failure, accelerator, tmp_path, monkeypatch):
    previous = checkpointing.save_checkpoint(accelerator, str(tmp_path), 3)

    def failing_save_state(folder, **kwargs):
        Path(folder, "optimizer.bin").write_bytes(b"half")
        raise failure

    monkeypatch.setattr(accelerator, "save_state", failing_save_state)
    if isinstance(failure, RuntimeError):  # no errno: judged by the free space left
        monkeypatch.setattr(checkpointing.shutil, "disk_usage", lambda path: _Usage(free=0))
    with pytest.raises(NoSpaceLeftError) as raised:
        checkpointing.save_checkpoint(accelerator, str(tmp_path), 6)
    assert str(raised.value) == (
        f"no space left on device while writing checkpoint-6 in {tmp_path}; the previous checkpoint is intact "
        f"({previous})"
    )
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-3"]
    checkpointing.verify_checkpoint(previous)


class _Usage:
    def __init__(self, free: int):
        self.free = free


def test_output_folder_turned_read_only_is_one_line(accelerator, tmp_path, monkeypatch):
    previous = checkpointing.save_checkpoint(accelerator, str(tmp_path), 3)

    def read_only(folder, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(Path(folder, "optimizer.bin")))

    monkeypatch.setattr(accelerator, "save_state", read_only)
    with pytest.raises(NotWritableError) as raised:
        checkpointing.save_checkpoint(accelerator, str(tmp_path), 6)
    assert str(raised.value).startswith(f"cannot write checkpoint-6 in {tmp_path}: it is not writable")
    assert str(raised.value).endswith(f"the previous checkpoint is intact ({previous})")


def test_other_save_errors_pass_through(accelerator, tmp_path, monkeypatch):
    monkeypatch.setattr(accelerator, "save_state", lambda folder, **kwargs: (_ for _ in ()).throw(TypeError("bug")))
    with pytest.raises(TypeError, match="bug"):
        checkpointing.save_checkpoint(accelerator, str(tmp_path), 1)
    assert os.listdir(tmp_path) == []


def test_kill_while_pruning_leaves_a_tmp_folder_the_next_start_removes(accelerator, tmp_path, monkeypatch):
    for step in (1, 2):
        checkpointing.save_checkpoint(accelerator, str(tmp_path), step)
    real_rmtree = checkpointing.shutil.rmtree

    def killed_rmtree(path, *args, **kwargs):
        raise KeyboardInterrupt("killed while pruning")

    monkeypatch.setattr(checkpointing.shutil, "rmtree", killed_rmtree)
    with pytest.raises(KeyboardInterrupt):
        checkpointing.prune_checkpoints(str(tmp_path), 1)
    monkeypatch.setattr(checkpointing.shutil, "rmtree", real_rmtree)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-1.pruned.tmp", "checkpoint-2"]
    assert [step for step, _ in checkpointing.list_checkpoints(str(tmp_path))] == [2]
    assert checkpointing.remove_temporary_checkpoints(str(tmp_path)) == [str(tmp_path / "checkpoint-1.pruned.tmp")]
    assert os.listdir(tmp_path) == ["checkpoint-2"]


def test_retention_keeps_the_newest_and_the_last_checkpoint_before_disc_start(accelerator, tmp_path):
    # the report's schedule, scaled down: checkpoints every 5 steps, phase 2 from step 26, three kept
    for step in range(5, 51, 5):
        checkpointing.save_checkpoint(accelerator, str(tmp_path), step, total_limit=3, keep_step=26)
    assert [step for step, _ in checkpointing.list_checkpoints(str(tmp_path))] == [25, 40, 45, 50]
    # before phase 2 the protected checkpoint is the newest one: nothing extra is kept
    other = tmp_path / "early"
    for step in range(5, 21, 5):
        checkpointing.save_checkpoint(accelerator, str(other), step, total_limit=3, keep_step=26)
    assert [step for step, _ in checkpointing.list_checkpoints(str(other))] == [10, 15, 20]


def test_output_lock(tmp_path, caplog):
    with checkpointing.acquire_output_lock(str(tmp_path)) as lock:
        assert f"PID {os.getpid()} on " in Path(lock.owner_path).read_text()
        with pytest.raises(OutputFolderInUseError, match=f"is in use by another training run \\(PID {os.getpid()} on"):
            checkpointing.acquire_output_lock(str(tmp_path))
        with pytest.raises(OutputFolderInUseError):
            checkpointing.check_output_not_locked(str(tmp_path))
    assert os.listdir(tmp_path) == []  # released cleanly: the lock and owner files went with the lock
    checkpointing.check_output_not_locked(str(tmp_path))
    # a run killed with its lock: the operating system dropped the lock, the owner file still names it
    Path(tmp_path, checkpointing.OWNER_FILE).write_text("PID 999999 on elsewhere, started 2026-01-01T00:00:00Z")
    with caplog.at_level(logging.WARNING, logger=checkpointing.__name__):
        checkpointing.acquire_output_lock(str(tmp_path)).release()
    assert "taking over the lock" in caplog.text and "PID 999999" in caplog.text


def test_output_lock_released_after_its_folder_is_gone(tmp_path):
    """A failed run's folder may be deleted while the lock is held: releasing writes nothing into it and says
    nothing; releasing twice is a no-op."""
    folder = tmp_path / "run"
    folder.mkdir()
    lock = checkpointing.acquire_output_lock(str(folder))
    shutil.rmtree(folder)
    lock.release()
    lock.release()
    assert not folder.exists()


def test_a_lock_on_a_file_removed_meanwhile_is_not_held(tmp_path, monkeypatch):
    """A run that opened train_vae.lock just before the holder released and removed it would lock a deleted file:
    it notices (another inode at the path, or none) and locks the file that is there."""
    from filelock import FileLock

    real_acquire, calls = FileLock.acquire, []

    def acquire_then_lose_the_file(self, *args, **kwargs):
        result = real_acquire(self, *args, **kwargs)
        calls.append(self.lock_file)
        if len(calls) == 1:
            os.remove(self.lock_file)  # as the previous holder's release would
        return result

    monkeypatch.setattr(FileLock, "acquire", acquire_then_lose_the_file)
    lock = checkpointing.acquire_output_lock(str(tmp_path))
    assert len(calls) == 2 and checkpointing._holds_the_file(lock._lock)
    assert sorted(os.listdir(tmp_path)) == sorted(checkpointing.LOCK_FILES)
    lock.release()


def test_nan_in_a_float_gain_map_names_the_item():
    import numpy as np

    from radiodiff_vae.data.items import RadioMapItemBuilder
    from radiodiff_vae.errors import MapFileError

    gain = np.full((8, 8), 0.5, np.float32)
    gain[3, 4] = np.nan
    with pytest.raises(MapFileError, match=r"item 7_1 \(IRT4\): the gain map holds 1 NaN or inf value"):
        RadioMapItemBuilder()(gain, np.zeros((8, 8)), (0, 0), "7_1", "IRT4")
