"""Quota efficiency: how close the engine comes to the fastest schedule the quotas allow, against a naive script.

The world is time-scaled by SCALE = 0.1 so that a run takes a minute, not ten: one "minute" of the
creates-per-minute quota lasts 6 s (emulator knob `create_window_seconds`, and the engine's admission window),
and every duration a person would tune in real time is scaled the same way: the naive script's 45 s pause and
60 s stop become 4.5 s and 6 s, the engine's poll interval and cool-downs are the real defaults x 0.1.

Scenario (emulator in its own process, real google-genai SDK, identical input files of T tokens):
    N files; concurrent-job cap C; enqueued-token limit B (floor(B/T) jobs fit); R creates per window W;
    every job lasts D = pending + running seconds.
Lower bound: the greedy schedule (each create as early as the cap, the budget and the window allow; with
identical jobs it is optimal), last create + D, plus the first upload and the last download (measured
separately). The engine starts knowing none of the limits (it learns them from 429s, as with a real key).

Naive baseline (what people write today, with the real SDK): for each file upload + create; after every 10
creates pause 45 s; on a 429 stop for 60 s and try that create again; when every job is created, get each job
every poll interval (30 s) and download the results of those that succeeded.

    python benchmarks/quota_efficiency.py [--quick] [--files N] [--skip-naive]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import gembatch.core.admission as admission_module
from _common import (
    FAKE_KEY,
    Call,
    EmulatorProcess,
    bench_settings,
    fake_key_env,
    fmt_s,
    job_tokens,
    md_table,
    read_log,
    section_body,
    update_doc,
    verdict,
    write_inputs,
)
from gembatch.core.config import AdmissionSettings, Settings
from gembatch.core.events import CoolDownStarted, Event
from gembatch.core.gateway import Gateway
from gembatch.core.headless import build_engine

SCALE = 0.1
FAST_POLL = 0.5  # a poll interval short enough for jobs of a few seconds (5 s in real time)
MODEL = "gemini-2.5-flash"


@dataclass
class Scenario:
    files: int = 240
    requests: int = 10
    pad: int = 20
    cap: int = 50  # C: concurrent jobs
    budget_jobs: float = 32.5  # B / T: the token limit holds 32 jobs
    rate: int = 48  # R creates per window
    pending: float = 1.0
    running: float = 3.0

    @property
    def window(self) -> float:
        return 60.0 * SCALE

    @property
    def duration(self) -> float:
        return self.pending + self.running

    def concurrency(self) -> int:
        return min(self.cap, math.floor(self.budget_jobs))


def greedy_schedule(s: Scenario) -> list[float]:
    """Create times of the fastest schedule: t_i >= t_{i-K} + D (slot), t_i >= t_{i-R} + W (window)."""
    k, times = s.concurrency(), []
    for i in range(s.files):
        t = times[-1] if times else 0.0
        if i >= k:
            t = max(t, times[i - k] + s.duration)
        if i >= s.rate:
            t = max(t, times[i - s.rate] + s.window)
        times.append(t)
    return times


def simple_bounds(s: Scenario) -> dict[str, float]:
    """The textbook bounds, each limit alone."""
    k = s.concurrency()
    return {
        "concurrency": math.ceil(s.files / k) * s.duration,
        "rate": max(0, math.ceil(s.files / s.rate) - 1) * s.window + s.duration,
    }


def create_stats(calls: list[Call]) -> dict[str, float]:
    creates = [c for c in calls if c.kind == "batches.create"]
    limited = [c for c in creates if c.status == 429]
    first = next((i for i, c in enumerate(creates) if c.status == 429), None)
    after = creates[first + 1:] if first is not None else []
    learned_kinds: set[str | None] = set()
    after_each = 0
    sent_after_each = 0
    for c in creates:  # 429s once every quota that ever refused us has refused us once
        if c.status == 429 and c.note not in learned_kinds:
            learned_kinds.add(c.note)
            continue
        if learned_kinds:
            sent_after_each += 1
            after_each += c.status == 429
    return {
        "creates_sent": len(creates),
        "accepted": sum(1 for c in creates if c.status == 200),
        "rate_limited": len(limited),
        "by_quota": dict(Counter(c.note or "?" for c in limited)),
        "after_first": sum(1 for c in after if c.status == 429),
        "sent_after_first": len(after),
        "after_each_learned": after_each,
        "sent_after_each_learned": sent_after_each,
        "lists": sum(1 for c in calls if c.kind == "batches.list"),
        "gets": sum(1 for c in calls if c.kind == "batches.get"),
    }


# ---- runs -----------------------------------------------------------------------------------------


def emulator_for(s: Scenario, log: Path) -> EmulatorProcess:
    return EmulatorProcess(
        log_path=log, max_concurrent_jobs=s.cap, enqueued_token_limit=None, creates_per_minute=s.rate,
        create_window_seconds=s.window, pending_seconds=s.pending, running_seconds=s.running,
        running_seconds_per_request=0.0)


def scaled_engine_settings(root: Path, base_url: str, poll_interval: float | None) -> Settings:
    defaults, admission = Settings(), AdmissionSettings()
    return bench_settings(
        root, base_url,
        poll_interval=poll_interval if poll_interval is not None else defaults.poll_interval * SCALE,
        cool_down_seconds=admission.cool_down_seconds * SCALE,
        cool_down_max_seconds=admission.cool_down_max_seconds * SCALE,
        retry_max_wait=2.0,
        ambiguous_grace=60.0 * SCALE,
    )


async def run_engine(settings: Settings) -> tuple[float, int, list[Event]]:
    events: list[Event] = []
    engine = build_engine(settings, FAKE_KEY)
    engine.bus.subscribe(events.append)
    engine.store.acquire_lock()
    started = time.monotonic()
    try:
        code = await engine.run()
    finally:
        engine.store.release_lock()
        await engine.gateway.aclose()
    return time.monotonic() - started, code, events


def engine_run(s: Scenario, root: Path, poll_interval: float | None) -> dict:
    paths = write_inputs(root / "in", s.files, s.requests, pad=s.pad)
    tokens = job_tokens(paths[0])
    log = root / "emulator.log"
    emu = emulator_for(s, log)
    emu.knobs["enqueued_token_limit"] = int(tokens * s.budget_jobs)
    saved_window = admission_module.WINDOW
    admission_module.WINDOW = s.window  # the engine's creates-per-minute window, time-scaled like the emulator's
    try:
        with emu:
            settings = scaled_engine_settings(root, emu.base_url, poll_interval)
            elapsed, code, events = asyncio.run(run_engine(settings))
    finally:
        admission_module.WINDOW = saved_window
    stats = create_stats(read_log(log))
    cooldowns = [e for e in events if isinstance(e, CoolDownStarted)]
    return {"elapsed": elapsed, "code": code, "tokens": tokens, "poll_interval": settings.poll_interval,
            "cooldowns": len(cooldowns), **stats}


def measure_overheads(s: Scenario, root: Path) -> dict[str, float]:
    """One upload and one result download of a file like the scenario's, on an idle emulator (median of 5)."""
    paths = write_inputs(root / "probe", 1, s.requests, pad=s.pad, prefix="probe")

    async def probe(base_url: str) -> dict[str, float]:
        gateway = Gateway(api_key=FAKE_KEY, model=MODEL, base_url=base_url, timeout=30.0)
        ups, downs = [], []
        try:
            for i in range(5):
                t0 = time.perf_counter()
                remote = await gateway.upload(paths[0], f"probe-{i}")
                ups.append(time.perf_counter() - t0)
                job = await gateway.create(remote.name, f"probe-job-{i}")
                while True:
                    got = await gateway.get_job(job.name)
                    if got is not None and got.ended:
                        break
                    await asyncio.sleep(0.02)
                t0 = time.perf_counter()
                await gateway.download(got.result_file or "", root / f"probe-{i}.out")
                downs.append(time.perf_counter() - t0)
        finally:
            await gateway.aclose()
        return {"upload": sorted(ups)[2], "download": sorted(downs)[2]}

    with EmulatorProcess(pending_seconds=0.0, running_seconds=0.0, running_seconds_per_request=0.0) as emu:
        return asyncio.run(probe(emu.base_url))


