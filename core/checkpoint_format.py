"""The checkpoint's bytes: encode and decode a snapshot and a journal line, check them, migrate older versions.

Pure: no file, no clock, no environment; `checkpoint_store` reads and writes, and names the file in its errors.

A snapshot is JSON (one batch per line) or TOML (tomli-w, ended by a marker line); its header says
{"format": "gembatch-checkpoint", "version": N}. A journal line is {"seq", "run", "record" | "learned"}.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import tomli_w

from .model import BatchRecord, HistoryEntry, values_dict
from .redact import redact

FORMAT = "gembatch-checkpoint"
VERSION = 2
REBUILD_HINT = "--rebuild-from-server"
TOML_END = "# end of gembatch checkpoint\n"  # TOML cut at a line boundary still parses; this tells us it was not
_SNAPSHOT_PIECE = 1 << 20  # characters of batch lines per piece of a streamed JSON snapshot


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


class FormatProblem(ValueError):
    """What is wrong with a snapshot or a journal line; the store adds the file's name and the way out."""


class NotACheckpoint(FormatProblem):
    """The file has no {"format": "gembatch-checkpoint"}: some other file."""


class NewerFormat(FormatProblem):
    """The file's format version is newer than this program knows."""

    def __init__(self, version: int) -> None:
        self.version = version
        super().__init__(f"format version {version}")


# ---- versions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Migration:
    """One step from format version N to N+1: `header` rewrites the snapshot's top-level table, `record` one
    batch's table (in the snapshot, or in a journal line written next to a snapshot of version N).

    `record` must leave a batch already in the newer shape as it is: until the first compaction after an upgrade,
    the journal behind an old snapshot can hold lines of both versions."""

    header: Callable[[dict[str, Any]], None]
    record: Callable[[dict[str, Any]], None]


def _as_it_is(_: dict[str, Any]) -> None:
    """Nothing to rewrite."""


# Version 2 names what version 1 grew into without a bump: "input_dir" in the header, and in each batch
# "result_sha256", "result_size", "result_mtime_ns" (added together), "upload_lifetime", "upload_active",
# "results_inline", "upload_adopted". A version 1 file may lack any of them; their defaults mean "not known" (no
# saved-results check, an upload not yet seen ACTIVE, the server's 48 h, the input folder of this run), which is
# how the engine reads such a file; so the step rewrites nothing, and the file is written back as version 2.
MIGRATIONS: dict[int, Migration] = {
    1: Migration(header=_as_it_is, record=_as_it_is),
}


def _version_of(data: dict[str, Any]) -> int:
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FormatProblem(f"\"version\" is {version!r}, not a format version")
    if version > VERSION:
        raise NewerFormat(version)
    if any(step not in MIGRATIONS for step in range(version, VERSION)):  # a table with a hole: a bug, not the file
        raise AssertionError(f"no migration from checkpoint format version {version} to {VERSION}")
    return version


def migrate_record(item: dict[str, Any], version: int) -> dict[str, Any]:
    """A batch's table as written by format `version`, brought to this program's version (in place)."""
    for step in range(version, VERSION):
        MIGRATIONS[step].record(item)
    return item


# ---- decoding ------------------------------------------------------------------------------------


def is_number(value: Any) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


_HEADER = {"run_id": str, "created_at": float, "model": str, "journal_seq": int, "learned": dict, "batches": list}


def decode_snapshot(raw: bytes, *, toml: bool) -> tuple[RunState, int, int]:
    """The run state in a snapshot's bytes, the last journal seq it includes, and the version it was written in.

    Raises NotACheckpoint, NewerFormat, or FormatProblem saying what is damaged."""
    if not raw.strip():
        raise FormatProblem("the file is empty")
    kind = "TOML" if toml else "JSON"
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text) if toml else json.loads(text)
    except ValueError as exc:
        raise FormatProblem(f"it is not valid {kind} ({exc}); it may have been cut short") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise NotACheckpoint(f"no \"format\": \"{FORMAT}\"")
    version = _version_of(data)
    if toml and not text.endswith(TOML_END):
        raise FormatProblem(f"its last line {TOML_END.strip()!r} is missing; it was cut short")
    for step in range(version, VERSION):
        MIGRATIONS[step].header(data)
    for key, kind_of in _HEADER.items():
        value = data.get(key)
        ok = is_number(value) if kind_of is float else isinstance(value, kind_of) and not isinstance(value, bool)
        if not ok:
            raise FormatProblem(f"\"{key}\" is missing or not a {kind_of.__name__}")
    learned = data["learned"]
    for key, value in learned.items():
        if not is_number(value):
            raise FormatProblem(f"learned \"{key}\" is not a number")
    input_dir = data.get("input_dir")
    if input_dir is not None and not isinstance(input_dir, str):
        raise FormatProblem("\"input_dir\" is not a string")
    state = RunState(run_id=data["run_id"], created_at=data["created_at"], model=data["model"],
                     records={}, learned=dict(learned), input_dir=input_dir)
    for index, item in enumerate(data["batches"], 1):
        try:
            if not isinstance(item, dict):
                raise ValueError("not a table")
            record = BatchRecord.from_dict(migrate_record(item, version))
        except (ValueError, TypeError, KeyError) as exc:
            raise FormatProblem(f"batch #{index} is unreadable ({exc})") from None
        if record.batch_id in state.records:
            raise FormatProblem(f"batch \"{record.batch_id}\" appears twice")
        state.records[record.batch_id] = record
    return state, data["journal_seq"], version


