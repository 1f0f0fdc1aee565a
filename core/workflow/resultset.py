"""The results of a run, key by key: the engine's result files, plus retried answers that replace failures.

For each input file (in the engine's order: core/input_scan.list_input_files, then line order) every key is
resolved to its result line: the line in OUTPUT/NAME.results.jsonl, unless that is an error (or missing) and a
retry output folder holds an answer for the key. Among retry folders, later ones win over earlier ones; an
answer always wins over an error, an error never replaces an answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..input_scan import list_input_files, natural_key
from ..naming import result_file_name
from .common import WorkflowError
from .jsonl import input_keys

RESULT_SUFFIX = ".results.jsonl"

RPC_CODES = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
    10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
    15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}
_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")


def _normalize(message: str, limit: int = 120) -> str:
    text = _DIGITS.sub("N", _SPACE.sub(" ", message).strip())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def classify_error(error: object) -> str:
    """An error class: the google.rpc code name and number, and the message with numbers as N."""
    if not isinstance(error, dict):
        return f"UNKNOWN: {_normalize(str(error))}"
    code = error.get("code")
    status = error.get("status")
    if isinstance(code, int) and not isinstance(code, bool):
        label = f"{RPC_CODES.get(code, status or 'CODE')} ({code})"
    else:
        label = str(status or "UNKNOWN")
    message = error.get("message")
    return f"{label}: {_normalize(message)}" if isinstance(message, str) and message.strip() else label


def classify_response(response: object) -> str:
    """How an answered request ended: its finish reason, or why it has no answer text ("EMBEDDING" for the
    answer of an embedding request)."""
    if not isinstance(response, dict):
        return "no response"
    if isinstance(response.get("embedding"), dict):
        return "EMBEDDING"
    feedback = response.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        return f"blocked: {feedback['blockReason']}"
    candidates = response.get("candidates")
    if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
        return "no candidates"
    return str(candidates[0].get("finishReason") or "FINISH_REASON_UNSPECIFIED")


@dataclass(frozen=True, slots=True)
class ResultRef:
    """Where one result line is, and what it says."""

    path: Path
    offset: int
    length: int  # without the line break
    failed: bool
    outcome: str  # the error class when failed, else the finish reason


def index_results(path: Path) -> tuple[dict[str, list[ResultRef]], list[str]]:
    """Every key of a result file with its line(s), and the lines that are unreadable (as 'FILE:LINE: why')."""
    index: dict[str, list[ResultRef]] = {}
    unreadable: list[str] = []
    offset = 0
    try:
        handle = path.open("rb", buffering=1024 * 1024)
    except OSError as exc:
        raise WorkflowError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with handle:
        for line_no, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            body = raw.rstrip(b"\r\n")
            if not body.strip():
                continue
            try:
                item = json.loads(body)
            except ValueError:
                unreadable.append(f"{path}:{line_no}: not JSON")
                continue
            key = item.get("key") if isinstance(item, dict) else None
            if not isinstance(key, str):
                unreadable.append(f"{path}:{line_no}: no 'key'")
                continue
            failed = "error" in item
            outcome = classify_error(item["error"]) if failed else classify_response(item.get("response"))
            index.setdefault(key, []).append(ResultRef(path, start, len(body), failed, outcome))
    return index, unreadable


def result_files(folder: Path) -> list[Path]:
    """The `*.results.jsonl` files directly in a folder, in natural order."""
    names = [p.name for p in folder.iterdir() if p.name.endswith(RESULT_SUFFIX) and not p.name.startswith(".")]
    return [folder / name for name in sorted(names, key=natural_key)]


def _preferred(refs: list[ResultRef]) -> ResultRef:
    return next((r for r in refs if not r.failed), refs[0])


@dataclass
class RetryIndex:
    """The best retried result of each key over the retry output folders, later folders first."""

    best: dict[str, ResultRef] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)  # "key (in FOLDER)"
    unreadable: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, folders: list[Path]) -> RetryIndex:
        retries = cls()
        for folder in folders:
            if not folder.is_dir():
                raise WorkflowError(f"--retry-output: {'is not a folder' if folder.exists() else 'folder not found'}: "
                                    f"{folder}")
            in_folder: dict[str, list[ResultRef]] = {}
            for path in result_files(folder):
                index, unreadable = index_results(path)
                retries.unreadable.extend(unreadable)
                for key, refs in index.items():
                    in_folder.setdefault(key, []).extend(refs)
            for key, refs in in_folder.items():
                if len(refs) > 1:
                    retries.duplicates.append(f"{key} (in {folder})")
                ref = _preferred(refs)
                old = retries.best.get(key)
                if old is None or not ref.failed or old.failed:
                    retries.best[key] = ref
        return retries


@dataclass(frozen=True, slots=True)
class KeyResult:
    """One input request and the result that stands for it (None: no result anywhere)."""

    key: str
    line_no: int
    result: ResultRef | None
    from_retry: bool


@dataclass
class FileResults:
    """One input file and the results of its keys, in input order."""

    input_path: Path
    result_path: Path
    has_results: bool
    keys: list[KeyResult]
    duplicates: list[str]  # keys with more than one line in the result file
    unexpected: list[str]  # keys in the result file that are not in the input file
    unreadable: list[str]


class ResultSet:
    """Walks the input files in the engine's order and resolves each key's result."""

    def __init__(self, input_dir: Path, output_dir: Path, retry_dirs: list[Path] | None = None) -> None:
        self.input_dir = input_dir
        self.output_dir = output_dir
        self.retries = RetryIndex.load(list(retry_dirs or []))
        self.input_duplicates: list[str] = []  # keys found in two input files (or twice in one)
        self._seen: dict[str, Path] = {}

    def files(self) -> Iterator[FileResults]:
        paths = list_input_files(self.input_dir)
        if not paths:
            raise WorkflowError(f"--input: no .jsonl files in {self.input_dir}")
        for path in paths:
            yield self._resolve(path)

    def _resolve(self, path: Path) -> FileResults:
        result_path = self.output_dir / result_file_name(path.name.removesuffix(".jsonl"))
        if result_path.is_file():
            index, unreadable = index_results(result_path)
        else:
            index, unreadable = {}, []
        keys: list[KeyResult] = []
        duplicates: list[str] = []
        wanted: set[str] = set()
        for line_no, key, _ in input_keys(path):
            first = self._seen.setdefault(key, path)
            if first != path:
                self.input_duplicates.append(f"{key} (input: in {first} and {path})")
            elif key in wanted:
                self.input_duplicates.append(f"{key} (input: twice in {path})")
            wanted.add(key)
            refs = index.get(key, [])
            if len(refs) > 1:
                duplicates.append(key)
            main = _preferred(refs) if refs else None
            retried = self.retries.best.get(key)
            if retried is not None and (main is None or main.failed):
                keys.append(KeyResult(key, line_no, retried, True))
            else:
                keys.append(KeyResult(key, line_no, main, False))
        unexpected = [key for key in index if key not in wanted]
        return FileResults(path, result_path, result_path.is_file(), keys, duplicates, unexpected, unreadable)

    def unexpected_retries(self) -> list[str]:
        """Retried keys that no input file holds (call after walking every file)."""
        return [key for key in self.retries.best if key not in self._seen]


class LineReader:
    """Reads result lines by reference, keeping one open handle per file."""

    def __init__(self) -> None:
        self._handles: dict[Path, BinaryIO] = {}

    def read(self, ref: ResultRef) -> bytes:
        handle = self._handles.get(ref.path)
        if handle is None:
            handle = self._handles[ref.path] = ref.path.open("rb")
        handle.seek(ref.offset)
        return handle.read(ref.length)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
