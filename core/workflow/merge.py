"""`gembatch-tui merge`: every result file of a run joined into one output, in input order, checked key by key."""

from __future__ import annotations

import argparse
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..durable import replacing
from .common import EXIT_OK, EXIT_PROBLEMS, WorkflowError, existing_dir, parser_for, print_json
from .resultset import LineReader, ResultSet

DESCRIPTION = """\
Join the results of a run (OUTPUT/NAME.results.jsonl for each INPUT/NAME.jsonl) into one output keyed by
request key, in input order: the input files in the order the engine takes them (natural order of the
names), then each file's lines. Each output line is the result line as the API wrote it:
{"key": ..., "response": {...}} or {"key": ..., "error": {...}}.

It checks that every input key has exactly one result, and reports missing keys (no result line, or no
result file at all), duplicate keys (two result lines for a key, or a key in two input lines) and
unexpected keys (a result for a key that no input line has). It counts the failed requests by error
class (google.rpc code and message) and the answered ones by finish reason.

Retried failures (see `gembatch-tui retry-failures`): give the retry run's output folder with
--retry-output; a retried answer replaces the failed (or missing) one. With several --retry-output
folders (several rounds of retries), later ones win; an answer always wins over an error."""

EPILOG = """\
example:
  gembatch-tui merge --input batches --output results --to merged.jsonl
  gembatch-tui merge --input batches --output results --retry-output results/retry/results --to merged.jsonl

exit codes:
  0  every input key has exactly one result (failed requests count as results; see the summary)
  3  some key is missing, duplicate or unexpected, or a result line is unreadable (--to is written anyway,
     without the missing keys)
  2  bad usage or an unreadable input file (nothing was written)"""


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("merge", DESCRIPTION, EPILOG)
    parser.add_argument("--input", metavar="DIR", type=Path, required=True, help="the run's input folder")
    parser.add_argument("--output", metavar="DIR", type=Path, required=True, help="the run's output folder")
    parser.add_argument("--to", metavar="FILE", type=Path,
                        help="write the merged results here (written whole, then renamed into place); "
                             "without it only the check and the summary are done")
    parser.add_argument("--retry-output", metavar="DIR", type=Path, action="append", default=[],
                        help="output folder of a run of retried failures; may be repeated, later ones win")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


@dataclass
class MergeReport:
    """What a merge found."""

    input_files: int = 0
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    from_retry: int = 0  # results taken from a retry output (answers and errors)
    retried_answers: int = 0  # failures of the first run that a retry answered
    missing: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    files_without_results: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    finish_reasons: Counter[str] = field(default_factory=Counter)
    output: str | None = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates or self.unexpected or self.unreadable)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "input_files": self.input_files, "requests": self.requests,
            "succeeded": self.succeeded, "failed": self.failed, "from_retry": self.from_retry,
            "retried_answers": self.retried_answers,
            "missing": self.missing, "duplicates": self.duplicates, "unexpected": self.unexpected,
            "unreadable": self.unreadable, "files_without_results": self.files_without_results,
            "errors": dict(self.errors.most_common()), "finish_reasons": dict(self.finish_reasons.most_common()),
            "output": self.output,
        }


def merge(input_dir: Path, output_dir: Path, retry_dirs: list[Path], to: Path | None) -> MergeReport:
    """Walk, check and (with `to`) write; the output appears only when complete."""
    results = ResultSet(input_dir, output_dir, retry_dirs)
    report = MergeReport()
    reader = LineReader()
    if to is not None:
        if to.is_dir():
            raise WorkflowError(f"--to: is a folder, not a file: {to}")
        to.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        stack.callback(reader.close)
        handle = stack.enter_context(replacing(to, buffering=1024 * 1024)) if to is not None else None
        for view in results.files():
            report.input_files += 1
            if not view.has_results:
                report.files_without_results.append(str(view.input_path))
            report.duplicates.extend(view.duplicates)
            report.unexpected.extend(view.unexpected)
            report.unreadable.extend(view.unreadable)
            for item in view.keys:
                report.requests += 1
                ref = item.result
                if ref is None:
                    report.missing.append(item.key)
                    continue
                if item.from_retry:
                    report.from_retry += 1
                    report.retried_answers += not ref.failed
                if ref.failed:
                    report.failed += 1
                    report.errors[ref.outcome] += 1
                else:
                    report.succeeded += 1
                    report.finish_reasons[ref.outcome] += 1
                if handle is not None:
                    handle.write(reader.read(ref))
                    handle.write(b"\n")
        report.duplicates[:0] = results.input_duplicates
        report.duplicates.extend(f"{key} (retry)" for key in results.retries.duplicates)
        report.unexpected.extend(f"{key} (retry)" for key in results.unexpected_retries())
        report.unreadable.extend(results.retries.unreadable)
    if to is not None:  # the block ended without an error: the merged file is in place and durable
        report.output = str(to)
    return report


def _shown(keys: list[str], limit: int = 10) -> str:
    text = ", ".join(keys[:limit])
    return text + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def print_report(report: MergeReport) -> None:
    line = (f"{report.requests} requests in {report.input_files} input file(s): {report.succeeded} answered, "
            f"{report.failed} failed, {len(report.missing)} missing")
    print(line)
    if report.from_retry:
        print(f"from retries: {report.from_retry} result(s), of which {report.retried_answers} answered a failure")
    for label, keys in (("missing", report.missing), ("duplicate", report.duplicates),
                        ("unexpected", report.unexpected)):
        if keys:
            print(f"{label} keys ({len(keys)}): {_shown(keys)}")
    for path in report.files_without_results:
        print(f"no result file for {path}")
    for problem in report.unreadable[:10]:
        print(f"unreadable result line: {problem}")
    if report.errors:
        print("failed requests by error class:")
        for label, count in report.errors.most_common():
            print(f"  {count:>8}  {label}")
    if report.finish_reasons:
        print("answered requests by finish reason:")
        for label, count in report.finish_reasons.most_common():
            print(f"  {count:>8}  {label}")
    if report.output:
        print(f"merged results written to {report.output}")
    print("check: OK, every input key has exactly one result" if report.ok
          else "check: FAILED (exit code 3)")


def run(args: argparse.Namespace) -> int:
    existing_dir(args.input, "--input")
    existing_dir(args.output, "--output")
    try:
        report = merge(args.input, args.output, args.retry_output, args.to)
    except OSError as exc:  # reading a result file, or writing --to durably (its folder fsync included)
        raise WorkflowError(f"{exc.filename or args.to or args.output}: {exc.strerror or exc}; the merge stopped") \
            from None
    if args.json:
        print_json(report.to_json())
    else:
        print_report(report)
    return EXIT_OK if report.ok else EXIT_PROBLEMS
