"""The run's state on disk: a snapshot a person can read plus an append-only journal of record changes.

Files next to the checkpoint P:
    P              the snapshot: JSON, or TOML when P ends in .toml; replaced atomically by each compaction
    P.journal      JSON Lines, one change per line ({"seq", "run", "record" | "learned"}); fsynced on commit
    P.bak          the snapshot before the last compaction (the last good copy)
    P.journal.bak  the journal lines between P.bak and P, so that P.bak plus both journals gives today's state
    P.lock         who holds the run (checkpoint_lock)
Loading reads P and replays the journal lines whose seq is above the snapshot's `journal_seq`. A snapshot of an
older format version is migrated as it is read (checkpoint_format) and written back in this version's format by
the first commit after the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import durable
from .checkpoint_format import (
    REBUILD_HINT,
    VERSION,
    CheckpointError,
    FormatProblem,
    NewerFormat,
    NotACheckpoint,
    Row,
    RunState,
    apply_change,
    decode_journal_line,
    decode_snapshot,
    encode_journal_line,
    encode_snapshot,
    is_number,
    redacted,
    snapshot_header,
)
from .checkpoint_lock import CheckpointLock, LockHolder, check_one_name, resolved_path
from .crash_points import crash_point, crash_point_armed
from .model import BatchRecord, record_values
from .redact import KEY_VARIABLES

MIN_COMPACT_LINES = 2000  # by default a compaction waits for at least this many journal lines


class CheckpointWriteError(CheckpointError):
    """Writing the checkpoint failed (disk full, I/O error); what was on disk before is still intact."""


@dataclass(slots=True)
class _Line:
    """One journal line waiting to be written."""

    seq: int
    data: bytes


@dataclass(slots=True)
class _Entry:
    """One journal line read back."""

    path: Path
    lineno: int
    seq: int
    obj: dict[str, Any]


@dataclass(slots=True)
class _Snapshot:
    """A compaction's content, frozen on the caller's thread so the writer thread never sees a half-changed record."""

    header: dict[str, Any]
    rows: list[Row]  # each record's field values, and a copy of its history
    secrets: tuple[str, ...]
    seq: int


def _freeze(record: BatchRecord) -> Row:
    """The record's values as they are now, ~8x cheaper than `to_dict` (it runs on the event loop's thread)."""
    return record_values(record), list(record.history)


def _env_secrets() -> tuple[str, ...]:
    return tuple(v.strip() for name in KEY_VARIABLES if (v := os.environ.get(name)) and v.strip())


def _record_dict(record: BatchRecord, secrets: tuple[str, ...]) -> dict[str, Any]:
    """`record.to_dict()` with the free-text fields redacted (the engine redacts too; this is the last guard)."""
    return redacted(record.to_dict(), secrets)


class CheckpointStore:
    """Reads and writes one run's checkpoint: snapshot, journal, backup copy and lock."""

    def __init__(self, path: Path, *, compact_every: int | None = None) -> None:
        self.path = resolved_path(path)
        self.compact_every = compact_every  # None: adaptive (see needs_compaction)
        self.journal_path = self._sibling(".journal")
        self.journal_bak_path = self._sibling(".journal.bak")
        self.bak_path = self._sibling(".bak")
        self.lock_path = self._sibling(".lock")
        self._tmp_path = self._sibling(".tmp")
        self._toml = self.path.suffix.lower() == ".toml"
        self._state: RunState | None = None
        self._run_id: str | None = None
        self._seq = 0  # last journal seq handed out
        self._durable_seq = 0  # last seq known to be on disk (journal fsynced or inside the snapshot)
        self._buffer: list[_Line] = []
        self._lines_since_rotation = 0
        self._bytes_since_rotation = 0  # journal bytes (written or buffered) since the last snapshot
        self._snapshot_size = 0  # bytes of the last snapshot written or loaded
        self._journal_fd: int | None = None
        self._journal_size = 0  # bytes of complete lines in the journal; anything beyond is cut on open
        self._buf_lock = threading.Lock()  # buffer and seq: held for microseconds only
        self._io_lock = threading.Lock()  # every file write
        self._async_lock: asyncio.Lock | None = None
        self._async_lock_loop: asyncio.AbstractEventLoop | None = None
        self._lock = CheckpointLock(self.path, self.lock_path)
        self.disk_version: int | None = None  # format version of the snapshot on disk, once loaded or written

    def _sibling(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)

    # ---- reading -------------------------------------------------------------------------------

    def exists(self) -> bool:
        """True when the snapshot file is there."""
        return self.path.exists()

    @property
    def needs_compaction(self) -> bool:
        """True when the engine should `await compact(state)`.

        With `compact_every` set: once the journal holds that many lines. By default: once it holds at least
        MIN_COMPACT_LINES lines and at least as many bytes as the snapshot, so that the snapshot bytes written
        per change stay flat however many batches the run has (a fixed line count rewrites a 10,000-batch
        snapshot five times as often per change as a 2,000-batch one), and a restart replays at most about
        a snapshot's worth of journal.
        """
        if self.compact_every is not None:
            return self._lines_since_rotation >= max(1, self.compact_every)
        return (self._lines_since_rotation >= MIN_COMPACT_LINES
                and self._bytes_since_rotation >= self._snapshot_size)

    def load(self) -> RunState | None:
        """The snapshot with the journal replayed on top; None when there is no checkpoint yet. Writes nothing."""
        if not self.path.exists():
            leftovers = [p for p in (self.journal_path, self.journal_bak_path, self.bak_path) if p.exists()]
            if leftovers:
                names = ", ".join(str(p) for p in leftovers)
                hint = (f"copy {self.bak_path} to {self.path} to resume from the last good copy, or "
                        if self.bak_path.exists() else "")
                raise CheckpointError(
                    f"checkpoint {self.path} is missing but {names} is still there: {hint}start again with "
                    f"{REBUILD_HINT}, which keeps those files under a new name and rebuilds the run from the "
                    "server's batch list (starting from nothing could submit jobs twice)"
                )
            return None
        state, snapshot_seq = self._read_snapshot()
        main, main_size = self._read_journal(self.journal_path)
        entries = main
        if not main or main[0].seq > snapshot_seq + 1:
            # P.bak restored by hand, or a crash between the snapshot and the rotation: P.journal.bak has the rest
            older, _ = self._read_journal(self.journal_bak_path)
            if any(entry.seq > snapshot_seq for entry in older):
                entries = older + main
        assert self.disk_version is not None
        last = self._replay(state, snapshot_seq, entries, self.disk_version)
        with self._io_lock:
            self._drop_journal_fd()
        with self._buf_lock:
            self._state = state
            self._run_id = state.run_id
            self._seq = self._durable_seq = max(last, main[-1].seq if main else 0)
            self._buffer = []
            self._lines_since_rotation = len(main)
            self._bytes_since_rotation = main_size
        self._journal_size = main_size
        return state

    def _read_snapshot(self) -> tuple[RunState, int]:
        try:
            raw = self.path.read_bytes()
            self._snapshot_size = len(raw)
        except OSError as exc:
            raise CheckpointError(
                f"cannot read checkpoint {self.path}: {exc.strerror or exc}. {self._snapshot_way_out()}"
            ) from None
        try:
            state, seq, self.disk_version = decode_snapshot(raw, toml=self._toml)
        except NotACheckpoint as exc:
            raise CheckpointError(
                f"{self.path} is not a gembatch checkpoint ({exc}); check the --checkpoint path, or move that file "
                "aside"
            ) from None
        except NewerFormat as exc:
            raise CheckpointError(
                f"checkpoint {self.path} was written by a newer gembatch-tui (format version {exc.version}; this "
                f"one reads versions 1 to {VERSION}): upgrade gembatch-tui to resume it"
            ) from None
        except FormatProblem as exc:
            raise self._snapshot_damage(str(exc)) from None
        return state, seq

    def _read_journal(self, path: Path) -> tuple[list[_Entry], int]:
        """The complete lines of a journal and their byte length; a trailing partial line is left out."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return [], 0
        except OSError as exc:
            raise CheckpointError(
                f"cannot read checkpoint journal {path}: {exc.strerror or exc}; fix the file's permissions "
                f"or move it aside and start again with {REBUILD_HINT}"
            ) from None
        complete = raw.rfind(b"\n") + 1  # what follows the last newline is an append cut short by a crash
        entries: list[_Entry] = []
        for lineno, line in enumerate(raw[:complete].split(b"\n")[:-1], 1):
            try:
                obj = decode_journal_line(line)
            except FormatProblem as exc:
                raise self._journal_damage(path, lineno, str(exc)) from None
            entries.append(_Entry(path, lineno, obj["seq"], obj))
        return entries, complete

    def _replay(self, state: RunState, snapshot_seq: int, entries: list[_Entry], version: int) -> int:
        """Apply the entries above `snapshot_seq` (written beside a snapshot of format `version`) to `state`;
        returns the last seq applied (or the snapshot's)."""
        expected = snapshot_seq + 1
        previous: int | None = None
        for entry in entries:
            obj = entry.obj
            if obj["run"] != state.run_id:
                raise self._journal_damage(entry.path, entry.lineno,
                                           f"it belongs to run {obj['run']}, not to run {state.run_id} of {self.path}")
            if previous is not None and entry.seq <= previous:
                raise self._journal_damage(entry.path, entry.lineno,
                                           f"change #{entry.seq} comes after #{previous}")
            previous = entry.seq
            if entry.seq <= snapshot_seq:
                continue  # already in the snapshot: a crash came between the snapshot and the journal rotation
            if entry.seq != expected:
                raise self._journal_damage(
                    entry.path, entry.lineno,
                    f"change #{entry.seq} follows #{expected - 1}: changes are missing "
                    f"(was {self.path} replaced by an older copy?)")
            try:
                apply_change(state, obj, version)
            except FormatProblem as exc:
                raise self._journal_damage(entry.path, entry.lineno, str(exc)) from None
            expected += 1
        return expected - 1

    def _snapshot_way_out(self) -> str:
        if self.bak_path.exists():
            return (f"The last good copy {self.bak_path} exists: move {self.path} aside and copy {self.bak_path} "
                    f"to {self.path}; the journal is replayed on top of it. Or start again with {REBUILD_HINT}, "
                    "which keeps these files under a new name and rebuilds the run from the server's batch list.")
        return (f"There is no backup copy: start again with {REBUILD_HINT}, which keeps {self.path} under a new "
                "name and rebuilds the run from the server's batch list (starting from nothing could submit jobs "
                "twice).")

    def _snapshot_damage(self, what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {self.path} is damaged: {what}. {self._snapshot_way_out()}")

    def _journal_damage(self, path: Path, lineno: int, what: str) -> CheckpointError:
        return CheckpointError(
            f"checkpoint journal {path} is damaged at line {lineno}: {what}. The changes from that line on cannot "
            f"be trusted, and resuming without them could submit a job twice: start again with {REBUILD_HINT}, "
            f"which keeps {path} and the snapshot under a new name and rebuilds the run from the server's batch "
            "list (do not just move the journal aside: the snapshot alone is older than the server)."
        )

    # ---- writing -------------------------------------------------------------------------------

    def create(self, state: RunState) -> None:
        """First write of a new run: the snapshot, atomically. Refuses to overwrite an existing checkpoint."""
        if self.path.exists():
            raise CheckpointError(f"checkpoint {self.path} already exists; load it instead of starting over")
        leftovers = [p for p in (self.journal_path, self.journal_bak_path) if p.exists()]
        if leftovers:
            raise CheckpointError(
                f"{', '.join(map(str, leftovers))} is left from an earlier run of {self.path}; move it aside first")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointWriteError(f"cannot create the folder of checkpoint {self.path}: "
                                       f"{exc.strerror or exc}") from exc
        with self._buf_lock:
            self._state = state
            self._run_id = state.run_id
            self._seq = self._durable_seq = 0
            self._buffer = []
            self._lines_since_rotation = 0
        self._journal_size = 0
        self.compact_sync(state)

    def append(self, record: BatchRecord) -> None:
        """Queue the record's current content as a journal line; cheap, nothing is written until `commit`."""
        self._queue({"record": _record_dict(record, _env_secrets())})

    def set_learned(self, key: str, value: float | int) -> None:
        """Journal one learned admission fact (and set it on the state this store loaded or created)."""
        if not is_number(value):
            raise TypeError(f"learned {key!r} must be a number, got {value!r}")
        if self._state is not None:
            self._state.learned[key] = value
        self._queue({"learned": {"key": key, "value": value}})

    def _queue(self, body: dict[str, Any]) -> None:
        if self._run_id is None:
            raise RuntimeError("load() or create() the checkpoint before journaling changes")
        with self._buf_lock:
            self._seq += 1
            data = encode_journal_line(self._seq, self._run_id, body)
            self._buffer.append(_Line(self._seq, data))
            self._lines_since_rotation += 1
            self._bytes_since_rotation += len(data)

    def _lock_for_loop(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._async_lock is None or self._async_lock_loop is not loop:
            self._async_lock, self._async_lock_loop = asyncio.Lock(), loop
        return self._async_lock

    @property
    def _upgrade_due(self) -> bool:
        """True from loading a snapshot of an older format version until it is written in this version's."""
        return self._state is not None and self.disk_version is not None and self.disk_version < VERSION

    async def commit(self) -> None:
        """Make every change journaled so far durable (write + fsync in a thread); await it before a create.
        The first commit after loading an older format version compacts instead: the snapshot is then this one's."""
        if self._upgrade_due:
            assert self._state is not None
            await self.compact(self._state)
            return
        if self._durable_seq >= self._seq:
            return
        async with self._lock_for_loop():
            await asyncio.to_thread(self.commit_sync)

    def commit_sync(self) -> None:
        """`commit` for callers without an event loop."""
        if self._upgrade_due:
            assert self._state is not None
            self.compact_sync(self._state)
            return
        with self._io_lock:
            with self._buf_lock:
                lines, self._buffer = self._buffer, []
            try:
                self._write_journal(lines)
            except BaseException as exc:
                with self._buf_lock:
                    self._buffer[:0] = lines  # written again by the next commit
                if isinstance(exc, OSError):
                    raise CheckpointWriteError(
                        f"cannot write checkpoint journal {self.journal_path}: {exc.strerror or exc}; the changes "
                        "are kept in memory and no new job is created until they are saved"
                    ) from exc
                raise

    def _write_journal(self, lines: list[_Line]) -> None:
        """Append and fsync (caller holds the io lock); on failure the journal is cut back to its last good size."""
        if not lines:
            return
        data = b"".join(line.data for line in lines)
        try:
            fd = self._open_journal()
            if crash_point_armed("mid-journal-write"):  # the n-th pass leaves half its lines, then dies
                durable.write_all(fd, data[: max(1, len(data) // 2)])
            crash_point("mid-journal-write")  # every pass counts, so that point:n means the n-th write
            durable.write_all(fd, data)
            os.fsync(fd)
        except OSError:
            if self._journal_fd is not None:  # cut off whatever part of `data` got in
                with contextlib.suppress(OSError):
                    os.ftruncate(self._journal_fd, self._journal_size)
            self._drop_journal_fd()  # and if that failed, reopening cuts it off
            raise
        self._journal_size += len(data)
        self._durable_seq = max(self._durable_seq, lines[-1].seq)

    def _open_journal(self) -> int:
        if self._journal_fd is not None:
            return self._journal_fd
        created = not self.journal_path.exists()
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size > self._journal_size:  # a partial line from a crash or from a failed write
                os.ftruncate(fd, self._journal_size)
            elif size < self._journal_size:
                raise CheckpointError(
                    f"checkpoint journal {self.journal_path} shrank from {self._journal_size} to {size} bytes "
                    "while this engine was writing it; another program touched it"
                )
            if created:
                durable.fsync_folder(self.journal_path.parent)
        except BaseException:
            os.close(fd)
            raise
        self._journal_fd = fd
        return fd

    def _drop_journal_fd(self) -> None:
        if self._journal_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._journal_fd)
            self._journal_fd = None

    async def compact(self, state: RunState) -> None:
        """Fold the journal into a new snapshot (written in a thread); the old snapshot becomes `<path>.bak`."""
        async with self._lock_for_loop():
            snapshot = self._capture(state)
            await asyncio.to_thread(self._write_compaction, snapshot)

    def compact_sync(self, state: RunState) -> None:
        """`compact` for callers without an event loop."""
        self._write_compaction(self._capture(state))

    def _capture(self, state: RunState) -> _Snapshot:
        if self._run_id is not None and state.run_id != self._run_id:
            raise ValueError(f"this store holds run {self._run_id}, not {state.run_id}")
        # called on the thread that changes the records, so no append can slip between these lines
        with self._buf_lock:
            seq = self._seq
        secrets = _env_secrets()
        header = snapshot_header(state, seq)
        rows = [_freeze(record) for record in state.records.values()]
        return _Snapshot(header, rows, secrets, seq)

    def _encode(self, snapshot: _Snapshot) -> Iterator[bytes]:
        return encode_snapshot(snapshot.header, snapshot.rows, snapshot.secrets, toml=self._toml)

    def _snapshot_pieces(self, snapshot: _Snapshot) -> Iterator[bytes]:
        """The pieces to write; at the crash point "mid-snapshot-write", half of them, then the process dies."""
        if crash_point_armed("mid-snapshot-write"):
            data = b"".join(self._encode(snapshot))
            yield data[: len(data) // 2]
        crash_point("mid-snapshot-write")  # every pass counts (point:n is the n-th snapshot)
        yield from self._encode(snapshot)  # streamed: memory stays flat

    def _write_compaction(self, snapshot: _Snapshot) -> None:
        with self._io_lock:
            # 1. the lines this snapshot covers go to the journal first, so that P.bak + journals stay complete
            with self._buf_lock:
                covered = [line for line in self._buffer if line.seq <= snapshot.seq]
                self._buffer = [line for line in self._buffer if line.seq > snapshot.seq]
            try:
                self._write_journal(covered)
            except BaseException as exc:
                with self._buf_lock:
                    self._buffer[:0] = covered
                if isinstance(exc, OSError):
                    raise self._write_error(exc) from exc
                raise
            # 2. the new snapshot, atomically; the old one is kept as P.bak
            try:
                written = durable.replace_with(self.path, self._snapshot_pieces(snapshot), temporary=self._tmp_path,
                                               before_rename=self._keep_backup)
            except OSError as exc:
                raise self._write_error(exc) from exc
            self.disk_version = VERSION
            self._durable_seq = max(self._durable_seq, snapshot.seq)
            self._snapshot_size = written
            # 3. the journal so far becomes P.journal.bak; new lines start a fresh journal
            try:
                self._drop_journal_fd()
                if self.journal_path.exists():
                    os.replace(self.journal_path, self.journal_bak_path)
                self._journal_size = 0
                durable.fsync_folder(self.path.parent)
            except OSError as exc:
                raise CheckpointWriteError(
                    f"the snapshot {self.path} was saved, but its journal {self.journal_path} could not be "
                    f"rotated: {exc.strerror or exc}; nothing is lost, the next compaction tries again"
                ) from exc
            with self._buf_lock:
                self._lines_since_rotation = len(self._buffer)
                self._bytes_since_rotation = sum(len(line.data) for line in self._buffer)

    def _keep_backup(self) -> None:
        if not self.path.exists():
            return
        staging = self._sibling(".bak.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        try:
            os.link(self.path, staging)
        except OSError:  # no hard links on this filesystem
            shutil.copyfile(self.path, staging)
        os.replace(staging, self.bak_path)

    def _write_error(self, exc: OSError) -> CheckpointWriteError:
        return CheckpointWriteError(
            f"cannot write checkpoint {self.path}: {exc.strerror or exc}; the previous checkpoint is intact "
            "(free some space or fix the folder, then the next save goes through)"
        )

    def close(self, state: RunState) -> None:
        """Final compaction, then the journal is closed and the lock released."""
        try:
            self.compact_sync(state)
        finally:
            with self._io_lock:
                self._drop_journal_fd()
            self.release_lock()

    # ---- lock (checkpoint_lock) -----------------------------------------------------------------

    def acquire_lock(self) -> None:
        """Take the checkpoint for this process; raises CheckpointLocked naming the holder when it is taken."""
        self._lock.acquire()

    def release_lock(self) -> None:
        """Give the checkpoint up (idempotent)."""
        self._lock.release()

    def read_holder(self) -> LockHolder | None:
        """Who holds the checkpoint now (this process included); None when nobody does."""
        return self._lock.read_holder()

    def check_one_name(self) -> None:
        """Refuse (CheckpointError) a checkpoint file that has another name (a hard link)."""
        check_one_name(self.path, self.bak_path)
