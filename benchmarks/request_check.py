"""Request check: what checking every request line against the API's schema costs the scan before upload.

A JSONL input of about 1 KB lines (default 100 MB; `--mb 1024` for 1 GiB) mixes the request shapes users send:
plain text (70 %), a systemInstruction with generation settings (20 %), a responseSchema with thinkingConfig
(10 %). Each figure is the best of `--repeat` runs:
1. the engine's `scan_file` with request_check = "off" and = "error": the difference is the check's cost per
   request and its share of the scan;
2. `check_request` alone on the parsed requests: the quick path (most lines) and the full pydantic validation
   with the SDK's models (what a line that is not plainly valid costs);
3. `gembatch-tui lint` (`check_file`) on the same file.
Target: the check adds at most 10 µs per request to the scan.

    python benchmarks/request_check.py [--quick] [--mb 100] [--repeat 3] [--no-doc]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import md_table, section_body, update_doc, verdict
from gembatch.core.input_scan import ScannedFile, scan_file
from gembatch.core.request_check import check_request, is_plainly_valid
from gembatch.core.workflow.lint import check_file

TARGET_US = 10.0
NOTES = """\
Lines that are not plainly valid (a mistake, or a shape the quick path does not know) take the full validation
with the SDK's pydantic models, the "full" row: those are the lines to fix before a run. The run's check wants
errors only, so snake_case names take the quick path there; `lint` also reports them as warnings, so a
snake_case file takes the full path under `lint`."""
LINE_TEXT = 900  # characters of prompt: lines of about 1 KB


def request_for(index: int, text: str) -> dict:
    """One request of the mix: plain (70 %), with a system instruction (20 %), with a schema (10 %)."""
    contents = [{"role": "user", "parts": [{"text": f"{index}: {text}"}]}]
    kind = index % 10
    if kind < 7:
        return {"contents": contents}
    if kind < 9:
        return {"contents": contents, "systemInstruction": {"parts": [{"text": "Answer in one short paragraph."}]},
                "generationConfig": {"temperature": 0.2, "maxOutputTokens": 512, "topP": 0.9}}
    return {"contents": contents, "generationConfig": {
        "responseMimeType": "application/json", "thinkingConfig": {"thinkingBudget": 0},
        "responseSchema": {"type": "OBJECT", "properties": {"answer": {"type": "STRING"},
                                                            "score": {"type": "INTEGER"}}, "required": ["answer"]}}}


def snake_case(value: object) -> object:
    """`value` with every object key in the SDK's snake_case (generationConfig -> generation_config)."""
    if isinstance(value, dict):
        return {re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower(): snake_case(item) for key, item in value.items()}
    if isinstance(value, list):
        return [snake_case(item) for item in value]
    return value


def write_input(path: Path, size: int, snake: bool = False) -> int:
    """About `size` bytes of request lines (with the SDK's snake_case names when `snake`); returns how many."""
    filler = ("lorem ipsum dolor sit amet " * (LINE_TEXT // 27 + 1))[:LINE_TEXT]
    written = count = 0
    with path.open("w", encoding="utf-8") as out:
        while written < size:
            request = request_for(count, filler)
            body = snake_case(request) if snake else request
            line = json.dumps({"key": f"req-{count:09d}", "request": body}) + "\n"
            out.write(line)
            written += len(line)
            count += 1
    return count


def best_of(repeat: int, run: Callable[[], object]) -> float:
    """The shortest wall time of `repeat` runs of `run()`, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(size_mb: float, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "input.jsonl"
        requests = write_input(path, int(size_mb * 1_000_000))
        size = path.stat().st_size
        check_request(request_for(9, "warm up"))  # pydantic builds the SDK's validators on first use
        scanned = scan_file(path, request_check="error")
        assert isinstance(scanned, ScannedFile), scanned
        off = best_of(repeat, lambda: scan_file(path, request_check="off"))
        on = best_of(repeat, lambda: scan_file(path, request_check="error"))
        sample = [json.loads(line)["request"] for _, line in zip(range(20_000), path.open("rb"), strict=False)]
        quick_share = sum(is_plainly_valid(r) for r in sample) / len(sample)
        alone = best_of(repeat, lambda: [check_request(r) for r in sample])
        full = best_of(1, lambda: [check_request(r, quick=False) for r in sample])
        lint = best_of(1, lambda: check_file(path))
        path.unlink()
        snake = Path(folder) / "snake.jsonl"
        snake_requests = write_input(snake, int(size_mb * 1_000_000), snake=True)
        snake_on = best_of(repeat, lambda: scan_file(snake, request_check="error"))
    return {"size": size, "requests": requests, "scan_off": off, "scan_on": on, "sample": len(sample),
            "quick_share": quick_share, "alone": alone, "full": full, "lint": lint, "snake_on": snake_on,
            "snake_requests": snake_requests}


def report(figures: dict) -> tuple[str, str, bool]:
    n, mb = figures["requests"], figures["size"] / 1_000_000
    extra_us = (figures["scan_on"] - figures["scan_off"]) / n * 1e6
    ok = extra_us <= TARGET_US
    rows = [
        ("scan, request_check = \"off\"", f"{figures['scan_off']:.2f} s", f"{figures['scan_off'] / n * 1e6:.1f} µs",
         f"{mb / figures['scan_off']:.0f} MB/s"),
        ("scan, request_check = \"error\"", f"{figures['scan_on']:.2f} s", f"{figures['scan_on'] / n * 1e6:.1f} µs",
         f"{mb / figures['scan_on']:.0f} MB/s"),
        ("the check's share of the scan", f"{figures['scan_on'] - figures['scan_off']:.2f} s", f"{extra_us:.1f} µs",
         f"{(figures['scan_on'] / figures['scan_off'] - 1) * 100:.0f} % more time"),
        ("scan, request_check = \"error\", the same requests with snake_case names", f"{figures['snake_on']:.2f} s",
         f"{figures['snake_on'] / figures['snake_requests'] * 1e6:.1f} µs", ""),
        (f"check_request alone ({figures['quick_share'] * 100:.0f} % take the quick path)", "",
         f"{figures['alone'] / figures['sample'] * 1e6:.1f} µs", ""),
        ("check_request with full SDK-model validation for every line", "",
         f"{figures['full'] / figures['sample'] * 1e6:.1f} µs", ""),
        ("`gembatch-tui lint` (check_file)", f"{figures['lint']:.2f} s", f"{figures['lint'] / n * 1e6:.1f} µs",
         f"{mb / figures['lint']:.0f} MB/s"),
    ]
    table = md_table(("step", "wall time", "per request", "throughput"), rows)
    summary = (f"{mb:,.0f} MB, {n:,} requests: the request check adds {extra_us:.1f} µs per request to the scan "
               f"({figures['scan_off'] / n * 1e6:.1f} → {figures['scan_on'] / n * 1e6:.1f} µs, "
               f"{mb / figures['scan_on']:.0f} MB/s with it); target ≤ {TARGET_US:g} µs {verdict(ok)}")
    return table, summary, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 MB instead of 100 MB")
    parser.add_argument("--mb", type=float, help="input size in MB (default 100; the issue asks about 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each scan; the best counts")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    size_mb = args.mb or (20 if args.quick else 100)
    figures = measure(size_mb, args.repeat)
    table, summary, _ok = report(figures)
    print(table)
    if not args.no_doc:
        intro = __doc__.split("\n\n")[1].split("\n\n    python")[0]
        update_doc("request_check", section_body("request_check", intro, table, summary, NOTES))
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
