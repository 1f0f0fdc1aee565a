"""`gembatch-tui retry-failures`: the failed requests of a run, with their original lines, as new batch files."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterator
from pathlib import Path

from ..config import DEFAULT_CHECKPOINT_NAME
from ..input_scan import MAX_FILE_BYTES
from .common import (
    EXIT_OK,
    WorkflowError,
    add_config_flag,
    byte_size,
    existing_dir,
    load_config,
    parser_for,
    positive_int,
    print_json,
)
from .jsonl import Limits, check_prefix, input_keys, write_batch_files
from .resultset import ResultSet

DEFAULT_RETRY_DIR = "retry"

DESCRIPTION = """\
Write the failed requests of a run (result lines with "error") into new batch files, each request with
its original line from the input folder, in input order: RETRY_DIR/retry-001.jsonl, retry-002.jsonl, ...
Running the normal command on RETRY_DIR then pays only for the failures again, and `gembatch-tui merge
--retry-output` puts the retried answers in place of the failed ones.

For a second round, give the first retry run's output with --retry-output: requests that a retry
answered are not written again, requests whose retry failed too are. Files are written atomically;
running the command again gives the same files, and a RETRY_DIR holding other .jsonl files is refused."""

EPILOG = """\
example:
  gembatch-tui retry-failures --input batches --output results
  gembatch-tui --input results/retry --output results/retry/results
  gembatch-tui merge --input batches --output results --retry-output results/retry/results --to merged.jsonl

exit codes:
  0  the retry files are written (or there was nothing to retry)
  2  bad usage or an unreadable input file (nothing was written)"""


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("retry-failures", DESCRIPTION, EPILOG)
    parser.add_argument("--input", metavar="DIR", type=Path, required=True, help="the run's input folder")
    parser.add_argument("--output", metavar="DIR", type=Path, required=True, help="the run's output folder")
    parser.add_argument("--retry-dir", metavar="DIR", type=Path,
                        help=f"folder for the retry batch files (default: OUTPUT/{DEFAULT_RETRY_DIR})")
    parser.add_argument("--retry-output", metavar="DIR", type=Path, action="append", default=[],
                        help="output folder of an earlier retry run; its answers count (may be repeated)")
    parser.add_argument("--include-missing", action="store_true",
                        help="also write requests that have no result at all (e.g. their job ended FAILED or "
                             "EXPIRED, so no result file exists)")
    parser.add_argument("--max-requests", metavar="N", type=positive_int, help="most requests per retry file")
    parser.add_argument("--max-bytes", metavar="B", type=byte_size,
                        help="most bytes per retry file (default and upper bound: 2 GiB)")
    parser.add_argument("--max-tokens", metavar="T", type=positive_int,
                        help="most estimated input tokens per retry file")
    parser.add_argument("--prefix", metavar="NAME", default="retry", help="file name prefix (default: retry)")
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")
    add_config_flag(parser)
    return parser


def failed_keys(input_dir: Path, output_dir: Path, retry_dirs: list[Path],
                include_missing: bool) -> tuple[dict[Path, set[str]], int, int]:
    """Per input file, the keys to retry; and the counts of failed and missing requests."""
    wanted: dict[Path, set[str]] = {}
    failed = missing = 0
    for view in ResultSet(input_dir, output_dir, retry_dirs).files():
        keys: set[str] = set()
        for item in view.keys:
            if item.result is None:
                missing += 1
                if include_missing:
                    keys.add(item.key)
            elif item.result.failed:
                failed += 1
                keys.add(item.key)
        if keys:
            wanted[view.input_path] = keys
    return wanted, failed, missing


def run(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    existing_dir(args.input, "--input")
    existing_dir(args.output, "--output")
    retry_dir: Path = args.retry_dir if args.retry_dir is not None else args.output / DEFAULT_RETRY_DIR
    if retry_dir.resolve() in (args.input.resolve(), args.output.resolve()):
        raise WorkflowError(f"--retry-dir: {retry_dir} must be a folder of its own (not the input or output folder)")
    prefix = check_prefix(args.prefix)
    max_bytes = args.max_bytes if args.max_bytes is not None else MAX_FILE_BYTES
    if max_bytes > MAX_FILE_BYTES:
        raise WorkflowError(f"--max-bytes: {max_bytes} is over the API's limit of {MAX_FILE_BYTES} bytes per file")
    wanted, failed, missing = failed_keys(args.input, args.output, args.retry_output, args.include_missing)
    total = sum(len(keys) for keys in wanted.values())
    origin: list[tuple[Path, int]] = []

    def lines() -> Iterator[bytes]:
        first_pass = not origin
        for path, keys in wanted.items():
            for line_no, key, body in input_keys(path):
                if key in keys:
                    if first_pass:
                        origin.append((path, line_no))
                    yield body.strip()

    written = []
    if total:
        limits = Limits(args.max_requests, max_bytes, args.max_tokens, settings.tokens_per_byte)
        written = write_batch_files(lines, retry_dir, prefix, limits,
                                    lambda i: f"{origin[i - 1][0]}:{origin[i - 1][1]}")
    retry_results = retry_dir / "results"
    if args.json:
        print_json({
            "failed": failed, "missing": missing, "written": total, "retry_dir": str(retry_dir),
            "files": [{"path": str(w.path), "requests": w.requests, "bytes": w.bytes, "est_tokens": w.est_tokens}
                      for w in written],
            "suggested_output": str(retry_results),
        })
        return EXIT_OK
    extra = f", {missing} without any result" if missing else ""
    print(f"{failed} failed request(s){extra} in {args.input}")
    if not total:
        hint = " (give --include-missing to retry those without a result)" if missing else ""
        print(f"nothing to retry{hint}")
        return EXIT_OK
    print(f"{total} request(s) written to {len(written)} file(s) in {retry_dir}:")
    for w in written:
        print(f"  {w.path.name}  {w.requests} requests  ~{w.est_tokens} tokens")
    q = shlex.quote
    retry_flags = "".join(f" --retry-output {q(str(d))}" for d in [*args.retry_output, retry_results])
    print("next:")
    print(f"  gembatch-tui --input {q(str(retry_dir))} --output {q(str(retry_results))}")
    print(f"  gembatch-tui merge --input {q(str(args.input))} --output {q(str(args.output))}{retry_flags} "
          "--to merged.jsonl")
    print(f"(the retry run keeps its own checkpoint, {retry_results / DEFAULT_CHECKPOINT_NAME})")
    return EXIT_OK
