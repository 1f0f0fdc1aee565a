"""Checking a downloaded result file against its input and moving it into place atomically."""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class ResultCheck:
    """What a result file holds compared with its input file."""

    lines: int
    succeeded: int
    failed: int
    missing_keys: list[str]
    unexpected_keys: list[str]
    duplicate_keys: list[str]
    sha256: str = ""  # hex digest of the result file checked (to notice later that the saved copy changed)
    size: int = 0  # its bytes

    @property
    def complete(self) -> bool:
        """Every input key has exactly one result line, and no other key is there."""
        return not (self.missing_keys or self.unexpected_keys or self.duplicate_keys)

    def problem(self) -> str:
        """A one-line description of what is wrong, for the log and the batch's last error."""
        parts = []
        for label, keys in (
            ("missing", self.missing_keys),
            ("unexpected", self.unexpected_keys),
            ("duplicate", self.duplicate_keys),
        ):
            if keys:
                shown = ", ".join(repr(k) for k in keys[:3])
                more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
                parts.append(f"{len(keys)} {label} key(s): {shown}{more}")
        return "; ".join(parts)


def _input_keys(input_path: Path) -> Iterator[str]:
    with input_path.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                yield str(json.loads(raw)["key"])


_U64 = 0xFFFF_FFFF_FFFF_FFFF


def _fingerprint(key: str) -> int:
    """A second 64-bit hash, independent of `hash(key)` (keyed SipHash of another string): a slot matches only
    when both agree."""
    return (hash(key + "\x00") & _U64) or 1


class _KeyTable:
    """The input's keys as (hash, fingerprint) pairs in an open-addressing table, with a result count per key.

    16 bytes a slot, at most 2/3 full, instead of ~3 x 60-120 bytes a key for a list and two sets of key strings:
    checking the results of a 1 GiB input (a million keys) costs ~35 MB, not ~200 MB (and the engine runs four
    downloads at a time). Two independent 64-bit hashes must both collide for two keys to be taken as one.
    """

    def __init__(self) -> None:
        self._size = 1024
        self._hashes = array("Q", bytes(8 * self._size))
        self._prints = array("Q", bytes(8 * self._size))
        self.counts = bytearray(self._size)  # results seen per slot, capped at 2
        self.keys = 0

    def _slot(self, key: str) -> tuple[int, int, int]:
        """(slot, hash, fingerprint): the slot holding `key`, or the empty slot where it would go."""
        h, f = (hash(key) & _U64) or 1, _fingerprint(key)
        hashes, prints, mask = self._hashes, self._prints, self._size - 1
        i = h & mask
        while (seen := hashes[i]) != 0:
            if seen == h and prints[i] == f:
                break
            i = (i + 1) & mask
        return i, h, f

    def add(self, key: str) -> bool:
        """Remember an input key; False when it (or a key indistinguishable from it) is there already."""
        i, h, f = self._slot(key)
        if self._hashes[i]:
            return False
        self._hashes[i], self._prints[i] = h, f
        self.keys += 1
        if self.keys * 3 > self._size * 2:
            self._grow()
        return True

    def find(self, key: str) -> int:
        """The slot of an input key, or -1."""
        i, _, _ = self._slot(key)
        return i if self._hashes[i] else -1

    def _grow(self) -> None:
        old_hashes, old_prints = self._hashes, self._prints
        self._size *= 2
        hashes = self._hashes = array("Q", bytes(8 * self._size))
        prints = self._prints = array("Q", bytes(8 * self._size))
        self.counts = bytearray(self._size)
        mask = self._size - 1
        for j, h in enumerate(old_hashes):
            if h:
                i = h & mask
                while hashes[i]:
                    i = (i + 1) & mask
                hashes[i], prints[i] = h, old_prints[j]


