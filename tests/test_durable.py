"""Durable writes: all or nothing on disk, and one error policy for the folder fsync."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from gembatch.core import durable

_REAL_FSYNC = os.fsync  # durable.os is the os module: patching it patches os


class FolderFsync:
    """os.fsync that fails with `errno` on folders only (files are fsynced for real)."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.folders = 0

    def __call__(self, fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            self.folders += 1
            raise OSError(self.code, os.strerror(self.code))
        _REAL_FSYNC(fd)


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EOPNOTSUPP])
def test_a_filesystem_that_cannot_fsync_a_folder_is_taken_as_it_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    fsync = FolderFsync(code)
    monkeypatch.setattr(durable.os, "fsync", fsync)
    final = tmp_path / "out.jsonl"
    durable.replace_with(final, [b"a\n", b"b\n"], temporary=tmp_path / "out.tmp")
    assert final.read_bytes() == b"a\nb\n" and fsync.folders == 1


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_any_other_folder_fsync_error_is_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    monkeypatch.setattr(durable.os, "fsync", FolderFsync(code))
    with pytest.raises(OSError) as caught:
        durable.fsync_folder(tmp_path)
    assert caught.value.errno == code
    with pytest.raises(OSError):  # the rename happened, but the caller must not take it as durable
        durable.move_into_place(_written(tmp_path / "part", b"x"), tmp_path / "whole")


def test_a_folder_that_cannot_be_opened_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        durable.fsync_folder(tmp_path / "nowhere")


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_replace_with_leaves_the_old_file_whole_when_writing_fails(tmp_path: Path) -> None:
    final = _written(tmp_path / "snapshot.json", b"old")
    temporary = tmp_path / "snapshot.json.tmp"

    def pieces():
        yield b"new, half"
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        durable.replace_with(final, pieces(), temporary=temporary)
    assert final.read_bytes() == b"old" and not temporary.exists()


def test_replace_with_runs_its_hook_after_the_temporary_is_written_and_before_the_rename(tmp_path: Path) -> None:
    final = _written(tmp_path / "snapshot.json", b"old")
    temporary = tmp_path / "snapshot.json.tmp"
    seen = []
    written = durable.replace_with(final, [b"new"], temporary=temporary,
                                   before_rename=lambda: seen.append((temporary.read_bytes(), final.read_bytes())))
    assert seen == [(b"new", b"old")] and written == 3
    assert final.read_bytes() == b"new" and stat.S_IMODE(final.stat().st_mode) == 0o644


def test_replacing_puts_the_file_in_place_only_when_the_block_ends(tmp_path: Path) -> None:
    final = _written(tmp_path / "merged.jsonl", b"old\n")
    final.chmod(0o640)
    with durable.replacing(final, mode=0o640) as handle:
        handle.write(b"new\n")
        assert final.read_bytes() == b"old\n"
    assert final.read_bytes() == b"new\n" and stat.S_IMODE(final.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.jsonl"]

    with pytest.raises(RuntimeError), durable.replacing(final) as handle:
        handle.write(b"half")
        raise RuntimeError("stop")
    assert final.read_bytes() == b"new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["merged.jsonl"]


def test_write_all_writes_every_byte_when_the_kernel_takes_fewer(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    monkeypatch.setattr(durable.os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        durable.write_all(fd, b"0123456789")
    finally:
        os.close(fd)
    assert path.read_bytes() == b"0123456789"
