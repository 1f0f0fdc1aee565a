"""Scale: thousands of small input files through the headless engine against a fast emulator.

The emulator runs in its own process (jobs end at once) and the engine in another, so that the engine's figures
are its own: peak memory (VmHWM: the peak RSS of the engine process), CPU time per state change (process
CPU / BatchChanged events), checkpoint bytes written per event (journal + snapshots, measured at 1,000 and at
10,000 batches: it must not grow with the batch count), and the restart time from the finished 10,000-batch
checkpoint (process start to `await engine.prepare()` done) and from one cut short by SIGKILL (journal to
replay).

    python benchmarks/scale.py [--quick] [--files 10000 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_START = time.time()  # as early as possible: the restart figure counts from process start

from _common import (  # noqa: E402
    FAKE_KEY,
    ROOT,
    EmulatorProcess,
    bench_settings,
    fake_key_env,
    md_table,
    peak_rss_mib,
    run_child,
    section_body,
    update_doc,
    verdict,
    write_inputs,
)

TARGET_RSS_MB = 300
TARGET_RESTART_S = 2.0


# ---- child: the engine -----------------------------------------------------------------------------


def _settings(root: Path, base_url: str):
    return bench_settings(root, base_url, poll_interval=0.5, retry_max_wait=1.0)


def child_run(root: Path, base_url: str, stop_after: int | None) -> dict:
    """Run the headless engine to the end (or SIGKILL itself after `stop_after` downloads); print figures."""
    from gembatch.core import durable
    from gembatch.core.checkpoint_store import CheckpointStore
    from gembatch.core.events import BatchChanged
    from gembatch.core.headless import HeadlessLog, build_engine
    from gembatch.core.model import Stage

    written = {"journal": 0, "snapshot": 0, "snapshots": 0, "journal_writes": 0, "all": 0}
    store_cls = CheckpointStore
    write_journal, write_compaction = store_cls._write_journal, store_cls._write_compaction
    write_all = durable.write_all

    def counted_write_all(fd, data):  # type: ignore[no-untyped-def]
        write_all(fd, data)
        written["all"] += len(data)

    def counted_journal(self, lines):  # type: ignore[no-untyped-def]
        write_journal(self, lines)
        if lines:
            written["journal"] += sum(len(line.data) for line in lines)
            written["journal_writes"] += 1

    def counted_compaction(self, snapshot):  # type: ignore[no-untyped-def]
        write_compaction(self, snapshot)
        written["snapshots"] += 1

    durable.write_all = counted_write_all
    store_cls._write_journal = counted_journal  # type: ignore[method-assign]
    store_cls._write_compaction = counted_compaction  # type: ignore[method-assign]

    settings = _settings(root, base_url)
    counts = {"events": 0, "batch_changed": 0, "downloaded": 0}
    log_stream = (root / "headless.log").open("w")
    engine = build_engine(settings, FAKE_KEY)
    engine.bus.subscribe(HeadlessLog(log_stream))

    def count(event: object) -> None:
        counts["events"] += 1
        if isinstance(event, BatchChanged):
            counts["batch_changed"] += 1
            if event.record.stage is Stage.DOWNLOADED:
                counts["downloaded"] += 1
                if stop_after is not None and counts["downloaded"] >= stop_after:
                    os.kill(os.getpid(), signal.SIGKILL)

    engine.bus.subscribe(count)

    async def go() -> int:
        engine.store.acquire_lock()
        try:
            return await engine.run()
        finally:
            engine.store.release_lock()
            await engine.gateway.aclose()

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    code = asyncio.run(go())
    elapsed = time.monotonic() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    log_stream.close()
    written["snapshot"] = written["all"] - written["journal"]
    return {
        "code": code,
        "elapsed": elapsed,
        "cpu": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        "maxrss_mb": peak_rss_mib(),
        "records": len(engine.records),
        "summary": engine.summary(),
        **counts,
        **written,
        "checkpoint_size": settings.checkpoint_path().stat().st_size,
    }


def child_restart(root: Path, base_url: str, spawned_at: float) -> dict:
    """Import, build the engine, take the lock, load the checkpoint: time from process start to ready."""
    imported = time.time()
    from gembatch.core.headless import build_engine

    settings = _settings(root, base_url)
    built_at = time.time()
    engine = build_engine(settings, FAKE_KEY)

    async def go() -> float:
        engine.store.acquire_lock()
        t0 = time.perf_counter()
        try:
            await engine.prepare()
            return time.perf_counter() - t0
        finally:
            engine.store.release_lock()
            await engine.gateway.aclose()

    prepare = asyncio.run(go())
    ready = time.time()
    journal = engine.store.journal_path
    return {
        "from_spawn": ready - spawned_at,
        "from_interpreter": ready - T_START,
        "imports": built_at - imported,
        "prepare": prepare,
        "records": len(engine.records),
        "maxrss_mb": peak_rss_mib(),
        "journal_bytes": journal.stat().st_size if journal.exists() else 0,
        "snapshot_bytes": settings.checkpoint_path().stat().st_size,
    }


# ---- parent ----------------------------------------------------------------------------------------


def measure(files: int, requests: int, kill_at: float | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="gembatch-bench-scale-") as tmp:
        root = Path(tmp)
        t0 = time.monotonic()
        write_inputs(root / "in", files, requests)
        print(f"  {files} input files written in {time.monotonic() - t0:.1f} s", flush=True)
        emu = EmulatorProcess(pending_seconds=0.0, running_seconds=0.0, running_seconds_per_request=0.0)
        with emu:
            run = run_child([__file__, "--child", "run", "--root", str(root), "--base-url", emu.base_url])
            print(f"  run: {run['elapsed']:.1f} s, exit {run['code']}, {run['batch_changed']} state changes, "
                  f"CPU {run['cpu']:.1f} s, peak RSS {run['maxrss_mb']:.0f} MB", flush=True)
            restart = _best_restart(root, emu.base_url)
            print(f"  restart from the finished checkpoint: {restart['from_spawn']:.2f} s from spawn "
                  f"(prepare {restart['prepare']:.2f} s, imports {restart['imports']:.2f} s)", flush=True)
        crash = None
        if kill_at is not None:
            crash = _crash_restart(root, files, requests, kill_at)
            print(f"  restart after SIGKILL at {kill_at:.0%} of the files: {crash['from_spawn']:.2f} s from spawn "
                  f"(prepare {crash['prepare']:.2f} s, journal {crash['journal_bytes'] / 1e6:.1f} MB)", flush=True)
    return {"files": files, "run": run, "restart": restart, "crash": crash}


def _restart(root: Path, base_url: str) -> dict:
    spawned = time.time()
    return run_child([__file__, "--child", "restart", "--root", str(root), "--base-url", base_url,
                      "--spawned-at", repr(spawned)])


def _best_restart(root: Path, base_url: str, tries: int = 3) -> dict:
    return min((_restart(root, base_url) for _ in range(tries)), key=lambda r: r["from_spawn"])


def _crash_restart(root: Path, files: int, requests: int, kill_at: float) -> dict:
    """A second run in a fresh folder, SIGKILLed part way; then a restart with its journal to replay."""
    crash_root = root / "crash"
    write_inputs(crash_root / "in", files, requests)
    with EmulatorProcess(pending_seconds=0.0, running_seconds=0.0, running_seconds_per_request=0.0) as emu:
        args = [sys.executable, __file__, "--child", "run", "--root", str(crash_root), "--base-url", emu.base_url,
                "--stop-after", str(max(1, int(files * kill_at)))]
        env = {**os.environ, "GEMINI_API_KEY": FAKE_KEY}
        env.pop("GOOGLE_API_KEY", None)
        done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT)
        if done.returncode != -signal.SIGKILL:
            sys.stderr.write(done.stderr[-3000:])
            raise RuntimeError(f"the run to be killed ended with {done.returncode}")
        return _best_restart(crash_root, emu.base_url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 files only")
    parser.add_argument("--files", type=int, nargs="*", help="sizes to run (default: 1000 10000)")
    parser.add_argument("--requests", type=int, default=2, help="request lines per file")
    parser.add_argument("--no-crash", action="store_true", help="skip the SIGKILL + restart run")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--child", choices=("run", "restart"), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--spawned-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    fake_key_env()
    if args.child == "run":
        print(json.dumps(child_run(Path(args.root), args.base_url, args.stop_after)))
        return 0
    if args.child == "restart":
        print(json.dumps(child_restart(Path(args.root), args.base_url, args.spawned_at)))
        return 0

    sizes = args.files or ([1000] if args.quick else [1000, 10000])
    results = []
    for files in sizes:
        print(f"scale: {files} files of {args.requests} requests ...", flush=True)
        kill_at = None if args.no_crash or files != max(sizes) else 0.5
        results.append(measure(files, args.requests, kill_at))

    big = results[-1]
    run, restart = big["run"], big["restart"]
    per_event = {r["files"]: (r["run"]["journal"] + r["run"]["snapshot"]) / max(1, r["run"]["batch_changed"])
                 for r in results}
    cpu_per = run["cpu"] / max(1, run["batch_changed"]) * 1e6
    ok_rss = run["maxrss_mb"] < TARGET_RSS_MB
    ok_restart = restart["from_spawn"] < TARGET_RESTART_S and (
        big["crash"] is None or big["crash"]["from_spawn"] < TARGET_RESTART_S)
    small, large = per_event[min(per_event)], per_event[max(per_event)]
    growth = large / small if small else float("nan")
    ok_bytes = len(per_event) < 2 or growth < 1.5
    summary = (f"{big['files']} files: peak RSS {run['maxrss_mb']:.0f} MB (target < {TARGET_RSS_MB}: "
               f"{verdict(ok_rss)}), {cpu_per:.0f} µs CPU per state change, "
               + ", ".join(f"{per_event[n] / 1024:.1f} KiB checkpoint per event at {n}" for n in sorted(per_event))
               + (f" (x{growth:.2f}: {verdict(ok_bytes)} flat)" if len(per_event) > 1 else "")
               + f", restart {restart['from_spawn']:.2f} s"
               + (f" ({big['crash']['from_spawn']:.2f} s after SIGKILL)" if big["crash"] else "")
               + f" (target < {TARGET_RESTART_S:g} s: {verdict(ok_restart)})")
    print(summary)
    if args.no_doc:
        return 0
    rows = []
    for r in results:
        ru, rs = r["run"], r["restart"]
        rows.append([
            r["files"], f"{ru['elapsed']:.0f} s", ru["batch_changed"], f"{ru['maxrss_mb']:.0f} MB",
            f"{ru['cpu']:.1f} s", f"{ru['cpu'] / max(1, ru['batch_changed']) * 1e6:.0f} µs",
            f"{ru['journal'] / 1e6:.1f} MB + {ru['snapshot'] / 1e6:.1f} MB ({ru['snapshots']} snapshots)",
            f"{per_event[r['files']] / 1024:.2f} KiB",
            f"{rs['from_spawn']:.2f} s (prepare {rs['prepare']:.2f} s)",
            (f"{r['crash']['from_spawn']:.2f} s (prepare {r['crash']['prepare']:.2f} s, journal "
             f"{r['crash']['journal_bytes'] / 1e6:.1f} MB)")
            if r["crash"] else "",
        ])
    table = md_table(["files", "run time", "state changes", "peak RSS", "CPU", "CPU per state change",
                      "checkpoint written (journal + snapshots)", "checkpoint bytes per event",
                      "restart, finished checkpoint", "restart after SIGKILL at 50 %"], rows)
    targets = md_table(["target", "figure", "verdict"], [
        [f"peak memory under {TARGET_RSS_MB} MB", f"{run['maxrss_mb']:.0f} MB", verdict(ok_rss)],
        ["checkpoint bytes per event flat in the batch count",
         " vs ".join(f"{per_event[n] / 1024:.2f} KiB at {n}" for n in sorted(per_event)),
         verdict(ok_bytes) if len(per_event) > 1 else "one size only"],
        [f"restart under {TARGET_RESTART_S:g} s", f"{restart['from_spawn']:.2f} s"
         + (f"; {big['crash']['from_spawn']:.2f} s after SIGKILL" if big["crash"] else ""), verdict(ok_restart)],
        ["CPU per state change (no target)", f"{cpu_per:.0f} µs", ""],
    ])
    intro = (
        f"Input files of {args.requests} requests each; the emulator (its own process) ends every job at once and "
        "allows 100 concurrent jobs; the headless engine runs in a child process (poll interval 0.5 s, "
        "4 uploads and 4 downloads at a time, one log line per event to a file). Peak RSS is the child's "
        "VmHWM (ru_maxrss would include the parent's RSS at fork); CPU is its user + system time (the SDK's "
        "HTTP work included) over the BatchChanged events it "
        "published; checkpoint bytes are everything the store wrote (journal lines and snapshots). Restart: a new "
        "process imports the engine, takes the lock and awaits `engine.prepare()` (load the snapshot, replay the "
        "journal, list the input folder); the figure counts from the parent's spawn, best of 3. The SIGKILL "
        "restart runs the same workload in a fresh folder, kills the engine when half the files are downloaded "
        "and restarts from what is on disk.")
    update_doc("scale", section_body("scale", intro, table + "\n\n" + targets, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
