"""`gembatch-tui split`: one large JSONL of requests into batch files under the given limits and the API's."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from ..input_scan import INPUT_SUFFIX, MAX_FILE_BYTES, LineProblem, json_type, parse_line_object
from .common import (
    EXIT_OK,
    WorkflowError,
    add_config_flag,
    byte_size,
    human_bytes,
    load_config,
    parser_for,
    positive_int,
    print_json,
)
from .jsonl import Limits, check_prefix, read_lines, write_batch_files

KEY_PREFIX = "req-"

DESCRIPTION = """\
Split one large JSONL file of requests into batch files (one batch job each) that are all under the
given limits and under the API's 2 GB per file.

Each line is either {"key": "...", "request": {...}} or a bare request object ({"contents": [...], ...}).
A line without a key gets one from its line number: line 17 gets "req-000017", so running the command
again gives the same keys. Keys must be unique across the whole file.

Every line is checked before anything is written; a bad line is reported as FILE:LINE: reason and
nothing is written. The files are named PREFIX-001.jsonl, PREFIX-002.jsonl, ... Running the same command
on the same input gives byte-identical files. The output folder must not hold other .jsonl files."""

EPILOG = """\
example:
  gembatch-tui split requests.jsonl --out batches --max-requests 10000 --max-bytes 500MB
  gembatch-tui --input batches --output results

exit codes:
  0  the batch files are written
  2  bad usage or a bad input line (nothing was written)"""


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("split", DESCRIPTION, EPILOG)
    parser.add_argument("source", metavar="INPUT.jsonl", type=Path, help="the JSONL file of requests")
    parser.add_argument("--out", metavar="DIR", type=Path, required=True,
                        help="folder for the batch files (created if missing)")
    parser.add_argument("--max-requests", metavar="N", type=positive_int, help="most requests per file")
    parser.add_argument("--max-bytes", metavar="B", type=byte_size,
                        help="most bytes per file, e.g. 500MB or 1GiB (default and upper bound: 2 GiB)")
    parser.add_argument("--max-tokens", metavar="T", type=positive_int,
                        help="most estimated input tokens per file (the engine's estimate: bytes x "
                             "tokens_per_byte of the config, default 0.25); keeps each job under the "
                             "enqueued-token quota")
    parser.add_argument("--prefix", metavar="NAME",
                        help="file name prefix (default: the input file's name without .jsonl)")
    parser.add_argument("--json", action="store_true", help="print the files written as JSON")
    add_config_flag(parser)
    return parser


class _Source:
    """The input file's lines as `{"key", "request"}` lines, with keys assigned where missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.line_of: list[int] = []  # request index (from 0) -> input line number, filled by the first pass
        self.assigned = 0

    def lines(self) -> Iterator[bytes]:
        first_pass = not self.line_of
        seen: dict[str, int] = {}
        for line_no, body in read_lines(self.path):
            if not body.strip():
                continue
            try:
                key, data, assigned = _keyed(body, line_no)
            except LineProblem as problem:
                raise WorkflowError(f"{self.path}:{line_no}: {problem}") from None
            first = seen.setdefault(key, line_no)
            if first != line_no:
                how = " (assigned from the line number)" if assigned else ""
                raise WorkflowError(f"{self.path}:{line_no}: duplicate key {key!r}{how}; first seen on line {first}")
            if first_pass:
                self.line_of.append(line_no)
                self.assigned += assigned
            yield data
        if not seen:
            raise WorkflowError(f"{self.path}: no request lines")

    def where(self, index: int) -> str:
        return f"{self.path}:{self.line_of[index - 1]}"


def _keyed(body: bytes, line_no: int) -> tuple[str, bytes, bool]:
    """(key, the line to write, whether the key was assigned); the request's own bytes are kept as they are."""
    obj = parse_line_object(body, line_no)
    assigned_key = f"{KEY_PREFIX}{line_no:06d}"
    stripped = body.strip()
    if "request" in obj:
        if not isinstance(obj["request"], dict):
            raise LineProblem(f"'request' must be a JSON object, got {json_type(obj['request'])}")
        if "key" in obj:
            key = obj["key"]
            if not isinstance(key, str) or not key:
                raise LineProblem(f"'key' must be a non-empty string, got {json_type(key, empty_str=True)}")
            return key, stripped, False
        # insert the key as the first member: {"request": ...} -> {"key":"req-…","request": ...}
        head = b'{"key":' + json.dumps(assigned_key).encode() + b","
        return assigned_key, head + stripped[1:], True
    if "key" in obj:
        raise LineProblem("has 'key' but no 'request'; write {\"key\": ..., \"request\": {...}}")
    if "contents" not in obj:
        raise LineProblem("neither {\"key\", \"request\"} nor a bare request object (no 'contents')")
    data = b'{"key":' + json.dumps(assigned_key).encode() + b',"request":' + stripped + b"}"
    return assigned_key, data, True


def run(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    source: Path = args.source
    if not source.is_file():
        raise WorkflowError(f"{source}: {'is not a file' if source.exists() else 'file not found'}")
    prefix = check_prefix(args.prefix if args.prefix else source.name.removesuffix(INPUT_SUFFIX) or "batch")
    max_bytes = args.max_bytes if args.max_bytes is not None else MAX_FILE_BYTES
    if max_bytes > MAX_FILE_BYTES:
        raise WorkflowError(f"--max-bytes: {max_bytes} is over the API's limit of {MAX_FILE_BYTES} bytes per file")
    out_dir: Path = args.out
    if out_dir.exists() and not out_dir.is_dir():
        raise WorkflowError(f"--out: is not a folder: {out_dir}")
    if out_dir.resolve() == source.parent.resolve():
        raise WorkflowError(f"--out: {out_dir} is the input file's folder; every .jsonl file there would become "
                            "a batch job: choose another folder")
    limits = Limits(args.max_requests, max_bytes, args.max_tokens, settings.tokens_per_byte)
    reader = _Source(source)
    written = write_batch_files(reader.lines, out_dir, prefix, limits, reader.where)
    total = sum(w.requests for w in written)
    if args.json:
        print_json({
            "source": str(source), "out": str(out_dir), "requests": total, "keys_assigned": reader.assigned,
            "files": [{"path": str(w.path), "requests": w.requests, "bytes": w.bytes, "est_tokens": w.est_tokens}
                      for w in written],
        })
        return EXIT_OK
    print(f"{total} requests from {source} -> {len(written)} batch file(s) in {out_dir} "
          f"(limits per file: {limits.describe()})")
    for w in written:
        print(f"  {w.path.name}  {w.requests} requests  {human_bytes(w.bytes)}  ~{w.est_tokens} tokens")
    if reader.assigned:
        print(f"{reader.assigned} line(s) had no key and got one from their line number ({KEY_PREFIX}NNNNNN)")
    print(f"next: gembatch-tui --input {out_dir} --output RESULTS_DIR")
    return EXIT_OK
