"""Durable file writes: after a crash a file is either as it was or whole in its new content, never half of each.

The one way every writer of the project (checkpoint, results, subcommands) puts a file in place: write a
temporary in the same folder, fsync it, rename it over the final name, fsync the folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

# A filesystem that cannot fsync a folder says so with one of these (some network, FUSE and container mounts).
_FOLDER_FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})


def fsync_folder(folder: Path) -> None:
    """Make the names in `folder` durable (a create, a rename, an unlink).

    One policy for the whole project: a filesystem that does not support fsync on a folder (EINVAL, EOPNOTSUPP)
    is taken as it is, since nothing more can be done there and refusing would stop every run on such a mount;
    any other error (EIO, ENOSPC, EACCES on opening) raises, because then the rename may not survive a crash and
    the caller must not carry on as if it would (the checkpoint turns it into a write error and holds creates).
    """
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _FOLDER_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to `fd` (os.write may write fewer than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def replace_with(final: Path, pieces: Iterable[bytes], *, temporary: Path, mode: int = 0o644,
                 before_rename: Callable[[], None] | None = None) -> int:
    """Write `pieces` to `temporary` (beside `final`), fsync it, rename it over `final`, fsync the folder; returns
    the bytes written. On an error the temporary is removed and `final` is untouched (the OSError is raised).

    `before_rename` runs once the temporary is safely on disk, just before the rename (the checkpoint keeps its
    previous snapshot there)."""
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            written = 0
            for piece in pieces:
                write_all(fd, piece)
                written += len(piece)
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_rename is not None:
            before_rename()
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_folder(final.parent)
    return written


@contextlib.contextmanager
def replacing(final: Path, *, mode: int | None = None, buffering: int = -1) -> Iterator[BinaryIO]:
    """A binary file to write `final`'s new content into: it replaces `final` durably when the block ends, and is
    removed (`final` untouched) when the block raises. `mode` None keeps the private 0600 of a fresh temporary."""
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb", buffering=buffering) as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_folder(final.parent)


def move_into_place(temporary: Path, final: Path) -> None:
    """Rename a complete file into place durably: fsync it, rename it, fsync the folder."""
    fd = os.open(temporary, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, final)
    fsync_folder(final.parent)