def check_results(input_path: Path, result_path: Path) -> ResultCheck:
    """Stream both files and compare keys; a result line without a key counts as unexpected.

    Memory grows by ~16-32 bytes per input key (see _KeyTable); an input with a repeated key (validation
    rejects those) is checked the exact way instead.
    """
    table = _KeyTable()
    for key in _input_keys(input_path):
        if not table.add(key):
            return _check_exact(input_path, result_path)
    counts = table.counts
    other_seen: set[str] = set()  # keys that are not in the input, seen so far (rare)
    duplicates: list[str] = []
    tally = _ResultLines()
    matched = 0
    for key in tally.keys(result_path):
        slot = table.find(key)
        if slot < 0:
            if key in other_seen:
                duplicates.append(key)
            else:
                tally.unexpected.append(key)
                other_seen.add(key)
        elif counts[slot]:
            duplicates.append(key)
            counts[slot] = 2
        else:
            counts[slot] = 1
            matched += 1
    missing: list[str] = []
    if matched < table.keys:  # read the input again for the names of the keys no result line had
        missing = [key for key in _input_keys(input_path) if not counts[table.find(key)]]
    return ResultCheck(tally.lines, tally.succeeded, tally.failed, missing, tally.unexpected, duplicates,
                       tally.digest.hexdigest(), tally.size)


def _check_exact(input_path: Path, result_path: Path) -> ResultCheck:
    """The same check with every key held as a string (for inputs whose keys are not unique)."""
    expected = list(_input_keys(input_path))
    expected_set = set(expected)
    seen: set[str] = set()
    duplicates: list[str] = []
    tally = _ResultLines()
    for key in tally.keys(result_path):
        if key in seen:
            duplicates.append(key)
        elif key not in expected_set:
            tally.unexpected.append(key)
        seen.add(key)
    missing = [k for k in expected if k not in seen]
    return ResultCheck(tally.lines, tally.succeeded, tally.failed, missing, tally.unexpected, duplicates,
                       tally.digest.hexdigest(), tally.size)


@dataclass(slots=True)
class _ResultLines:
    """Counts of a result file's lines, and the unexpected entries in file order (lines with no key, or not
    JSON, are added here; callers add the keys the input does not have)."""

    lines: int = 0
    succeeded: int = 0
    failed: int = 0
    unexpected: list[str] = field(default_factory=list)
    digest: Any = field(default_factory=hashlib.sha256)  # of every byte read, blank lines included
    size: int = 0

    def keys(self, result_path: Path) -> Iterator[str]:
        """The key of each result line with one, in file order, counting every line on the way."""
        with result_path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                self.digest.update(raw)
                self.size += len(raw)
                if not raw.strip():
                    continue
                self.lines += 1
                try:
                    item = json.loads(raw)
                except ValueError:
                    self.unexpected.append(f"<line {number}: not JSON>")
                    continue
                key = item.get("key") if isinstance(item, dict) else None
                if key is None:
                    self.unexpected.append(f"<line {number}: no key>")
                    continue
                if "error" in item:
                    self.failed += 1
                else:
                    self.succeeded += 1
                yield str(key)


def key_results_by_order(input_path: Path, result_path: Path) -> bool:
    """Give keyless result lines the input's keys in input order, when every line lacks a key and the counts
    agree (inline results of a file-input job may not echo keys); returns True when the file was rewritten."""
    with result_path.open("rb") as handle:
        lines = [json.loads(raw) for raw in handle if raw.strip()]
    if not lines or any(isinstance(line, dict) and "key" in line for line in lines):
        return False
    keys = list(_input_keys(input_path))
    if len(keys) != len(lines) or not all(isinstance(line, dict) for line in lines):
        return False
    with result_path.open("w", encoding="utf-8") as out:
        for key, line in zip(keys, lines, strict=True):
            out.write(json.dumps({"key": key, **line}, ensure_ascii=False) + "\n")
    return True


@dataclass(frozen=True, slots=True)
class SavedResults:
    """What a saved results file looks like on disk now: size, mtime and (when read) its hash."""

    size: int
    mtime_ns: int
    sha256: str | None = None


def saved_results(path: Path, *, with_hash: bool) -> SavedResults | None:
    """The file's size and mtime (and SHA-256 when `with_hash`), or None when it is not there (or unreadable)."""
    try:
        info = path.stat()
        if not with_hash:
            return SavedResults(info.st_size, info.st_mtime_ns)
        with path.open("rb", buffering=0) as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None
    return SavedResults(info.st_size, info.st_mtime_ns, digest)