def naive_run(s: Scenario, root: Path) -> dict:
    """The baseline with the real (sync) SDK: 10 creates, pause 45 s, stop 60 s on a 429 (all x SCALE)."""
    from google import genai
    from google.genai import errors, types

    paths = write_inputs(root / "in", s.files, s.requests, pad=s.pad)
    tokens = job_tokens(paths[0])
    (root / "out").mkdir()
    log = root / "emulator.log"
    emu = emulator_for(s, log)
    emu.knobs["enqueued_token_limit"] = int(tokens * s.budget_jobs)
    pause, stop, poll = 45.0 * SCALE, 60.0 * SCALE, 30.0 * SCALE
    with emu:
        client = genai.Client(api_key=FAKE_KEY,
                              http_options=types.HttpOptions(base_url=emu.base_url, api_version="v1beta"))
        started = time.monotonic()
        jobs: dict[str, str] = {}
        for i, path in enumerate(paths, 1):
            uploaded = client.files.upload(file=str(path), config=types.UploadFileConfig(
                mime_type="application/jsonl", display_name=path.stem))
            while True:
                try:
                    job = client.batches.create(model=MODEL, src=uploaded.name,
                                                config=types.CreateBatchJobConfig(display_name=path.stem))
                    break
                except errors.APIError as exc:
                    if exc.code != 429:
                        raise
                    time.sleep(stop)
            jobs[job.name] = path.stem
            if i % 10 == 0 and i < len(paths):
                time.sleep(pause)
        pending = dict(jobs)
        while pending:
            for name in list(pending):
                job = client.batches.get(name=name)
                if job.done:
                    stem = pending.pop(name)
                    if job.state == types.JobState.JOB_STATE_SUCCEEDED and job.dest and job.dest.file_name:
                        data = client.files.download(file=job.dest.file_name)
                        (root / "out" / f"{stem}.results.jsonl").write_bytes(data)
            if pending:
                time.sleep(poll)
        elapsed = time.monotonic() - started
    stats = create_stats(read_log(log))
    return {"elapsed": elapsed, "tokens": tokens, **stats}


