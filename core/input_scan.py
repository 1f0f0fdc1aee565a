"""Validation of input files before upload: one streamed pass gives the verdict, the hash and the counts."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import stat
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from collections.abc import Callable

    from .request_check import CheckedRequest

MAX_FILE_BYTES = 2 * 1024**3
INPUT_SUFFIX = ".jsonl"
_READ_BUFFER = 1024 * 1024
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ScannedFile:
    """An input file that passed validation, with what the engine needs to know about it."""

    path: Path
    batch_id: str  # file name without ".jsonl"
    size_bytes: int
    sha256: str  # hex digest of the whole file
    request_count: int
    est_tokens: int
    mtime_ns: int = 0  # taken before the file was read: a change during the scan shows as a later mtime
    key_hashes: array[int] | None = field(default=None, repr=False, compare=False)  # hash(key) per request line
    request_warnings: tuple[str, ...] = ()  # with request_check = "warn": the lines the API would refuse (first few)
    request_warning_count: int = 0
    job_kind: str = "generate"  # "embed" when its lines are embedding requests (an embeddings batch job)


@dataclass(frozen=True)
class Rejection:
    """An input file that failed validation: where (line None for the whole file) and why."""

    path: Path
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class PassedOver:
    """An entry of the input folder that is not an input file, and why."""

    name: str  # printable: a name that is not valid UTF-8 is shown by `safe_name`
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


@dataclass
class InputSurvey:
    """What an input folder holds: the input files taken, bad names, and the entries passed over."""

    taken: list[Path] = field(default_factory=list)  # in natural order
    bad_names: list[Rejection] = field(default_factory=list)  # *.jsonl names that are not valid UTF-8
    passed_over: list[PassedOver] = field(default_factory=list)


def safe_name(name: str) -> str:
    """A file name as text that can be printed and stored: bytes that are not UTF-8 become \\xNN escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.scandir gives undecodable bytes as lone surrogates (surrogateescape)
        return False
    return True


LONGEST_RESULT_SUFFIX = ".results.partial-a10.jsonl"  # the longest name the engine writes beside NAME's results
MAX_STEM_BYTES = 255 - len(LONGEST_RESULT_SUFFIX)


def survey_input_folder(input_dir: Path) -> InputSurvey:
    """Sort the entries directly in `input_dir` by the input folder rules (see the README, "The input folder").

    Taken: names ending in lower-case `.jsonl`, not hidden, valid UTF-8, and not a symlink that points outside the
    folder. A taken entry is not opened here: a dangling link or a folder named `x.jsonl` is taken and then
    rejected by `scan_file`. A `.jsonl` name that is not valid UTF-8 is a bad input (`bad_names`). Everything
    else (other extensions, `.JSONL`, hidden names, subfolders, links to elsewhere) is passed over, with why.
    """
    survey = InputSurvey()
    home = os.path.realpath(input_dir)
    names: list[str] = []
    with os.scandir(input_dir) as entries:
        for entry in entries:
            reason = _passed_over_because(entry, home)
            if reason is not None:
                survey.passed_over.append(PassedOver(safe_name(entry.name), reason))
            elif not _utf8(entry.name):
                survey.bad_names.append(Rejection(input_dir / safe_name(entry.name), None,
                                                  "the file name is not valid UTF-8; rename the file"))
            elif len(os.fsencode(entry.name)) - len(INPUT_SUFFIX) > MAX_STEM_BYTES:
                survey.bad_names.append(Rejection(input_dir / entry.name, None, (
                    f"the file name is too long: its results file (NAME{LONGEST_RESULT_SUFFIX}) would not fit in "
                    f"a folder's 255-byte names; shorten the name before {INPUT_SUFFIX} to {MAX_STEM_BYTES} bytes")))
            else:
                names.append(entry.name)
    survey.taken = [input_dir / name for name in sorted(names, key=natural_key)]
    survey.passed_over.sort(key=lambda item: natural_key(item.name))
    return survey


