"""Bare 429s (no quota named, as the service sends them): the engine learns the right limit from its own state,
learned limits rise again, and a restart keeps its creates window."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import gembatch.core.admission as admission_module
import pytest
from gembatch.core.exit_codes import EXIT_OK
from gembatch.core.headless import build_engine
from gembatch.core.model import Stage
from gembatch.core.wait_text import belief_text

from ..conftest import FAKE_KEY, write_batch_files
from .helpers import assert_one_job_per_attempt, assert_results_match_inputs, engine_settings, run_engine

WINDOW = 3.0  # a short creates window, the same for the emulator and the engine, so a test takes seconds


def rate_limited_creates(emu) -> int:
    return sum(1 for e in emu.journal() if e.kind == "batches.create" and e.status == 429)


def job_tokens(path: Path) -> int:
    """The token estimate of one input file, by the rule the emulator and the engine share."""
    return sum(-(-len(line) // 4) for line in path.read_bytes().splitlines() if line.strip())


def write_mixed_files(folder: Path, files: int) -> list[Path]:
    """Input files of three sizes in turn (small, large, medium), as a real workload has."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in range(1, files + 1):
        pad = (5, 60, 25)[f % 3]
        lines = [json.dumps({"key": f"k-{f}-{r}", "request": {"contents": [{"parts": [
            {"text": f"question {f}.{r}" + " lorem" * pad}]}]}}) for r in range(1, 11)]
        path = folder / f"part_{f:03d}.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


@pytest.mark.parametrize("sizes", ["even", "mixed"])
async def test_bare_429s_of_a_job_cap_teach_the_cap(tmp_path: Path, emulator, sizes: str) -> None:
    if sizes == "even":
        write_batch_files(tmp_path / "in", files=12, requests=10, pad=20)
    else:
        write_mixed_files(tmp_path / "in", files=12)
    assert emulator.settings.quota_error_details == "help"
    emulator.settings.max_concurrent_jobs = 3
    emulator.settings.running_seconds = 0.6
    settings = engine_settings(tmp_path, emulator.base_url)

    code, engine, _ = await run_engine(settings, timeout=120)

    assert code == EXIT_OK
    assert len(assert_one_job_per_attempt(emulator)) == 12
    refused = rate_limited_creates(emulator)
    adm = engine.admission
    print(f"cap 3, {sizes}: {refused} 429s; {belief_text(adm.beliefs())}; {adm.last_verdict}")
    assert adm.max_jobs == 3  # not a token budget with the cap left at 100
    assert refused <= 3
    assert_results_match_inputs(settings.input_dir, settings.output_dir)


@pytest.mark.parametrize("sizes", ["even", "mixed"])
async def test_bare_429s_of_a_token_limit_teach_the_budget(tmp_path: Path, emulator, sizes: str) -> None:
    if sizes == "even":
        paths = write_batch_files(tmp_path / "in", files=12, requests=10, pad=20)
    else:
        paths = write_mixed_files(tmp_path / "in", files=12)
    biggest = max(job_tokens(p) for p in paths)
    limit = int(biggest * 3.5)
    emulator.settings.enqueued_token_limit = limit
    emulator.settings.running_seconds = 0.6
    settings = engine_settings(tmp_path, emulator.base_url)

    code, engine, _ = await run_engine(settings, timeout=120)

    assert code == EXIT_OK
    assert len(assert_one_job_per_attempt(emulator)) == 12
    refused = rate_limited_creates(emulator)
    adm = engine.admission
    print(f"tokens {limit}, {sizes}: {refused} 429s; {belief_text(adm.beliefs())}; {adm.last_verdict}")
    assert adm.token_budget is not None and limit - biggest <= adm.token_budget <= limit
    assert refused <= 3
    assert_results_match_inputs(settings.input_dir, settings.output_dir)


@pytest.fixture
def short_window(emulator, monkeypatch: pytest.MonkeyPatch):
    """The emulator's creates window and the engine's admission window are WINDOW seconds."""
    emulator.settings.create_window_seconds = WINDOW
    monkeypatch.setattr(admission_module, "WINDOW", WINDOW)
    return emulator


async def test_bare_429s_of_a_creates_window_teach_the_rate(tmp_path: Path, short_window) -> None:
    emulator = short_window
    write_batch_files(tmp_path / "in", files=12, requests=3)
    emulator.settings.creates_per_minute = 4
    emulator.settings.running_seconds = 8.0  # the jobs outlive the window by far (a loaded machine): only time frees it
    settings = engine_settings(tmp_path, emulator.base_url)

    code, engine, recorder = await run_engine(settings, timeout=120)

    print("\n".join(line for line in recorder.lines() if "429" in line))
    assert code == EXIT_OK
    assert len(assert_one_job_per_attempt(emulator)) == 12
    refused = rate_limited_creates(emulator)
    adm = engine.admission
    print(f"creates/window 4: {refused} 429s; {belief_text(adm.beliefs())}")
    assert adm.creates_per_minute == 4
    assert adm.max_jobs == 100 and adm.token_budget is None  # the guesses of the first 429 were put back
    assert refused <= 3


