"""The run's state on disk: a snapshot a person can read plus an append-only journal of record changes.

Files next to the checkpoint P:
    P              the snapshot: JSON, or TOML when P ends in .toml; replaced atomically by each compaction
    P.journal      JSON Lines, one change per line ({"seq", "run", "record" | "learned"}); fsynced on commit
    P.bak          the snapshot before the last compaction (the last good copy)
    P.journal.bak  the journal lines between P.bak and P, so that P.bak plus both journals gives today's state
    P.lock         who holds the run (pid, host, since); the flock on it is what actually excludes
Loading reads P and replays the journal lines whose seq is above the snapshot's `journal_seq`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import socket
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .crash_points import crash_point, crash_point_armed
from .model import BatchRecord, record_values, values_dict
from .redact import KEY_VARIABLES, redact

FORMAT = "gembatch-checkpoint"
VERSION = 1
REBUILD_HINT = "--rebuild-from-server"
_TOML_END = "# end of gembatch checkpoint\n"  # TOML cut at a line boundary still parses; this tells us it was not
_SNAPSHOT_PIECE = 1 << 20  # characters of batch lines per piece of a streamed JSON snapshot
MIN_COMPACT_LINES = 2000  # by default a compaction waits for at least this many journal lines
_LOCK_WAIT = 0.5  # seconds to wait for a lock whose holder is unknown or gone (a probe, a fresh holder)


@dataclass
class RunState:
    """What a run keeps across restarts: its id, model, one record per input file, learned admission facts."""

    run_id: str  # short random id made once per run, part of every display name
    created_at: float
    model: str
    records: dict[str, BatchRecord] = field(default_factory=dict)  # by batch_id, in input order
    learned: dict[str, float | int] = field(default_factory=dict)
    input_dir: str | None = None  # the input folder, resolved; None in checkpoints written before it was kept


class CheckpointError(Exception):
    """The checkpoint cannot be used as it is; the message names the file, what is wrong and the way out."""


class CheckpointWriteError(CheckpointError):
    """Writing the checkpoint failed (disk full, I/O error); what was on disk before is still intact."""


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
    rows: list[tuple[tuple[Any, ...], list[Any]]]  # each record's field values, and a copy of its history
    secrets: tuple[str, ...]
    seq: int


def _freeze(record: BatchRecord) -> tuple[tuple[Any, ...], list[Any]]:
    """The record's values as they are now, ~8x cheaper than `to_dict` (it runs on the event loop's thread)."""
    return record_values(record), list(record.history)


def _env_secrets() -> tuple[str, ...]:
    return tuple(v.strip() for name in KEY_VARIABLES if (v := os.environ.get(name)) and v.strip())


def _record_dict(record: BatchRecord, secrets: tuple[str, ...]) -> dict[str, Any]:
    """`record.to_dict()` with the free-text fields redacted (the engine redacts too; this is the last guard)."""
    return _redacted(record.to_dict(), secrets)


def _redacted(data: dict[str, Any], secrets: tuple[str, ...]) -> dict[str, Any]:
    if secrets:
        for key in ("last_error", "wait_reason"):
            if key in data:
                data[key] = redact(data[key], secrets)
        for entry in data.get("history", ()):
            entry["note"] = redact(entry["note"], secrets)
    return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (22, 95):  # EINVAL / EOPNOTSUPP: this filesystem cannot fsync a folder
            raise
    finally:
        os.close(fd)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class CheckpointStore:
    """Reads and writes one run's checkpoint: snapshot, journal, backup copy and lock."""

    def __init__(self, path: Path, *, compact_every: int | None = None) -> None:
        # The checkpoint's identity is its resolved path: a second run through a symlink finds the same lock, and
        # the atomic rename replaces the link's target, not the link.
        self.path = Path(os.path.realpath(path))
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
        self._lock_fd: int | None = None
        self._holder: LockHolder | None = None

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
        last = self._replay(state, snapshot_seq, entries)
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
        if not raw.strip():
            raise self._snapshot_damage("the file is empty")
        kind = "TOML" if self._toml else "JSON"
        try:
            data = tomllib.loads(raw.decode("utf-8")) if self._toml else json.loads(raw)
        except ValueError as exc:
            raise self._snapshot_damage(f"it is not valid {kind} ({exc}); it may have been cut short") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(
                f"{self.path} is not a gembatch checkpoint (no \"format\": \"{FORMAT}\"); "
                "check the --checkpoint path, or move that file aside"
            )
        if data.get("version") != VERSION:
            raise CheckpointError(
                f"checkpoint {self.path} has format version {data.get('version')!r}; this gembatch-tui reads "
                f"version {VERSION} only: run it with the gembatch-tui version that wrote it"
            )
        if self._toml and not raw.decode("utf-8").endswith(_TOML_END):
            raise self._snapshot_damage(f"its last line {_TOML_END.strip()!r} is missing; it was cut short")
        header = {"run_id": str, "created_at": float, "model": str, "journal_seq": int, "learned": dict,
                  "batches": list}
        for key, kind_of in header.items():
            value = data.get(key)
            ok = _is_number(value) if kind_of is float else isinstance(value, kind_of) and not isinstance(value, bool)
            if not ok:
                raise self._snapshot_damage(f"\"{key}\" is missing or not a {kind_of.__name__}")
        learned = data["learned"]
        for key, value in learned.items():
            if not _is_number(value):
                raise self._snapshot_damage(f"learned \"{key}\" is not a number")
        input_dir = data.get("input_dir")
        if input_dir is not None and not isinstance(input_dir, str):
            raise self._snapshot_damage("\"input_dir\" is not a string")
        state = RunState(run_id=data["run_id"], created_at=data["created_at"], model=data["model"],
                         records={}, learned=dict(learned), input_dir=input_dir)
        for index, item in enumerate(data["batches"], 1):
            try:
                if not isinstance(item, dict):
                    raise ValueError("not a table")
                record = BatchRecord.from_dict(item)
            except (ValueError, TypeError, KeyError) as exc:
                raise self._snapshot_damage(f"batch #{index} is unreadable ({exc})") from None
            if record.batch_id in state.records:
                raise self._snapshot_damage(f"batch \"{record.batch_id}\" appears twice")
            state.records[record.batch_id] = record
        return state, data["journal_seq"]

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
                obj = json.loads(line)
            except ValueError as exc:
                raise self._journal_damage(path, lineno, f"not valid JSON ({exc})") from None
            if not (isinstance(obj, dict) and isinstance(obj.get("seq"), int) and isinstance(obj.get("run"), str)
                    and len(obj) == 3 and (isinstance(obj.get("record"), dict)
                                           or isinstance(obj.get("learned"), dict))):
                raise self._journal_damage(path, lineno, "not a journal entry")
            entries.append(_Entry(path, lineno, obj["seq"], obj))
        return entries, complete

    def _replay(self, state: RunState, snapshot_seq: int, entries: list[_Entry]) -> int:
        """Apply the entries above `snapshot_seq` to `state`; returns the last seq applied (or the snapshot's)."""
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
            if "record" in obj:
                try:
                    record = BatchRecord.from_dict(obj["record"])
                except (ValueError, TypeError, KeyError) as exc:
                    raise self._journal_damage(entry.path, entry.lineno, f"unreadable record ({exc})") from None
                state.records[record.batch_id] = record
            else:
                learned = obj["learned"]
                if not (isinstance(learned.get("key"), str) and _is_number(learned.get("value"))):
                    raise self._journal_damage(entry.path, entry.lineno, "unreadable learned value")
                state.learned[learned["key"]] = learned["value"]
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
        if not _is_number(value):
            raise TypeError(f"learned {key!r} must be a number, got {value!r}")
        if self._state is not None:
            self._state.learned[key] = value
        self._queue({"learned": {"key": key, "value": value}})

    def _queue(self, body: dict[str, Any]) -> None:
        if self._run_id is None:
            raise RuntimeError("load() or create() the checkpoint before journaling changes")
        with self._buf_lock:
            self._seq += 1
            line = {"seq": self._seq, "run": self._run_id, **body}
            data = json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
            self._buffer.append(_Line(self._seq, data))
            self._lines_since_rotation += 1
            self._bytes_since_rotation += len(data)

    def _lock_for_loop(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._async_lock is None or self._async_lock_loop is not loop:
            self._async_lock, self._async_lock_loop = asyncio.Lock(), loop
        return self._async_lock

    async def commit(self) -> None:
        """Make every change journaled so far durable (write + fsync in a thread); await it before a create."""
        if self._durable_seq >= self._seq:
            return
        async with self._lock_for_loop():
            await asyncio.to_thread(self.commit_sync)

    def commit_sync(self) -> None:
        """`commit` for callers without an event loop."""
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
                _write_all(fd, data[: max(1, len(data) // 2)])
            crash_point("mid-journal-write")  # every pass counts, so that point:n means the n-th write
            _write_all(fd, data)
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
                _fsync_dir(self.journal_path.parent)
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
        header = {
            "format": FORMAT,
            "version": VERSION,
            "run_id": state.run_id,
            "created_at": state.created_at,
            "model": state.model,
            "journal_seq": seq,  # the last journal change this snapshot includes
            "learned": dict(state.learned),
        }
        if state.input_dir is not None:
            header["input_dir"] = state.input_dir
        rows = [_freeze(record) for record in state.records.values()]
        return _Snapshot(header, rows, secrets, seq)

    def _encode(self, snapshot: _Snapshot) -> bytes:
        return b"".join(self._encode_parts(snapshot))

    def _encode_parts(self, snapshot: _Snapshot) -> Iterator[bytes]:
        """The snapshot's bytes in pieces of about 1 MiB: a 10,000-batch JSON snapshot is never held whole
        (holding it, its dicts and its text at once cost ~90 MB of peak memory). TOML comes in one piece."""
        if self._toml:
            batches = [_redacted(values_dict(*row), snapshot.secrets) for row in snapshot.rows]
            yield (tomli_w.dumps({**snapshot.header, "batches": batches}) + _TOML_END).encode("utf-8")
            return
        # one batch per line: readable, greppable, and far smaller than an indented dump
        parts = ["{\n"]
        parts += [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},\n" for k, v in snapshot.header.items()]
        if not snapshot.rows:
            parts.append(' "batches": []\n}\n')
            yield "".join(parts).encode("utf-8")
            return
        parts.append(' "batches": [\n')
        size, last = 0, len(snapshot.rows) - 1
        for index, row in enumerate(snapshot.rows):
            line = json.dumps(_redacted(values_dict(*row), snapshot.secrets), ensure_ascii=False)
            parts.append(f"  {line},\n" if index < last else f"  {line}\n")
            size += len(line)
            if size >= _SNAPSHOT_PIECE:
                yield "".join(parts).encode("utf-8")
                parts, size = [], 0
        parts.append(" ]\n}\n")
        yield "".join(parts).encode("utf-8")

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
                fd = os.open(self._tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    if crash_point_armed("mid-snapshot-write"):
                        data = self._encode(snapshot)
                        _write_all(fd, data[: len(data) // 2])
                    crash_point("mid-snapshot-write")  # every pass counts (point:n is the n-th snapshot)
                    written = 0
                    for piece in self._encode_parts(snapshot):  # streamed: memory stays flat
                        _write_all(fd, piece)
                        written += len(piece)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._keep_backup()
                os.replace(self._tmp_path, self.path)
                _fsync_dir(self.path.parent)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(self._tmp_path)
                raise self._write_error(exc) from exc
            self._durable_seq = max(self._durable_seq, snapshot.seq)
            self._snapshot_size = written
            # 3. the journal so far becomes P.journal.bak; new lines start a fresh journal
            try:
                self._drop_journal_fd()
                if self.journal_path.exists():
                    os.replace(self.journal_path, self.journal_bak_path)
                self._journal_size = 0
                _fsync_dir(self.path.parent)
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

    # ---- lock ----------------------------------------------------------------------------------

    def acquire_lock(self) -> None:
        """Take the checkpoint for this process; raises CheckpointLocked naming the holder when it is taken."""
        if self._lock_fd is not None:
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
                last = self._read_lock_file()
                if last is not None and not self._gone(last):
                    raise CheckpointLocked(self.path, last) from None
                if time.monotonic() >= deadline:  # someone holds it but we cannot tell who
                    raise CheckpointLocked(self.path, last or LockHolder(0, "unknown host", 0.0)) from None
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
            self._lock_fd, self._holder = fd, holder
            return

    def check_one_name(self) -> None:
        """Refuse (CheckpointError) a checkpoint file that has another name, a hard link: a run through that name
        would take another lock, and each compaction's rename would split the names into diverging copies."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint {self.path}: {exc.strerror or exc}") from exc
        if info.st_nlink <= 1:
            return
        with contextlib.suppress(OSError):  # a crash inside _keep_backup leaves P.bak as P's second name
            if info.st_nlink == 2 and os.path.samestat(info, os.stat(self.bak_path)):
                return
        raise CheckpointError(
            f"checkpoint {self.path} has {info.st_nlink} hard links (another name points to the same file, "
            f"device {info.st_dev} inode {info.st_ino}): a second run through that name would not see this one's "
            "lock. Remove the other name(s) and use one path for the checkpoint (a symlink is fine)"
        )

    @staticmethod
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

    def release_lock(self) -> None:
        """Give the checkpoint up (idempotent)."""
        fd, self._lock_fd, self._holder = self._lock_fd, None, None
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
                return self._read_lock_file() or LockHolder(0, "unknown host", 0.0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None  # the file is left from a holder that died: nobody holds it
        finally:
            os.close(fd)

    def _read_lock_file(self) -> LockHolder | None:
        try:
            data = json.loads(self.lock_path.read_bytes() or b"null")
            return LockHolder(int(data["pid"]), str(data["host"]), float(data["started_at"]))
        except (OSError, ValueError, TypeError, KeyError):
            return None