def _passed_over_because(entry: os.DirEntry[str], home: str) -> str | None:
    name = entry.name
    if name.startswith("."):
        return "hidden"
    if not name.lower().endswith(INPUT_SUFFIX):
        return "a folder: subfolders are not read" if _is_dir(entry) else f"not a {INPUT_SUFFIX} file"
    if not name.endswith(INPUT_SUFFIX):
        return f"the extension must be lower-case {INPUT_SUFFIX}"
    if entry.is_symlink():
        target = os.path.realpath(entry.path)
        if os.path.dirname(target) != home:
            return f"a symlink to {safe_name(target)}, outside the input folder"
    return None


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def list_input_files(input_dir: Path) -> list[Path]:
    """The input files taken from `input_dir` (see `survey_input_folder`), in natural order (part_2 before
    part_10)."""
    return survey_input_folder(input_dir).taken


def natural_key(name: str) -> tuple[list[int | str], str]:
    """Sort key that compares runs of digits as numbers; the raw name breaks ties ("a01" vs "a1")."""
    # Splitting on a capturing group alternates text (even indices) and digits (odd indices),
    # so two keys always compare str with str and int with int.
    parts = re.split(r"([0-9]+)", name)
    return [int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)], name


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    with path.open("rb", buffering=0) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def scan_file(path: Path, tokens_per_byte: float = 0.25, request_check: str = "error",
              job_kind: str = "auto") -> ScannedFile | Rejection:
    """Validate one input file in a single streamed pass; the first problem found rejects it.

    `request_check` ("error", "warn", "off"): what a request the API would refuse does (core.request_check).
    `job_kind` ("auto", "generate", "embed"): the kind of batch job the file is for; "auto" takes it from the
    lines. Either way a file's lines must all be of one kind, and of the kind chosen.
    """
    if job_kind not in JOB_KINDS:
        raise ValueError(f"job_kind: expected one of {', '.join(JOB_KINDS)}, got {job_kind!r}")
    info = _stat_for_scan(path)
    if isinstance(info, str):
        return Rejection(path, None, info)
    try:
        with path.open("rb", buffering=_READ_BUFFER) as stream:
            return _Scan(path, tokens_per_byte, info.st_mtime_ns, request_check, job_kind).run(stream)
    except OSError as exc:
        return Rejection(path, None, f"cannot read: {_os_reason(exc)}")


def stat_inputs(paths: list[Path]) -> dict[Path, os.stat_result | None]:
    """`os.stat` of each path (None where it fails), for one thread hop instead of one per file."""
    found: dict[Path, os.stat_result | None] = {}
    for path in paths:
        try:
            found[path] = path.stat()
        except OSError:
            found[path] = None
    return found


