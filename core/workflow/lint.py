"""`gembatch-tui lint DIR|FILE [--fix] [--json]`: every problem of every request line, before a run pays for it."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..durable import replacing
from ..input_scan import KIND_WORDS, LineProblem, json_type, list_input_files, parse_line_object, request_kind
from ..request_check import check_request
from .common import EXIT_OK, EXIT_PROBLEMS, WorkflowError, parser_for, print_json

DESCRIPTION = """\
Check every request line of batch input files against the API's request schema (taken from the
google-genai SDK's own types), so that a line the API would refuse is found before the upload, not a
day later inside the job. Each problem is shown as FILE:LINE: severity: field: what is wrong; fix: ...

Errors are what the API refuses: unknown fields (the SDK's `config`; `thinking_config`, `temperature` or
`response_schema` outside `generationConfig`; `system_instruction` inside it), `contents` or
`systemInstruction` given as a plain string, wrong types, bad JSON, a missing or repeated key. Warnings
are the SDK's snake_case names (`generation_config`) where the API documents camelCase ones.

With --fix, the problems that have one obvious correct form (names, nesting, a string that must be
wrapped as a Content or Part) are rewritten in place: each fixed file is written to a temporary file
and renamed over the original, and lines that need nothing keep their exact bytes. A run refuses a
file with errors (setting request_check = "error", the default; "warn" submits it anyway)."""

EPILOG = """\
example:
  gembatch-tui lint batches
  gembatch-tui lint batches/part-001.jsonl --fix