# ---- report ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 files instead of 240, no poll-interval run")
    parser.add_argument("--files", type=int)
    parser.add_argument("--poll-interval", type=float, default=None,
                        help="engine poll interval (default: the engine's default x SCALE = 3 s)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    fake_key_env()
    s = Scenario()
    if args.files:
        s = dataclasses.replace(s, files=args.files)
    elif args.quick:
        s = dataclasses.replace(s, files=60)

    schedule = greedy_schedule(s)
    with tempfile.TemporaryDirectory(prefix="gembatch-bench-quota-") as tmp:
        over = measure_overheads(s, Path(tmp))
    bound = schedule[-1] + s.duration + over["upload"] + over["download"]
    simple = simple_bounds(s)
    print(f"scenario: {s.files} files, cap {s.cap} jobs, token limit {s.budget_jobs:g} jobs, {s.rate} creates per "
          f"{s.window:g} s window, jobs last {s.duration:g} s; concurrency the limits allow: {s.concurrency()}",
          flush=True)
    print(f"lower bound {bound:.2f} s (greedy schedule {schedule[-1] + s.duration:.2f} s; cap/budget alone "
          f"{simple['concurrency']:.1f} s, rate alone {simple['rate']:.1f} s; upload {over['upload'] * 1000:.0f} ms"
          f" + download {over['download'] * 1000:.0f} ms)", flush=True)

    runs: list[tuple[str, dict]] = []
    variants: list[tuple[str, float | None]] = [("engine", args.poll_interval)]
    if not args.quick and args.poll_interval is None:
        variants.append((f"engine, poll_interval {FAST_POLL:g} s (a setting)", FAST_POLL))
    for label, poll_interval in variants:
        with tempfile.TemporaryDirectory(prefix="gembatch-bench-quota-") as tmp:
            r = engine_run(s, Path(tmp), poll_interval)
        r["ratio"] = r["elapsed"] / bound
        r["per10"] = 10 * r["after_each_learned"] / max(1, r["sent_after_each_learned"])
        runs.append((label, r))
        print(f"{label}: {r['elapsed']:.2f} s (exit {r['code']}), {r['ratio']:.2f} x the lower bound; "
              f"{r['rate_limited']} 429s in {r['creates_sent']} creates {r['by_quota']}; "
              f"{r['after_first']} after the first 429, {r['after_each_learned']} once each quota was learned "
              f"({r['per10']:.2f} per 10 creates); poll interval {r['poll_interval']:g} s, {r['lists']} list "
              f"calls", flush=True)

    naive = None
    if not args.skip_naive:
        with tempfile.TemporaryDirectory(prefix="gembatch-bench-quota-") as tmp:
            naive = naive_run(s, Path(tmp))
        print(f"naive: {naive['elapsed']:.2f} s, {naive['elapsed'] / bound:.2f} x the lower bound; "
              f"{naive['rate_limited']} 429s in {naive['creates_sent']} creates {naive['by_quota']}", flush=True)

    eng = runs[0][1]
    speedup = naive["elapsed"] / eng["elapsed"] if naive else float("nan")
    ok_ratio, ok_429, ok_speed = eng["ratio"] <= 1.15, eng["per10"] < 1.0, speedup >= 3.0
    summary = (f"{s.files} files: engine {eng['elapsed']:.1f} s = {eng['ratio']:.2f} x the lower bound {bound:.1f} s "
               f"(target 1.15: {verdict(ok_ratio)}); {eng['per10']:.2f} 429s per 10 creates once learned (target < 1: "
               f"{verdict(ok_429)})"
               + (f"; {speedup:.1f} x faster than the naive script's {naive['elapsed']:.1f} s (target 3: "
                  f"{verdict(ok_speed)})" if naive else ""))
    print(summary)
    if args.no_doc:
        return 0
    rows = [["lower bound (greedy schedule + first upload + last download)", fmt_s(bound), "1.00", "", "", "",
             ""]]
    for label, r in runs:
        rows.append([label, fmt_s(r["elapsed"]), f"{r['ratio']:.2f}", f"{r['lists']} list + {r['gets']} get",
                     f"{naive['elapsed'] / r['elapsed']:.1f} x" if naive else "",
                     f"{r['rate_limited']} in {r['creates_sent']} creates ({_quotas(r['by_quota'])})",
                     f"{r['after_first']} after the first 429; {r['after_each_learned']} in "
                     f"{r['sent_after_each_learned']} once each quota refused once ({r['per10']:.2f} per 10)"])
    if naive:
        rows.append(["naive script", fmt_s(naive["elapsed"]), f"{naive['elapsed'] / bound:.2f}",
                     f"{naive['lists']} list + {naive['gets']} get", "1.0 x",
                     f"{naive['rate_limited']} in {naive['creates_sent']} creates ({_quotas(naive['by_quota'])})",
                     f"{naive['after_first']} after the first 429"])
    table = md_table(["run", "time to finish", "x lower bound", "poll requests", "faster than naive", "429s",
                      "429s once learned"], rows)
    target_rows = [
        ["within 1.15 x the lower bound", f"{eng['ratio']:.2f}", verdict(ok_ratio)],
        ["fewer than 1 429 per 10 creates once learned", f"{eng['per10']:.2f}", verdict(ok_429)],
        ["at least 3 x faster than the naive script", f"{speedup:.1f}" if naive else "not run",
         verdict(ok_speed) if naive else "not run"],
    ]
    targets = md_table(["target", "figure", "verdict"], target_rows)
    intro = (
        f"Time-scaled world (x{SCALE:g}): a quota \"minute\" is {s.window:g} s. {s.files} identical files of "
        f"{s.requests} requests ({eng['tokens']} tokens each); emulator limits: {s.cap} concurrent jobs, "
        f"an enqueued-token limit of {s.budget_jobs:g} jobs' tokens, {s.rate} creates per {s.window:g} s; every "
        f"job is pending {s.pending:g} s and running {s.running:g} s. The engine is told none of the limits (it "
        f"learns them from 429s); its poll interval is {eng['poll_interval']:g} s and its cool-downs "
        f"{AdmissionSettings().cool_down_seconds * SCALE:g} s (real defaults x {SCALE:g}). The naive script "
        f"(real SDK): upload + create per file, a {45 * SCALE:g} s pause after every 10 creates, a "
        f"{60 * SCALE:g} s stop on each 429, then a get per job every {30 * SCALE:g} s and the downloads.\n\n"
        f"Lower bound: the greedy schedule (each create as early as the {s.concurrency()} jobs the limits hold "
        f"at once and the creates window allow) ends at {schedule[-1] + s.duration:.2f} s; each limit alone "
        f"gives {simple['concurrency']:.1f} s (ceil(N/K) x D) and {simple['rate']:.1f} s (rate); plus the first "
        f"upload ({over['upload'] * 1000:.0f} ms) and the last download ({over['download'] * 1000:.0f} ms) "
        "measured alone. \"Once learned\": 429s after each quota that refused us has done so once. The engine "
        "polls when a job is due to end (`core/poll_schedule.py`), at most every poll interval; the second engine "
        "row shortens the interval itself instead, for comparison.")
    update_doc("quota_efficiency", section_body("quota_efficiency", intro, table + "\n\n" + targets, summary))
    return 0


def _quotas(by: dict[str, int]) -> str:
    return ", ".join(f"{k.removeprefix('quota:')} {v}" for k, v in sorted(by.items())) or "none"


if __name__ == "__main__":
    sys.exit(main())