def _stat_for_scan(path: Path) -> os.stat_result | str:
    """The file's stat, or why it cannot be scanned at all (missing, a loop, a directory, too big)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return "dangling symlink: its target does not exist" if path.is_symlink() else "file not found"
    except OSError as exc:
        return f"cannot read: {_os_reason(exc)}"
    if stat.S_ISDIR(info.st_mode):
        return "cannot read: is a directory, not a file"
    if not stat.S_ISREG(info.st_mode):
        return "cannot read: not a regular file"
    if info.st_size > MAX_FILE_BYTES:
        return _too_big(info.st_size)
    return info


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file"
    return exc.strerror or str(exc)


def _too_big(size: int) -> str:
    return f"file is {size} bytes, over the limit of {MAX_FILE_BYTES} bytes (2 GiB)"


class LineProblem(Exception):
    """Why one line cannot be used (the caller adds the file and line number)."""


class _Scan:
    """State of one pass over a file: the hash, the counts and the keys seen so far."""

    def __init__(self, path: Path, tokens_per_byte: float, mtime_ns: int, request_check: str = "error",
                 job_kind: str = "auto") -> None:
        self.path = path
        self.job_kind = job_kind
        self.kind: str | None = None  # the kind of the file's first request, and its line
        self.kind_line = 0
        self.request_check = _request_checker(request_check)
        self.request_warnings: list[str] = []
        self.request_warning_count = 0
        self.refused: Rejection | None = None  # the first request the API would refuse (with request_check = "error")
        self.tokens_per_byte = tokens_per_byte
        self.mtime_ns = mtime_ns
        self.hasher = hashlib.sha256()
        self.size = 0
        self.requests = 0
        self.tokens = 0
        self.keys = _KeyHashes()
        self.key_hashes = array("Q")

    def run(self, stream: BinaryIO) -> ScannedFile | Rejection:
        # One line at a time: memory is bounded by the longest line, not the file.
        for line_no, raw in enumerate(stream, start=1):
            self.hasher.update(raw)
            self.size += len(raw)
            if self.size > MAX_FILE_BYTES:  # the file grew after it was measured
                return Rejection(self.path, None, _too_big(self.size))
            try:
                self._check_line(_strip_newline(raw), line_no)
            except LineProblem as problem:
                return Rejection(self.path, line_no, str(problem))
        if self.refused is not None:  # a problem of the file's shape above (bad JSON, keys) is named first
            return self.refused
        if self.requests == 0:
            return Rejection(self.path, None, "empty file: no request lines")
        return ScannedFile(
            path=self.path,
            batch_id=self.path.name.removesuffix(INPUT_SUFFIX),
            size_bytes=self.size,
            sha256=self.hasher.hexdigest(),
            request_count=self.requests,
            est_tokens=self.tokens,
            mtime_ns=self.mtime_ns,
            key_hashes=self.key_hashes,
            request_warnings=tuple(self.request_warnings),
            request_warning_count=self.request_warning_count,
            job_kind=self.kind or "generate",
        )

    def _check_line(self, body: bytes, line_no: int) -> None:
        if not body.strip():
            return  # blank lines are allowed; they only count for line numbers
        obj = parse_line_object(body, line_no)
        key = obj.get("key", _MISSING)
        if key is _MISSING:
            raise LineProblem("missing 'key'")
        if not isinstance(key, str) or not key:
            raise LineProblem(f"'key' must be a non-empty string, got {json_type(key, empty_str=True)}")
        self.key_hashes.append(key_hash(key))
        if not self.keys.add(key):  # seen before, or a hash collision: read back to find the first line
            first = _first_line_with_key(self.path, key, line_no)
            if first is not None:
                raise LineProblem(f"duplicate key {key!r} (first seen on line {first})")
        request = obj.get("request", _MISSING)
        if request is _MISSING:
            raise LineProblem("missing 'request'")
        if not isinstance(request, dict):
            raise LineProblem(f"'request' must be a JSON object, got {json_type(request)}")
        self._check_kind(request_kind(request), line_no)
        if self.request_check is not None and self.refused is None:
            self._check_request(request, line_no)
        self.requests += 1
        self.tokens += math.ceil(len(body) * self.tokens_per_byte)

    def _check_kind(self, kind: str, line_no: int) -> None:
        """One kind of request per file (a batch job runs one method), and the kind the run asks for."""
        if self.job_kind != "auto" and kind != self.job_kind:
            raise LineProblem(
                f"{KIND_WORDS[kind]}, but job_kind is \"{self.job_kind}\" (--job-kind {self.job_kind}): "
                f"{_WRONG_KIND_EFFECT[self.job_kind]}; run it with --job-kind {kind} or auto")
        if self.kind is None:
            self.kind, self.kind_line = kind, line_no
        elif kind != self.kind:
            raise LineProblem(
                f"{KIND_WORDS[kind]}, but line {self.kind_line} is {KIND_WORDS[self.kind]}: the requests of one "
                "file must all be of one kind (its batch job either generates or embeds); put them in separate files")

    def _check_request(self, request: dict[str, object], line_no: int) -> None:
        check, strict = self.request_check  # type: ignore[misc]
        errors = check(request, errors_only=True).errors
        if not errors:
            return
        shown = "; ".join(str(error) for error in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        if strict:
            self.refused = Rejection(self.path, line_no, (
                f"the API would refuse this request: {shown}{more}. `gembatch-tui lint {self.path} --fix` "
                "rewrites what has one obvious fix; request_check = \"warn\" (--request-check warn) submits the "
                "file anyway"))
            return
        self.request_warning_count += 1
        if len(self.request_warnings) < 5:
            self.request_warnings.append(f"{self.path}:{line_no}: {shown}{more}")


KIND_WORDS = {"embed": "an embedding request (`content`)", "generate": "a generate request (`contents`)"}
_WRONG_KIND_EFFECT = {
    "generate": "a generate job would fail every embedding line inside the job, a day later",
    "embed": "an embeddings job answers only embedding requests (`content`)",
}


def _request_checker(mode: str) -> tuple[Callable[..., CheckedRequest], bool] | None:
    """The request check of a scan and whether its errors reject the file; None when it is off."""
    if mode == "off":
        return None
    if mode not in ("error", "warn"):
        raise ValueError(f"request_check: expected 'error', 'warn' or 'off', got {mode!r}")
    from .request_check import check_request  # imports the SDK's types: only when a scan needs them

    return check_request, mode == "error"


_MISSING = object()
_U64 = 0xFFFF_FFFF_FFFF_FFFF


def key_hash(key: str) -> int:
    """A key's 64-bit hash in this process (never 0: 0 marks an empty slot)."""
    return (hash(key) & _U64) or 1


