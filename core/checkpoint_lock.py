"""Who may write a checkpoint: one engine at a time, through one name.

The flock on `P.lock` is what excludes; the file's content ({"pid", "host", "started_at"}) only names the holder.
A checkpoint is known by its resolved path, so a run through a symlink meets the same lock; a hard link (a second
name with its own lock) is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from .checkpoint_format import CheckpointError

_LOCK_WAIT = 0.5  # seconds to wait for a lock whose holder is unknown or gone (a probe, a fresh holder)


def resolved_path(path: Path) -> Path:
    """The checkpoint's identity: a second run through a symlink finds the same lock, and the atomic rename
    replaces the link's target, not the link."""
    return Path(os.path.realpath(path))


def check_one_name(path: Path, bak_path: Path) -> None:
    """Refuse (CheckpointError) a checkpoint file that has another name, a hard link: a run through that name
    would take another lock, and each compaction's rename would split the names into diverging copies."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    if info.st_nlink <= 1:
        return
    with contextlib.suppress(OSError):  # a crash while the previous snapshot is kept leaves P.bak as P's 2nd name
        if info.st_nlink == 2 and os.path.samestat(info, os.stat(bak_path)):
            return
    raise CheckpointError(
        f"checkpoint {path} has {info.st_nlink} hard links (another name points to the same file, "
        f"device {info.st_dev} inode {info.st_ino}): a second run through that name would not see this one's "
        "lock. Remove the other name(s) and use one path for the checkpoint (a symlink is fine)"
    )


@dataclass(frozen=True, slots=True)
class LockHolder:
    """The process that holds a checkpoint's lock."""

    pid: int
    host: str
    started_at: float

    def describe(self) -> str:
        """'pid 123 on host, since 2025-01-01 12:00:00'."""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at)) if self.started_at else "?"
        return f"pid {self.pid} on {self.host}, since {since}"


class CheckpointLocked(Exception):
    """Another engine holds the checkpoint; `holder` says which."""

    def __init__(self, path: Path, holder: LockHolder) -> None:
        self.path = path
        self.holder = holder
        super().__init__(
            f"checkpoint {path} is in use by another gembatch-tui ({holder.describe()}); "
            "stop that one first: two engines must not write the same checkpoint"
        )


class CheckpointLock:
    """The lock of the checkpoint at `checkpoint` (a resolved path), kept in `lock_path`."""

    def __init__(self, checkpoint: Path, lock_path: Path) -> None:
        self.checkpoint = checkpoint
        self.lock_path = lock_path
        self._fd: int | None = None
        self._holder: LockHolder | None = None

    def acquire(self) -> None:
        """Take the checkpoint for this process; raises CheckpointLocked naming the holder when it is taken."""
        if self._fd is not None:
            return
        deadline = time.monotonic() + _LOCK_WAIT
        last: LockHolder | None = None
        while True:
            try:
                self.lock_path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise CheckpointError(f"cannot create the lock file {self.lock_path}: {exc.strerror or exc}; "
                                      "check that its folder is writable") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                last = self._read_file()
                if last is not None and not _gone(last):
                    raise CheckpointLocked(self.checkpoint, last) from None
                if time.monotonic() >= deadline:  # someone holds it but we cannot tell who
                    raise CheckpointLocked(self.checkpoint, last or LockHolder(0, "unknown host", 0.0)) from None
                time.sleep(0.05)
                continue
            except BaseException:
                os.close(fd)
                raise
            try:  # a releasing holder unlinks the file: a lock on an unlinked file excludes nobody
                same = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            holder = LockHolder(os.getpid(), socket.gethostname(), time.time())
            data = json.dumps({"pid": holder.pid, "host": holder.host, "started_at": holder.started_at})
            os.ftruncate(fd, 0)
            os.pwrite(fd, data.encode("utf-8") + b"\n", 0)
            self._fd, self._holder = fd, holder
            return

    def release(self) -> None:
        """Give the checkpoint up (idempotent)."""
        fd, self._fd, self._holder = self._fd, None, None
        if fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.lock_path)  # while still holding it, so nobody locks a file that is going away
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def read_holder(self) -> LockHolder | None:
        """Who holds the checkpoint now (this process included); None when nobody does."""
        if self._holder is not None:
            return self._holder
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return self._read_file() or LockHolder(0, "unknown host", 0.0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None  # the file is left from a holder that died: nobody holds it
        finally:
            os.close(fd)

    def _read_file(self) -> LockHolder | None:
        try:
            data = json.loads(self.lock_path.read_bytes() or b"null")
            return LockHolder(int(data["pid"]), str(data["host"]), float(data["started_at"]))
        except (OSError, ValueError, TypeError, KeyError):
            return None


def _gone(holder: LockHolder) -> bool:
    """True when the named holder is a process of this host that no longer runs (the lock is a probe's)."""
    if holder.host != socket.gethostname() or holder.pid <= 0:
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
