"""Request lines and batch files: streamed line reading, line checks, and writing size-limited batch files.

Batch files are written into a hidden temporary folder next to their destination and renamed into place only
when all of them are complete, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..durable import fsync_folder
from ..input_scan import INPUT_SUFFIX, MAX_FILE_BYTES, LineProblem, json_type, natural_key, parse_line_object
from .common import WorkflowError

_READ_BUFFER = 1024 * 1024


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line without its line break) for every line of a file, streamed."""
    try:
        handle = path.open("rb", buffering=_READ_BUFFER)
    except OSError as exc:
        raise WorkflowError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if raw.endswith(b"\r\n"):
                raw = raw[:-2]
            elif raw.endswith(b"\n"):
                raw = raw[:-1]
            yield number, raw


def request_key(obj: dict[str, object]) -> str:
    """The key of a `{"key", "request"}` line; raises LineProblem when the line is not one."""
    if "key" not in obj:
        raise LineProblem("missing 'key'")
    key = obj["key"]
    if not isinstance(key, str) or not key:
        raise LineProblem(f"'key' must be a non-empty string, got {json_type(key, empty_str=True)}")
    if "request" not in obj:
        raise LineProblem("missing 'request'")
    if not isinstance(obj["request"], dict):
        raise LineProblem(f"'request' must be a JSON object, got {json_type(obj['request'])}")
    return key


def input_keys(path: Path) -> Iterator[tuple[int, str, bytes]]:
    """(line number, key, line) of every request line of an engine input file; a bad line is a WorkflowError."""
    for line_no, body in read_lines(path):
        if not body.strip():
            continue
        try:
            key = request_key(parse_line_object(body, line_no))
        except LineProblem as problem:
            raise WorkflowError(f"{path}:{line_no}: {problem}") from None
        yield line_no, key, body


def estimate_tokens(body: bytes, tokens_per_byte: float) -> int:
    """The engine's token estimate of one request line (core/input_scan)."""
    return math.ceil(len(body) * tokens_per_byte)


# --- batch files -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """Most requests, bytes and estimated tokens per batch file (None: no limit of the user's)."""

    max_requests: int | None = None
    max_bytes: int = MAX_FILE_BYTES
    max_tokens: int | None = None
    tokens_per_byte: float = 0.25

    def describe(self) -> str:
        parts = [f"{self.max_bytes} bytes"]
        if self.max_requests is not None:
            parts.insert(0, f"{self.max_requests} requests")
        if self.max_tokens is not None:
            parts.append(f"{self.max_tokens} estimated tokens")
        return ", ".join(parts)


@dataclass(slots=True)
class _Fill:
    requests: int = 0
    bytes: int = 0
    tokens: int = 0