def decode_journal_line(line: bytes) -> dict[str, Any]:
    """One journal line's object; FormatProblem when it is not one."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise FormatProblem(f"not valid JSON ({exc})") from None
    if not (isinstance(obj, dict) and isinstance(obj.get("seq"), int) and isinstance(obj.get("run"), str)
            and len(obj) == 3 and (isinstance(obj.get("record"), dict) or isinstance(obj.get("learned"), dict))):
        raise FormatProblem("not a journal entry")
    return obj


def apply_change(state: RunState, obj: dict[str, Any], version: int) -> None:
    """Apply one journal line's change (a record, or a learned value) written beside a snapshot of `version`."""
    if "record" in obj:
        try:
            record = BatchRecord.from_dict(migrate_record(obj["record"], version))
        except (ValueError, TypeError, KeyError) as exc:
            raise FormatProblem(f"unreadable record ({exc})") from None
        state.records[record.batch_id] = record
        return
    learned = obj["learned"]
    if not (isinstance(learned.get("key"), str) and is_number(learned.get("value"))):
        raise FormatProblem("unreadable learned value")
    state.learned[learned["key"]] = learned["value"]


# ---- encoding ------------------------------------------------------------------------------------


def redacted(data: dict[str, Any], secrets: tuple[str, ...]) -> dict[str, Any]:
    """A record's table with its free-text fields (error, wait reason, history notes) cleared of `secrets`."""
    if secrets:
        for key in ("last_error", "wait_reason"):
            if key in data:
                data[key] = redact(data[key], secrets)
        for entry in data.get("history", ()):
            entry["note"] = redact(entry["note"], secrets)
    return data


def encode_journal_line(seq: int, run_id: str, body: dict[str, Any]) -> bytes:
    """One journal line, newline included: {"seq", "run", and the body's "record" or "learned"}."""
    line = {"seq": seq, "run": run_id, **body}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def snapshot_header(state: RunState, seq: int) -> dict[str, Any]:
    """The snapshot's top-level fields, in the order they are written, for a snapshot that includes change `seq`."""
    header: dict[str, Any] = {
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
    return header


Row = tuple[tuple[Any, ...], list[HistoryEntry]]  # a record's field values (`record_values`) and its history


def encode_snapshot(header: dict[str, Any], rows: list[Row], secrets: tuple[str, ...], *,
                    toml: bool) -> Iterator[bytes]:
    """The snapshot's bytes in pieces of about 1 MiB: a 10,000-batch JSON snapshot is never held whole
    (holding it, its dicts and its text at once cost ~90 MB of peak memory). TOML comes in one piece."""
    if toml:
        batches = [redacted(values_dict(*row), secrets) for row in rows]
        yield (tomli_w.dumps({**header, "batches": batches}) + TOML_END).encode("utf-8")
        return
    # one batch per line: readable, greppable, and far smaller than an indented dump
    parts = ["{\n"]
    parts += [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},\n" for k, v in header.items()]
    if not rows:
        parts.append(' "batches": []\n}\n')
        yield "".join(parts).encode("utf-8")
        return
    parts.append(' "batches": [\n')
    size, last = 0, len(rows) - 1
    for index, row in enumerate(rows):
        line = json.dumps(redacted(values_dict(*row), secrets), ensure_ascii=False)
        parts.append(f"  {line},\n" if index < last else f"  {line}\n")
        size += len(line)
        if size >= _SNAPSHOT_PIECE:
            yield "".join(parts).encode("utf-8")
            parts, size = [], 0
    parts.append(" ]\n}\n")
    yield "".join(parts).encode("utf-8")
