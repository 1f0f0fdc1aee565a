"""Checking a downloaded result file against its input and moving it into place atomically."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ResultCheck:
    """What a result file holds compared with its input file."""

    lines: int
    succeeded: int
    failed: int
    missing_keys: list[str]
    unexpected_keys: list[str]
    duplicate_keys: list[str]

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


def _input_keys(input_path: Path) -> list[str]:
    keys = []
    with input_path.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                keys.append(str(json.loads(raw)["key"]))
    return keys


def check_results(input_path: Path, result_path: Path) -> ResultCheck:
    """Stream both files and compare keys; a result line without a key counts as unexpected."""
    expected = _input_keys(input_path)
    expected_set = set(expected)
    seen: set[str] = set()
    duplicates: list[str] = []
    unexpected: list[str] = []
    succeeded = failed = lines = 0
    with result_path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            lines += 1
            try:
                item = json.loads(raw)
            except ValueError:
                unexpected.append(f"<line {number}: not JSON>")
                continue
            key = item.get("key") if isinstance(item, dict) else None
            if key is None:
                unexpected.append(f"<line {number}: no key>")
                continue
            key = str(key)
            if "error" in item:
                failed += 1
            else:
                succeeded += 1
            if key in seen:
                duplicates.append(key)
            elif key not in expected_set:
                unexpected.append(key)
            seen.add(key)
    missing = [k for k in expected if k not in seen]
    return ResultCheck(lines, succeeded, failed, missing, unexpected, duplicates)


def move_into_place(temporary: Path, final: Path) -> None:
    """Rename a complete file into place and make the rename durable."""
    with temporary.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, final)
    folder = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