async def test_a_restart_keeps_its_creates_window_and_does_not_crawl(tmp_path: Path, short_window) -> None:
    """The field report: creates per minute 5, 15 files, the engine stopped after the 5th create, restarted."""
    emulator = short_window
    write_batch_files(tmp_path / "in", files=15, requests=3)
    emulator.settings.creates_per_minute = 5
    emulator.settings.running_seconds = 4.0
    settings = engine_settings(tmp_path, emulator.base_url)

    engine = build_engine(settings, FAKE_KEY)
    engine.store.acquire_lock()
    try:
        run = asyncio.create_task(engine.run())
        for _ in range(2000):
            if sum(1 for rec in engine.records.values() if rec.job_name) >= 5:
                break
            await asyncio.sleep(0.005)
        engine.request_stop()
        await asyncio.wait_for(run, 30)
    finally:
        engine.store.release_lock()
        await engine.gateway.aclose()
    first = sum(1 for e in emulator.journal() if e.kind == "batches.create" and e.status == 200)
    assert 5 <= first < 15
    refused_before = rate_limited_creates(emulator)

    code, engine, recorder = await run_engine(settings, timeout=120)

    print("\n".join(line for line in recorder.lines() if "429" in line or "probing" in line))
    assert code == EXIT_OK
    assert len(assert_one_job_per_attempt(emulator)) == 15
    adm = engine.admission
    refused = rate_limited_creates(emulator) - refused_before
    print(f"restart after {first} creates, 5 per window: {refused} 429s; {belief_text(adm.beliefs())}")
    assert adm.creates_per_minute is not None and adm.creates_per_minute >= 5  # not 1: the run does not crawl
    assert engine.state is not None and engine.state.learned.get("creates_per_minute", 5) >= 5
    assert refused <= 3
    assert all(rec.stage is Stage.DOWNLOADED for rec in engine.records.values())


async def test_a_budget_learned_under_other_jobs_rises_once_they_end(tmp_path: Path, emulator) -> None:
    """Another script's jobs hold most of the token limit at the start and end later: the budget learned
    meanwhile is held as uncertain and rises when they end; the other jobs are counted and never touched."""
    from ..emulator.conftest import jsonl, make_client, upload

    paths = write_batch_files(tmp_path / "in", files=12, requests=10, pad=20)
    one_job = job_tokens(paths[0])
    limit = one_job * 4 + one_job // 2  # four of our jobs fit
    emulator.settings.enqueued_token_limit = limit
    emulator.settings.running_seconds = 3.0  # long enough for the engine to meet them, even on a loaded machine
    client = make_client(emulator.base_url)
    for i in range(2):  # two other jobs, of about one of ours each, that run for a while
        source = upload(client, jsonl(10, prefix=f"other{i}", pad=22), display_name=f"someone-else-{i}")
        client.batches.create(model="gemini-2.5-flash", src=source.name, config={"display_name": f"someone-else-{i}"})
    emulator.settings.running_seconds = 0.6
    held = sum(job["tokens"] for job in emulator.jobs())
    assert held >= one_job * 2 - 40  # about two of ours: the engine first meets a budget of about two jobs
    settings = engine_settings(tmp_path, emulator.base_url)
    seen: list[tuple[int, int | None]] = []

    def watch(event) -> None:
        from gembatch.core.events import AdmissionChanged

        if isinstance(event, AdmissionChanged):
            seen.append((event.figures.other_jobs, event.figures.token_budget))

    code, engine, _ = await run_engine(settings, timeout=120, hooks=(watch,))

    assert code == EXIT_OK
    made = assert_one_job_per_attempt(emulator)
    assert sum(1 for name in made if name.startswith("gembatch-")) == 12
    under_others = [budget for other, budget in seen if other and budget is not None]
    assert under_others, "the engine never saw the other jobs while it held a budget"
    adm = engine.admission
    print(f"others held {held} of {limit}: budget while they ran {min(under_others)}, "
          f"at the end {adm.token_budget}; {rate_limited_creates(emulator)} 429s; {belief_text(adm.beliefs())}")
    assert min(under_others) < limit - held + one_job  # learned low while the others held their share
    assert adm.token_budget is not None and adm.token_budget >= limit - one_job  # and it rose once they ended
    assert adm.token_budget <= limit
    calls = [e for e in emulator.journal() if e.kind in ("batches.cancel", "batches.delete")]
    assert not calls  # the other jobs were never touched
    theirs = [job for job in emulator.jobs() if job["display_name"].startswith("someone-else")]
    assert len(theirs) == 2 and not any(job["deleted"] or "CANCELLED" in str(job["state"]) for job in theirs)
