"""Polling cost: requests per poll cycle with hundreds of jobs in flight (list pages, not one get per job).

The engine creates N jobs that stay PENDING for a long time on the in-process emulator; once all N are in
flight, the emulator's journal is read for a few poll cycles. A cycle starts with a batches.list call without a
page token. Expected: ceil(N / 100) list pages per cycle (100 is the page size the engine asks for) and no
batches.get at all. A naive poller would send N gets per cycle.

    python benchmarks/polling.py [--quick] [--jobs 500] [--cycles 5]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    bench_settings,
    fake_key_env,
    md_table,
    section_body,
    update_doc,
    verdict,
    write_inputs,
)
from gembatch.core.emulator import Emulator, EmulatorSettings
from gembatch.core.events import BatchChanged
from gembatch.core.headless import build_engine
from gembatch.core.model import Stage

PAGE = 100


async def measure(jobs: int, cycles: int, poll_interval: float, older_ended: int, order: str = "newest") -> dict:
    """Run the engine until `jobs` are in flight, watch `cycles` poll cycles, stop; returns the figures."""
    emu = Emulator(EmulatorSettings(max_concurrent_jobs=0, pending_seconds=3600.0, running_seconds=1.0,
                                    running_seconds_per_request=0.0, batches_list_order=order))
    base_url = emu.start()
    try:
        with tempfile.TemporaryDirectory(prefix="gembatch-bench-poll-") as tmp:
            root = Path(tmp)
            if older_ended:
                await _older_jobs(emu, root, older_ended)
            write_inputs(root / "in", jobs, 2)
            settings = bench_settings(root, base_url, poll_interval=poll_interval, max_concurrent_jobs=jobs + 10,
                                      upload_ahead=64, upload_concurrency=4)
            engine = build_engine(settings, "unused")
            in_flight = {"n": 0}
            full_at: list[float] = []

            def on_event(event: object) -> None:
                if isinstance(event, BatchChanged):
                    in_flight["n"] = len(engine._staged[Stage.PENDING]) + len(engine._staged[Stage.RUNNING])
                    if in_flight["n"] >= jobs and not full_at:
                        full_at.append(time.time())

            engine.bus.subscribe(on_event)
            engine.store.acquire_lock()
            started = time.time()
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            run = asyncio.create_task(engine.run())
            try:
                while not full_at:
                    if run.done():
                        raise RuntimeError("the engine stopped before every job was in flight")
                    await asyncio.sleep(0.2)
                ramp = full_at[0] - started
                await asyncio.sleep(poll_interval * (cycles + 1.5))
                engine.request_stop()
                await asyncio.wait_for(run, 60)
            finally:
                engine.store.release_lock()
                await engine.gateway.aclose()
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        journal = emu.journal()
    finally:
        emu.stop()
    figures = analyse(journal, full_at[0], jobs, ramp, cycles, (cpu1.ru_utime + cpu1.ru_stime)
                      - (cpu0.ru_utime + cpu0.ru_stime), older_ended)
    figures["order"] = order
    return figures


async def _older_jobs(emu: Emulator, root: Path, count: int) -> None:
    """Jobs created (and ended) before the run, by someone else: the list pages hold them too."""
    from google import genai
    from google.genai import types

    client = genai.Client(api_key="unused", http_options=types.HttpOptions(base_url=emu.base_url,
                                                                          api_version="v1beta"))
    paths = write_inputs(root / "older", 1, 1, prefix="older")
    uploaded = await client.aio.files.upload(file=str(paths[0]),
                                             config=types.UploadFileConfig(mime_type="application/jsonl"))
    while uploaded.state is not None and uploaded.state.name == "PROCESSING":  # the service's uploads take a moment
        await asyncio.sleep(0.2)
        uploaded = await client.aio.files.get(name=uploaded.name)
    for _ in range(count):
        job = await client.aio.batches.create(model="gemini-2.5-flash", src=uploaded.name)
        await client.aio.batches.cancel(name=job.name)


def analyse(journal: list, full_at: float, jobs: int, ramp: float, cycles: int, cpu: float, older: int) -> dict:
    polls = [e for e in journal if e.kind in ("batches.list", "batches.get") and e.at >= full_at]
    # a cycle starts with a list call without a page token
    starts = [i for i, e in enumerate(polls) if e.kind == "batches.list" and "pageToken" not in e.path]
    per_cycle = []
    for a, b in zip(starts, [*starts[1:], len(polls)], strict=True):
        chunk = polls[a:b]
        per_cycle.append({
            "lists": sum(1 for e in chunk if e.kind == "batches.list"),
            "gets": sum(1 for e in chunk if e.kind == "batches.get"),
            "span": chunk[-1].at - chunk[0].at,
        })
    per_cycle = per_cycle[1:cycles + 1] or per_cycle  # the first may have started before every job was in
    everything = [e for e in journal if e.kind in ("batches.list", "batches.get")]
    return {
        "jobs": jobs,
        "older_ended": older,
        "ramp_s": ramp,
        "cycles": len(per_cycle),
        "lists_per_cycle": statistics.mean(c["lists"] for c in per_cycle) if per_cycle else float("nan"),
        "max_lists": max((c["lists"] for c in per_cycle), default=0),
        "gets_per_cycle": statistics.mean(c["gets"] for c in per_cycle) if per_cycle else float("nan"),
        "span_s": statistics.mean(c["span"] for c in per_cycle) if per_cycle else float("nan"),
        "expected_pages": math.ceil(jobs / PAGE),  # ours are the newest: the older jobs are never reached
        "total_polls": len(everything),
        "creates": sum(1 for e in journal if e.kind == "batches.create" and e.status == 200),
        "cpu_s": cpu,
    }


def _within(r: dict) -> bool:
    """Newest first: ceil(N/100) pages and no get. Another order: no more calls than every page of the account."""
    if r["order"] == "newest":
        return r["max_lists"] <= r["expected_pages"] and r["gets_per_cycle"] == 0
    every_page = math.ceil((r["jobs"] + r["older_ended"]) / PAGE)
    return r["lists_per_cycle"] + r["gets_per_cycle"] <= every_page + 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 jobs only, 3 cycles")
    parser.add_argument("--jobs", type=int, nargs="*", help="jobs in flight (default 500, and 1000 without --quick)")
    parser.add_argument("--cycles", type=int, default=None)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    fake_key_env()
    sizes = args.jobs or ([500] if args.quick else [500, 1000])
    cycles = args.cycles or (3 if args.quick else 5)
    scenarios = [(n, 0, "newest") for n in sizes]
    if not args.quick:
        scenarios.append((sizes[0], 300, "newest"))  # 300 ended jobs of someone else, older than ours
    # batches.list order is undocumented: the same account listed oldest first, and in no order at all
    scenarios += [(sizes[0], 300, "oldest"), (sizes[0], 300, "shuffled")]
    results = []
    for jobs, older, order in scenarios:
        print(f"polling: {jobs} jobs in flight" + (f", {older} older ended jobs" if older else "")
              + f", list order {order} ...", flush=True)
        r = asyncio.run(measure(jobs, cycles, args.poll_interval, older, order))
        results.append(r)
        print(f"  {r['cycles']} cycles: {r['lists_per_cycle']:.1f} list pages and {r['gets_per_cycle']:.1f} gets "
              f"per cycle (expected {r['expected_pages']} pages, 0 gets); a cycle takes {r['span_s'] * 1000:.0f} ms;"
              f" ramp to {jobs} in flight {r['ramp_s']:.1f} s", flush=True)
    ok = all(_within(r) for r in results)
    main_r = results[0]
    summary = (f"{main_r['jobs']} jobs in flight: {main_r['lists_per_cycle']:.1f} batches.list pages and "
               f"{main_r['gets_per_cycle']:.0f} batches.get per poll cycle (ceil({main_r['jobs']}/100) = "
               f"{main_r['expected_pages']}; a get per job would be {main_r['jobs']}): target {verdict(ok)}")
    print(summary)
    if not args.no_doc:
        table = md_table(
            ["jobs in flight", "older ended jobs", "list order", "cycles seen", "list pages / cycle", "gets / cycle",
             "expected pages", "one get per job would be", "time per cycle", "target"],
            [[r["jobs"], r["older_ended"], r["order"], r["cycles"], f"{r['lists_per_cycle']:.1f}",
              f"{r['gets_per_cycle']:.1f}", r["expected_pages"], r["jobs"], f"{r['span_s'] * 1000:.0f} ms",
              verdict(_within(r))] for r in results])
        intro = (f"The engine creates N jobs that stay PENDING on the in-process emulator (poll interval "
                 f"{args.poll_interval:g} s, page size 100); once all N are in flight, the emulator's journal is "
                 f"read for {cycles} poll cycles (a cycle starts with a `batches.list` without a page token). "
                 "Target: about ceil(N/100) list pages per cycle, not one `batches.get` per job. With older "
                 "jobs on the server (someone else's, ended), the list is newest first so ours come first; "
                 "the engine stops paging once it has seen every job it waits for. The order of `batches.list` is "
                 "not documented, so the same account is also listed oldest first and shuffled: then a cycle reads "
                 "ceil(N/100) + 2 pages and after that only pages that hold one of our jobs, and gets the jobs it "
                 "has not seen; target there: no more calls than reading every page of the account once.")
        update_doc("polling", section_body("polling", intro, table, summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