class Chunker:
    """Greedy and deterministic: a line goes into the current file unless it would break a limit there."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.files: list[_Fill] = []

    def place(self, body: bytes) -> int:
        """The index of the file that gets this line (without its line break); raises LineProblem if none can."""
        size = len(body) + 1
        tokens = estimate_tokens(body, self.limits.tokens_per_byte)
        if size > self.limits.max_bytes:
            raise LineProblem(f"the request alone is {size} bytes, over the limit of {self.limits.max_bytes} "
                              "bytes per file")
        if self.limits.max_tokens is not None and tokens > self.limits.max_tokens:
            raise LineProblem(f"the request alone is about {tokens} tokens, over the limit of "
                              f"{self.limits.max_tokens} tokens per file")
        current = self.files[-1] if self.files else None
        if current is None or not self._fits(current, size, tokens):
            current = _Fill()
            self.files.append(current)
        current.requests += 1
        current.bytes += size
        current.tokens += tokens
        return len(self.files) - 1

    def _fits(self, fill: _Fill, size: int, tokens: int) -> bool:
        lim = self.limits
        if lim.max_requests is not None and fill.requests + 1 > lim.max_requests:
            return False
        if fill.bytes + size > lim.max_bytes:
            return False
        return lim.max_tokens is None or fill.tokens + tokens <= lim.max_tokens


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """One batch file written: its path and what it holds."""

    path: Path
    requests: int
    bytes: int
    est_tokens: int


def batch_file_names(prefix: str, count: int) -> list[str]:
    """`PREFIX-001.jsonl` ... numbered from 1, at least three digits (natural order sorts them anyway)."""
    width = max(3, len(str(count)))
    return [f"{prefix}-{i:0{width}d}{INPUT_SUFFIX}" for i in range(1, count + 1)]


def _visible_jsonl(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted((p.name for p in folder.iterdir()
                   if p.name.endswith(INPUT_SUFFIX) and not p.name.startswith(".")), key=natural_key)


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_batch_files(
    lines: Callable[[], Iterable[bytes]],
    out_dir: Path,
    prefix: str,
    limits: Limits,
    where: Callable[[int], str] = lambda index: f"request #{index}",
) -> list[WrittenFile]:
    """Write the lines `lines()` yields into batch files under `limits`, atomically.

    `lines` is called twice: once to plan the files (every check runs before anything is written), once to
    write them. `where(i)` names the i-th line (from 1) in an error. A folder already holding other `.jsonl`
    files, or a file of the same name with other content, is refused: batch files of a run must not change.
    """
    chunker = Chunker(limits)
    for index, body in enumerate(lines(), start=1):
        try:
            chunker.place(body)
        except LineProblem as problem:
            raise WorkflowError(f"{where(index)}: {problem}") from None
    names = batch_file_names(prefix, len(chunker.files))
    others = [name for name in _visible_jsonl(out_dir) if name not in set(names)]
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise WorkflowError(f"{out_dir}: the folder already holds other .jsonl files ({shown}); every .jsonl "
                            "file in a folder becomes a batch job, so choose an empty folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".gembatch-tmp-", dir=out_dir))
    except OSError as exc:
        raise WorkflowError(f"{out_dir}: cannot create the folder: {exc.strerror or exc}") from None
    try:
        written = _write_staged(lines, staging, names, limits)
        for item in written:
            final = out_dir / item.path.name
            if final.exists() and _sha256(final) != _sha256(item.path):
                raise WorkflowError(f"{final}: exists with other content; a batch file that may already be "
                                    "submitted is not replaced: move it aside or choose an empty folder")
        result = []
        for item in written:
            final = out_dir / item.path.name
            os.replace(item.path, final)
            result.append(WrittenFile(final, item.requests, item.bytes, item.est_tokens))
        fsync_folder(out_dir)
        return result
    except OSError as exc:
        raise WorkflowError(f"{out_dir}: cannot write batch files: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_staged(lines: Callable[[], Iterable[bytes]], staging: Path, names: list[str],
                  limits: Limits) -> list[WrittenFile]:
    chunker = Chunker(limits)
    written: list[WrittenFile] = []
    handle: BinaryIO | None = None
    try:
        for body in lines():
            index = chunker.place(body)
            if index == len(written):
                if handle is not None:
                    _close(handle)
                path = staging / names[index]
                handle = path.open("wb")
                written.append(WrittenFile(path, 0, 0, 0))
            assert handle is not None
            handle.write(body)
            handle.write(b"\n")
    finally:
        if handle is not None:
            _close(handle)
    if len(written) != len(names):
        raise WorkflowError("the input changed while it was being split; run the command again")
    return [WrittenFile(w.path, f.requests, f.bytes, f.tokens) for w, f in zip(written, chunker.files, strict=True)]


def _close(handle: BinaryIO) -> None:
    try:
        handle.flush()
        os.fsync(handle.fileno())
    finally:
        handle.close()


_SAFE_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_prefix(prefix: str) -> str:
    """A batch file prefix safe as a file name and a display name."""
    if not _SAFE_PREFIX.match(prefix) or len(prefix) > 100:
        raise WorkflowError(f"--prefix: use letters, digits, '.', '_' and '-' (at most 100, not starting "
                            f"with '.' or '-'), got {prefix!r}")
    return prefix