exit codes:
  0  no errors (warnings alone are listed but exit 0; after --fix: no error left)
  3  errors found (after --fix: some could not be fixed)
  2  bad usage: a path that is not there, or not a .jsonl file or folder"""


@dataclass(frozen=True)
class LintProblem:
    """One problem of one line of one file."""

    file: str
    line: int
    severity: str  # "error" or "warning"
    field: str
    message: str
    fix: str
    fixable: bool

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity}: {self.field}: {self.message}; fix: {self.fix}"


@dataclass
class FileReport:
    """The problems of one file, and (with --fix) how many lines were rewritten."""

    path: Path
    problems: list[LintProblem]
    fixed_lines: int = 0


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("lint", DESCRIPTION, EPILOG)
    parser.add_argument("paths", metavar="DIR|FILE", type=Path, nargs="+",
                        help="an input folder (its *.jsonl files) or one input file")
    parser.add_argument("--fix", action="store_true",
                        help="rewrite what has one obvious correct form (names, nesting); other lines keep their bytes")
    parser.add_argument("--json", action="store_true", help="print the problems as JSON")
    return parser


def lint_files(paths: list[Path]) -> list[Path]:
    """The input files named by `paths`: files as given, folders by the input folder rules."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = list_input_files(path)
            if not found:
                raise WorkflowError(f"{path}: no *.jsonl input files in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise WorkflowError(f"{path}: no such file or folder")
    return files


def _lines(path: Path) -> Iterator[tuple[int, bytes, bytes]]:
    """(line number, line without its line break, the line break) of each line."""
    with path.open("rb") as stream:
        for line_no, raw in enumerate(stream, start=1):
            body = raw.rstrip(b"\r\n")
            yield line_no, body, raw[len(body):]


def check_file(path: Path, fix: bool = False) -> FileReport:
    """Every problem of one input file; with `fix`, the file rewritten (atomically) where fixes apply."""
    report = FileReport(path, [])
    keys: dict[str, int] = {}
    kinds: dict[str, int] = {}  # request kind ("generate", "embed") -> the first line of that kind
    rewritten: dict[int, bytes] = {}
    for line_no, body, _ in _lines(path):
        if not body.strip():
            continue
        fixed = _check_line(path, line_no, body, keys, report.problems, kinds)
        if fixed is not None:
            rewritten[line_no] = fixed
    if fix and rewritten:
        _rewrite(path, rewritten)
        report.fixed_lines = len(rewritten)
    return report


def _check_line(path: Path, line_no: int, body: bytes, keys: dict[str, int],
                problems: list[LintProblem], kinds: dict[str, int] | None = None) -> bytes | None:
    """Adds the line's problems; returns the fixed line (without its line break) when a fix applies."""
    def problem(where: str, message: str, fix: str, severity: str = "error", fixable: bool = False) -> None:
        problems.append(LintProblem(str(path), line_no, severity, where, message, fix, fixable))

    try:
        obj = parse_line_object(body, line_no)
    except LineProblem as exc:
        problem("line", str(exc), "write the line as one JSON object")
        return None
    key = obj.get("key")
    if "key" not in obj:
        problem("key", "missing 'key'", 'add a unique "key": "..." to the line')
    elif not isinstance(key, str) or not key:
        problem("key", f"'key' must be a non-empty string, got {json_type(key, empty_str=True)}",
                "give each line a unique string key")
    elif key in keys:
        problem("key", f"duplicate key {key!r} (first seen on line {keys[key]})", "give each line a unique key")
    else:
        keys[key] = line_no
    request = obj.get("request")
    if not isinstance(request, dict):
        got = ("missing 'request'" if "request" not in obj
               else f"'request' must be a JSON object, got {json_type(request)}")
        problem("request", got, 'put the GenerateContentRequest under "request": {"contents": [...], ...}')
        return None
    if kinds is not None:
        kind = request_kind(request)
        kinds.setdefault(kind, line_no)
        first = min(kinds, key=kinds.__getitem__)
        if kind != first:  # the run refuses such a file: one batch job either generates or embeds
            problem("request", f"{KIND_WORDS[kind]}, but line {kinds[first]} is {KIND_WORDS[first]}: the requests "
                    "of one file must all be of one kind", "put the two kinds in separate files")
    checked = check_request(request)
    for item in checked.problems:
        problem(item.where, item.message, item.fix, item.severity, item.fixable)
    if checked.fixed is None:
        return None
    obj["request"] = checked.fixed
    compact = b'": ' not in body and b'", "' not in body
    separators = (",", ":") if compact else (", ", ": ")
    return json.dumps(obj, ensure_ascii=False, separators=separators).encode("utf-8")


def _rewrite(path: Path, rewritten: dict[int, bytes]) -> None:
    """The file with the fixed lines replaced, durably (a temporary beside it renamed over it), mode kept."""
    with replacing(path, mode=path.stat().st_mode & 0o7777) as handle:
        for line_no, body, ending in _lines(path):
            handle.write(rewritten.get(line_no, body) + ending)


def _summary(reports: list[FileReport], fix: bool) -> dict[str, Any]:
    problems = [p for r in reports for p in r.problems]
    left = [p for p in problems if not (fix and p.fixable)]
    return {
        "files": len(reports),
        "errors": sum(p.severity == "error" for p in problems),
        "warnings": sum(p.severity == "warning" for p in problems),
        "fixable": sum(p.fixable for p in problems),
        "fixed": sum(p.fixable for p in problems) if fix else 0,
        "fixed_lines": sum(r.fixed_lines for r in reports),
        "left": len(left),
        "errors_left": sum(p.severity == "error" for p in left),
    }


def run(args: argparse.Namespace) -> int:
    files = lint_files(args.paths)
    reports = []
    for path in files:
        try:
            reports.append(check_file(path, fix=args.fix))
        except OSError as exc:  # a --fix write (or its folder fsync) failed: the file is as it was, or fixed whole
            raise WorkflowError(f"{path}: {exc.strerror or exc}; lint stopped at this file") from None
    summary = _summary(reports, args.fix)
    if args.json:
        print_json({"summary": summary, "problems": [asdict(p) for r in reports for p in r.problems]})
    else:
        for report in reports:
            for item in report.problems:
                print(f"{item}{' (fixed)' if args.fix and item.fixable else ''}")
        line = (f"{summary['errors']} error(s), {summary['warnings']} warning(s) in {summary['files']} file(s)")
        if args.fix:
            line += f"; fixed {summary['fixed']} on {summary['fixed_lines']} line(s), {summary['left']} left"
        elif summary["fixable"]:
            line += f"; {summary['fixable']} can be fixed with --fix"
        print(line)
    return EXIT_PROBLEMS if summary["errors_left"] else EXIT_OK
