"""Atomic writes: the old file survives a failed write, no temporary file is left, permissions are the usual ones."""

import os
import stat

import pytest

from radiodiff_vae.atomic import (
    atomic_copy,
    atomic_directory,
    atomic_open,
    atomic_path,
    atomic_write_json,
    default_file_mode,
)


def test_a_failed_write_keeps_the_previous_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"psnr": 30.0})
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_open(target, "w") as handle:
            handle.write('{"psnr": ')
            raise RuntimeError("killed half-way")
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_files_get_the_permissions_open_would_give(tmp_path):
    with atomic_path(tmp_path / "sub" / "weights.bin") as temporary:
        temporary.write_bytes(b"\x00" * 8)
    written = tmp_path / "sub" / "weights.bin"
    assert written.read_bytes() == b"\x00" * 8
    assert stat.S_IMODE(written.stat().st_mode) == default_file_mode()
    atomic_copy(written, tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == b"\x00" * 8


def test_only_whole_file_modes_are_accepted(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb', got 'a'"):
        with atomic_open(tmp_path / "log.txt", "a"):
            pass
    assert not (tmp_path / "log.txt").exists()


def test_a_folder_that_appears_while_writing_is_not_replaced(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(FileExistsError, match="appeared while it was being written"):
        with atomic_directory(target) as staging:
            (staging / "config.json").write_text("{}")
            target.mkdir()
            (target / "theirs.txt").write_text("kept")
    assert os.listdir(target) == ["theirs.txt"] and os.listdir(tmp_path) == ["out"]