class _KeyHashes:
    """The keys seen so far, as 64-bit hashes in an open-addressing table of 8-byte slots (at most 2/3 full).

    About 16 bytes a key instead of ~120 for a dict of key strings: the keys of a 1 GiB file of 1 KB lines (a
    million keys) cost ~16 MB, not ~130 MB. `add` answers False when the hash was there already: a duplicate
    key, or (about once in 10^7 files of a million keys) two keys whose hashes collide; the caller tells them
    apart by reading the file back.
    """

    def __init__(self) -> None:
        self._slots = array("Q", bytes(8 * 1024))
        self._mask = len(self._slots) - 1
        self._count = 0

    def add(self, key: str) -> bool:
        """Remember `key`; False when its hash was already there."""
        h = key_hash(key)
        slots, mask = self._slots, self._mask
        i = h & mask
        while (seen := slots[i]) != 0:
            if seen == h:
                return False
            i = (i + 1) & mask
        slots[i] = h
        self._count += 1
        if self._count * 3 > len(slots) * 2:
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._slots
        slots = array("Q", bytes(16 * len(old)))
        mask = len(slots) - 1
        for h in old:
            if h:
                i = h & mask
                while slots[i]:
                    i = (i + 1) & mask
                slots[i] = h
        self._slots, self._mask = slots, mask


class SharedKeys:
    """Finds keys used in more than one input file, from the files' key hashes (12 bytes a key, no key strings)."""

    def __init__(self) -> None:
        self._hashes = array("Q", bytes(8 * 1024))
        self._owners = array("l", bytes(8 * 1024))
        self._count = 0

    def add_file(self, owner: int, hashes: array[int]) -> list[tuple[int, int]]:
        """Remember a file's key hashes; returns (hash, earlier owner) for each hash another file had already."""
        clashes = []
        for h in hashes:
            previous = self._add(h, owner)
            if previous not in (-1, owner):
                clashes.append((h, previous))
        return clashes

    def _add(self, h: int, owner: int) -> int:
        slots, mask = self._hashes, len(self._hashes) - 1
        i = h & mask
        while (seen := slots[i]) != 0:
            if seen == h:
                return self._owners[i]
            i = (i + 1) & mask
        slots[i], self._owners[i] = h, owner
        self._count += 1
        if self._count * 3 > len(slots) * 2:
            self._grow()
        return -1

    def _grow(self) -> None:
        old_hashes, old_owners = self._hashes, self._owners
        size = 2 * len(old_hashes)
        self._hashes, self._owners = array("Q", bytes(8 * size)), array("l", bytes(8 * size))
        mask = size - 1
        for h, owner in zip(old_hashes, old_owners, strict=True):
            if h:
                i = h & mask
                while self._hashes[i]:
                    i = (i + 1) & mask
                self._hashes[i], self._owners[i] = h, owner


