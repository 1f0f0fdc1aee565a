"""Uploads: a 1 GiB batch file streams with bounded memory, and several files upload in parallel up to the limit.

1. Memory: a fresh child process validates (the engine's `scan_file`) and, in another fresh child, uploads (the
   engine's `Gateway.upload`, resumable, 8 MiB chunks) a 1 GiB JSONL file to the emulator (its own process).
   Growth = the peak RSS during the step (VmHWM, restarted just before it) minus the RSS before it (after
   imports and a small warm-up upload): tracemalloc does not see C buffers, RSS does (and ru_maxrss would start
   from the RSS of the parent that forked the child). Target: under 64 MB for the upload.
2. Parallelism: the engine uploads 8 files of 32 MiB with transfer.upload_concurrency = 1, 2, 4 and 8; the
   emulator's call log gives each upload session's span (upload.start to its last chunk) and the most sessions
   open at once is the concurrency actually observed.

    python benchmarks/uploads.py [--quick] [--gib 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    FAKE_KEY,
    EmulatorProcess,
    bench_settings,
    current_rss_mib,
    fake_key_env,
    md_table,
    peak_rss_mib,
    read_log,
    reset_peak_rss,
    run_child,
    section_body,
    update_doc,
    verdict,
    write_inputs,
)

TARGET_GROWTH_MB = 64
LINE_TEXT = 900  # characters of prompt per request line: lines of about 1 KB


def write_big_file(path: Path, size: int) -> int:
    """A valid JSONL file of about `size` bytes (unique keys, ~1 KB lines), written in 8 MiB blocks."""
    filler = ("lorem ipsum dolor sit amet " * (LINE_TEXT // 27 + 1))[:LINE_TEXT]
    written = lines = 0
    with path.open("wb") as out:
        while written < size:
            block = []
            for _ in range(8192):
                block.append(json.dumps({"key": f"req-{lines:09d}",
                                         "request": {"contents": [{"parts": [{"text": filler}]}]}}))
                lines += 1
            data = ("\n".join(block) + "\n").encode()
            out.write(data)
            written += len(data)
    return lines


# ---- children ----------------------------------------------------------------------------------------


def _baseline() -> float:
    """Restart the peak-RSS counter (VmHWM) and return the RSS now: the growth is measured from here."""
    reset_peak_rss()
    return current_rss_mib()


def child_scan(path: Path) -> dict:
    from gembatch.core.input_scan import ScannedFile, scan_file

    scan_file(path.with_name("warmup.jsonl"))
    before = _baseline()
    t0 = time.perf_counter()
    result = scan_file(path)
    elapsed = time.perf_counter() - t0
    return {"before_mb": before, "after_mb": peak_rss_mib(), "seconds": elapsed,
            "ok": isinstance(result, ScannedFile), "detail": str(result)[:200]}


def child_check(path: Path) -> dict:
    """Check a full result file of the big input (what the engine does after each download)."""
    from gembatch.core.results import check_results

    results = path.with_name("big.results.jsonl")
    check_results(path.with_name("warmup.jsonl"), path.with_name("warmup.results.jsonl"))
    before = _baseline()
    t0 = time.perf_counter()
    check = check_results(path, results)
    elapsed = time.perf_counter() - t0
    return {"before_mb": before, "after_mb": peak_rss_mib(), "seconds": elapsed, "ok": check.complete}


def write_results(path: Path, lines: int) -> None:
    """A result file with one short response per request key of the big file."""
    with path.open("w") as out:
        for i in range(lines):
            out.write(json.dumps({"key": f"req-{i:09d}", "response": {"candidates": [
                {"content": {"parts": [{"text": "ok"}], "role": "model"}}]}}) + "\n")


def child_upload(path: Path, base_url: str) -> dict:
    from gembatch.core.gateway import Gateway

    async def go() -> dict:
        gateway = Gateway(api_key=FAKE_KEY, model="gemini-2.5-flash", base_url=base_url, timeout=600.0)
        try:
            await gateway.upload(path.with_name("warmup.jsonl"), "warmup")  # the HTTP client, the SDK's imports
            before = _baseline()
            t0 = time.perf_counter()
            remote = await gateway.upload(path, "big")
            elapsed = time.perf_counter() - t0
            return {"before_mb": before, "after_mb": peak_rss_mib(), "seconds": elapsed,
                    "size": remote.size_bytes, "ok": remote.size_bytes == path.stat().st_size}
        finally:
            await gateway.aclose()

    return asyncio.run(go())


# ---- parent ------------------------------------------------------------------------------------------


def memory(gib: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="gembatch-bench-upload-") as tmp:
        root = Path(tmp)
        big = root / "big.jsonl"
        t0 = time.monotonic()
        lines = write_big_file(big, int(gib * 2**30))
        write_inputs(root, 1, 2, prefix="warmup")
        (root / "warmup_001.jsonl").rename(root / "warmup.jsonl")
        size = big.stat().st_size
        print(f"  {size / 2**30:.2f} GiB file of {lines} lines written in {time.monotonic() - t0:.1f} s", flush=True)
        scan = run_child([__file__, "--child", "scan", "--path", str(big)])
        print(f"  scan: {scan['seconds']:.1f} s, RSS {scan['before_mb']:.0f} -> {scan['after_mb']:.0f} MB "
              f"(+{scan['after_mb'] - scan['before_mb']:.0f} MB)", flush=True)
        write_results(root / "big.results.jsonl", lines)
        (root / "warmup.results.jsonl").write_text("".join(
            json.dumps({"key": json.loads(line)["key"], "response": {}}) + "\n"
            for line in (root / "warmup.jsonl").read_text().splitlines()))
        check = run_child([__file__, "--child", "check", "--path", str(big)])
        print(f"  result check: {check['seconds']:.1f} s, RSS {check['before_mb']:.0f} -> {check['after_mb']:.0f} "
              f"MB (+{check['after_mb'] - check['before_mb']:.0f} MB)", flush=True)
        (root / "big.results.jsonl").unlink()
        with EmulatorProcess() as emu:
            up = run_child([__file__, "--child", "upload", "--path", str(big), "--base-url", emu.base_url])
        print(f"  upload: {up['seconds']:.1f} s ({size / 2**20 / up['seconds']:.0f} MiB/s), RSS "
              f"{up['before_mb']:.0f} -> {up['after_mb']:.0f} MB (+{up['after_mb'] - up['before_mb']:.0f} MB)",
              flush=True)
    return {"size": size, "lines": lines, "scan": scan, "upload": up, "check": check}


def parallel(files: int, mib: int, concurrency: int) -> dict:
    """The engine uploads `files` files with upload_concurrency = `concurrency`; the most sessions open at once."""
    from gembatch.core.events import BatchChanged
    from gembatch.core.headless import build_engine
    from gembatch.core.model import Stage

    with tempfile.TemporaryDirectory(prefix="gembatch-bench-upload-") as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        for i in range(1, files + 1):
            write_big_file(root / "in" / f"part_{i:02d}.jsonl", mib * 2**20)
        log = root / "emulator.log"
        before = {Stage.NEW, Stage.VALIDATED, Stage.UPLOADING}
        with EmulatorProcess(log_path=log, pending_seconds=3600.0) as emu:
            # the files are copies of one another (only their size matters here): allow the duplicates
            settings = bench_settings(root, emu.base_url, upload_concurrency=concurrency,
                                      upload_ahead=max(16, files), request_timeout=300.0,
                                      allow_duplicate_inputs=True)
            engine = build_engine(settings, FAKE_KEY)

            def on_event(event: object) -> None:
                if isinstance(event, BatchChanged) and all(r.stage not in before for r in engine.records.values()):
                    engine.request_stop()  # every file is uploaded: the rest is not measured here

            engine.bus.subscribe(on_event)

            async def go() -> float:
                engine.store.acquire_lock()
                t0 = time.monotonic()
                try:
                    await engine.run()
                finally:
                    engine.store.release_lock()
                    await engine.gateway.aclose()
                return time.monotonic() - t0

            elapsed = asyncio.run(go())
        calls = read_log(log)
    spans: dict[str, list[float]] = {}
    for call in calls:
        if call.kind in ("upload.start", "upload.chunk") and call.resource:
            spans.setdefault(call.resource, []).append(call.at)
    intervals = [(min(ts), max(ts)) for ts in spans.values()]
    points = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda p: (p[0], p[1]))
    peak = depth = 0
    for _, step in points:
        depth += step
        peak = max(peak, depth)
    total = files * mib * 2**20
    return {"concurrency": concurrency, "observed": peak, "sessions": len(intervals), "seconds": elapsed,
            "mib_s": total / 2**20 / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 256 MiB file; 6 files of 16 MiB, limits 1 and 4")
    parser.add_argument("--gib", type=float, help="size of the big file in GiB (default 1)")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--child", choices=("scan", "upload", "check"), help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    fake_key_env()
    if args.child == "scan":
        print(json.dumps(child_scan(Path(args.path))))
        return 0
    if args.child == "check":
        print(json.dumps(child_check(Path(args.path))))
        return 0
    if args.child == "upload":
        print(json.dumps(child_upload(Path(args.path), args.base_url)))
        return 0

    gib = args.gib or (0.25 if args.quick else 1.0)
    print(f"uploads: memory with a {gib:g} GiB file ...", flush=True)
    mem = memory(gib)
    files, mib = (6, 16) if args.quick else (8, 32)
    limits = [1, 4] if args.quick else [1, 2, 4, 8]
    par = []
    for limit in limits:
        print(f"uploads: {files} files of {mib} MiB, upload_concurrency {limit} ...", flush=True)
        r = parallel(files, mib, limit)
        par.append(r)
        print(f"  observed {r['observed']} sessions at once; {r['seconds']:.1f} s ({r['mib_s']:.0f} MiB/s)",
              flush=True)

    up, scan, check = mem["upload"], mem["scan"], mem["check"]
    growth = up["after_mb"] - up["before_mb"]
    scan_growth = scan["after_mb"] - scan["before_mb"]
    check_growth = check["after_mb"] - check["before_mb"]
    ok_mem = growth < TARGET_GROWTH_MB and up["ok"]
    ok_par = all(r["observed"] == min(r["concurrency"], files) for r in par)
    summary = (f"{mem['size'] / 2**30:.2f} GiB upload: +{growth:.0f} MB peak RSS (target < {TARGET_GROWTH_MB} MB: "
               f"{verdict(ok_mem)}); validation of it +{scan_growth:.0f} MB, checking its results "
               f"+{check_growth:.0f} MB; parallel uploads observed at the "
               "emulator: " + ", ".join(f"limit {r['concurrency']} -> {r['observed']}" for r in par)
               + f" ({verdict(ok_par)})")
    print(summary)
    if args.no_doc:
        return 0
    mem_table = md_table(["step", "time", "peak RSS before", "peak RSS after", "growth", "target"], [
        ["validate (`scan_file`: hash, JSON, unique keys)", f"{scan['seconds']:.1f} s", f"{scan['before_mb']:.0f} MB",
         f"{scan['after_mb']:.0f} MB", f"+{scan_growth:.0f} MB", ""],
        ["upload (`Gateway.upload`, resumable, 8 MiB chunks)",
         f"{up['seconds']:.1f} s ({mem['size'] / 2**20 / up['seconds']:.0f} MiB/s)", f"{up['before_mb']:.0f} MB",
         f"{up['after_mb']:.0f} MB", f"+{growth:.0f} MB", f"< {TARGET_GROWTH_MB} MB: {verdict(ok_mem)}"],
        ["check its results after the download (`check_results`: every key once)", f"{check['seconds']:.1f} s",
         f"{check['before_mb']:.0f} MB", f"{check['after_mb']:.0f} MB", f"+{check_growth:.0f} MB", ""],
    ])
    par_table = md_table(["upload_concurrency", "sessions open at once (emulator log)", "time", "throughput",
                          "verdict"],
                         [[r["concurrency"], r["observed"], f"{r['seconds']:.1f} s", f"{r['mib_s']:.0f} MiB/s",
                           verdict(r["observed"] == min(r["concurrency"], files))] for r in par])
    intro = (
        f"Memory: a {mem['size'] / 2**30:.2f} GiB JSONL file ({mem['lines']} lines of about 1 KB) is validated in "
        "one fresh child process and uploaded in another, to the emulator in a third; growth is the child's "
        "peak RSS during the step (VmHWM, restarted just before it) minus its RSS before the step (after imports "
        "and a small warm-up upload). Parallelism: the engine uploads "
        f"{files} files of {mib} MiB with each limit; every upload session's span is read from the emulator's "
        "call log (upload.start to its last chunk, millisecond stamps) and the most spans open at once is the "
        "concurrency observed.")
    update_doc("uploads", section_body("uploads", intro, mem_table + "\n\n" + par_table, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