def find_shared_keys(files: list[ScannedFile], limit: int) -> tuple[list[tuple[str, Path, Path]], int]:
    """Keys that appear in more than one of `files`: up to `limit` of them as (key, first file, other file), and
    how many clashes there are in all. Reads a file again only to name a clashing key."""
    table = SharedKeys()
    found: list[tuple[str, Path, Path]] = []
    total = 0
    for index, item in enumerate(files):
        if item.key_hashes is None:
            continue
        for h, earlier in table.add_file(index, item.key_hashes):
            total += 1
            if len(found) >= limit:
                continue
            key = key_with_hash(item.path, h)
            if key is not None and key_with_hash(files[earlier].path, h) == key:  # not merely a hash collision
                found.append((key, files[earlier].path, item.path))
            else:
                total -= 1
    return found, total


def key_with_hash(path: Path, wanted: int) -> str | None:
    """The first key in an input file whose `key_hash` is `wanted` (None if none has it)."""
    with path.open("rb", buffering=_READ_BUFFER) as stream:
        for raw in stream:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            key = obj.get("key") if isinstance(obj, dict) else None
            if isinstance(key, str) and key_hash(key) == wanted:
                return key
    return None


def _first_line_with_key(path: Path, key: str, before: int) -> int | None:
    """The first line before line `before` whose key is `key` (None: the hashes merely collided)."""
    with path.open("rb", buffering=_READ_BUFFER) as stream:
        for line_no, raw in enumerate(stream, start=1):
            if line_no >= before:
                break
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("key") == key:
                return line_no
    return None


def _strip_newline(raw: bytes) -> bytes:
    if raw.endswith(b"\r\n"):
        return raw[:-2]
    if raw.endswith(b"\n"):
        return raw[:-1]
    return raw


def parse_line_object(body: bytes, line_no: int) -> dict[str, object]:
    """The line (without its line break) as a JSON object, or a LineProblem saying why it is not one."""
    if line_no == 1 and body.startswith(_BOM):
        raise LineProblem("file starts with a UTF-8 byte order mark (BOM); save it without one")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineProblem(f"invalid UTF-8 at byte offset {exc.start} of the line") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise LineProblem(f"bad JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise LineProblem("bad JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits (CPython's int conversion limit)
        raise LineProblem(f"bad JSON: {exc}") from None
    if not isinstance(value, dict):
        raise LineProblem(f"line is not a JSON object, got {json_type(value)}")
    if _ESCAPED_SURROGATE.search(text):  # decoded UTF-8 holds no surrogate: only an escape such as \uD800 can
        _check_surrogates(value, "")
    return value


_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_surrogates(value: object, where: str) -> None:
    """A LineProblem for the first string (key or value) holding a lone surrogate: `json.loads` accepts
    "\\ud800", but it is not Unicode text and cannot be sent as UTF-8."""
    if isinstance(value, str):
        _check_text(value, where or "the line")
    elif isinstance(value, dict):
        for name, item in value.items():
            _check_text(name, f"a name in {where or 'the line'}")
            _check_surrogates(item, f"{where}.{name}" if where else repr(name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_surrogates(item, f"{where}[{index}]")


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        raise LineProblem(f"lone surrogate \\u{code:04x} in {where}: it is not valid Unicode text "
                          "(a UTF-16 surrogate escape must come as a high+low pair)") from None


def _reject_constant(name: str) -> object:
    # Python's json accepts NaN and Infinity; JSON (and the API) does not.
    raise LineProblem(f"bad JSON: {name} is not a valid JSON value")


JOB_KINDS = ("auto", "generate", "embed")  # setting job_kind: detected from the lines, or chosen for the run


def request_kind(request: dict[str, object]) -> str:
    """"embed" for an embedding request (an EmbedContentRequest: `content`, no `contents`), else "generate"."""
    return "embed" if "content" in request and "contents" not in request else "generate"


def json_type(value: object, empty_str: bool = False) -> str:
    """A value's JSON type name, as an error message shows it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if empty_str and not value else "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
