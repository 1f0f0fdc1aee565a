"""Under each quota the run still completes with one job per file and few 429s."""

from __future__ import annotations

from pathlib import Path

import pytest
from gembatch.core.events import CoolDownEnded, CoolDownStarted
from gembatch.core.exit_codes import EXIT_OK

from ..conftest import write_batch_files
from .helpers import assert_one_job_per_attempt, assert_results_match_inputs, engine_settings, run_engine


def rate_limited_creates(emu) -> int:
    return sum(1 for e in emu.journal() if e.kind == "batches.create" and e.status == 429)


async def test_concurrent_job_cap_is_learned_and_respected(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=12, requests=5)
    emulator.settings.max_concurrent_jobs = 3
    emulator.settings.running_seconds = 0.6
    emulator.settings.quota_error_details = "full"  # a 429 that names its quota (the bonus path; bare 429s below)
    settings = engine_settings(tmp_path, emulator.base_url)

    code, engine, recorder = await run_engine(settings)

    assert code == EXIT_OK
    assert len(assert_one_job_per_attempt(emulator)) == 12
    refused = rate_limited_creates(emulator)
    print(f"concurrent cap 3, 12 files: {refused} 429s")
    assert 1 <= refused <= 3
    assert engine.admission.figures(0).max_jobs == 3
    assert any(isinstance(e, CoolDownStarted) for e in recorder.events)
    assert any(isinstance(e, CoolDownEnded) for e in recorder.events)
    assert_results_match_inputs(settings.input_dir, settings.output_dir)


async def test_enqueued_token_budget_is_learned_and_respected(tmp_path: Path, emulator) -> None:
    paths = write_batch_files(tmp_path / "in", files=12, requests=10, pad=20)
    one_job = sum(-(-len(line) // 4) for line in paths[0].read_bytes().splitlines() if line.strip())
    emulator.settings.enqueued_token_limit = int(one_job * 3.5)
    emulator.settings.running_seconds = 0.6
    emulator.settings.quota_error_details = "full"  # a 429 that names its quota (the bonus path; bare 429s below)
    settings = engine_settings(tmp_path, emulator.base_url)

    code, engine, _ = await run_engine(settings)

    assert code == EXIT_OK
    assert len(assert_one_job_per_attempt(emulator)) == 12
    refused = rate_limited_creates(emulator)
    print(f"token limit of 3.5 jobs, 12 files: {refused} 429s")
    assert 1 <= refused <= 3
    assert engine.admission.figures(0).token_budget is not None
    assert_results_match_inputs(settings.input_dir, settings.output_dir)


@pytest.mark.parametrize("quota", ["concurrent", "tokens"])
async def test_bare_429s_as_the_service_sends_them_still_finish_without_duplicates(tmp_path: Path, emulator,
                                                                                   quota: str) -> None:
    """The emulator's default 429 names no quota (a Help detail only): the run must still end with one job per
    file and every result; how close it gets to the quota's bound is measured by benchmarks/quota_efficiency.py."""
    paths = write_batch_files(tmp_path / "in", files=12, requests=10, pad=20)
    assert emulator.settings.quota_error_details == "help"
    if quota == "concurrent":
        emulator.settings.max_concurrent_jobs = 3
    else:
        one_job = sum(-(-len(line) // 4) for line in paths[0].read_bytes().splitlines() if line.strip())
        emulator.settings.enqueued_token_limit = int(one_job * 3.5)
    emulator.settings.running_seconds = 0.6
    settings = engine_settings(tmp_path, emulator.base_url)

    code, _, _ = await run_engine(settings, timeout=120)

    assert code == EXIT_OK
    assert len(assert_one_job_per_attempt(emulator)) == 12
    assert rate_limited_creates(emulator) >= 1
    assert_results_match_inputs(settings.input_dir, settings.output_dir)


async def test_a_known_token_budget_avoids_429s_altogether(tmp_path: Path, emulator) -> None:
    paths = write_batch_files(tmp_path / "in", files=8, requests=10, pad=20)
    one_job = sum(-(-len(line) // 4) for line in paths[0].read_bytes().splitlines() if line.strip())
    emulator.settings.enqueued_token_limit = one_job * 3
    settings = engine_settings(tmp_path, emulator.base_url, token_budget=one_job * 3)

    code, _, _ = await run_engine(settings)

    assert code == EXIT_OK
    assert rate_limited_creates(emulator) == 0


async def test_lost_create_answers_never_make_a_second_job(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=10, requests=5)
    emulator.settings.lost_create_rate = 0.4
    emulator.settings.lost_create_mode = "close"
    settings = engine_settings(tmp_path, emulator.base_url, ambiguous_grace=5.0)

    code, _, recorder = await run_engine(settings)

    assert code == EXIT_OK
    lost = [e for e in emulator.journal() if e.kind == "batches.create" and e.note and "lost" in e.note]
    print(f"lost create answers: {len(lost)}")
    assert lost, "the fault never fired"
    made = assert_one_job_per_attempt(emulator)
    assert len(made) == 10 and len(emulator.jobs()) == 10
    assert any("found its job" in line for line in recorder.lines())
    assert_results_match_inputs(settings.input_dir, settings.output_dir)


async def test_server_errors_on_every_call_kind_still_finish_without_duplicates(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=8, requests=5)
    emulator.settings.server_error_rate = 0.15
    settings = engine_settings(tmp_path, emulator.base_url)

    code, _, _ = await run_engine(settings, timeout=120)

    assert code == EXIT_OK
    faults = [e for e in emulator.journal() if e.note and "5xx" in e.note]
    print(f"5xx injected: {len(faults)}")
    assert faults
    assert len(emulator.jobs()) == 8
    assert_one_job_per_attempt(emulator)


@pytest.mark.slow
async def test_creates_per_minute_wait_out_the_retry_delay(tmp_path: Path, emulator) -> None:
    """The real window is a minute, so this takes one: it runs in the slow pass (`-m slow`)."""
    write_batch_files(tmp_path / "in", files=5, requests=3)
    emulator.settings.creates_per_minute = 3
    emulator.settings.quota_error_details = "full"  # a 429 with QuotaFailure and RetryInfo: the named path
    settings = engine_settings(tmp_path, emulator.base_url)

    code, engine, recorder = await run_engine(settings, timeout=150)

    assert code == EXIT_OK
    assert len(assert_one_job_per_attempt(emulator)) == 5
    refused = rate_limited_creates(emulator)
    print(f"creates/min 3, 5 files: {refused} 429s")
    assert refused == 1  # the RetryInfo delay is honoured and the rate is learned: no second 429
    started = [e for e in recorder.events if isinstance(e, CoolDownStarted)]
    assert started[0].quota == "creates-per-minute"
    assert started[0].until - started[0].at > 30  # the server's retryDelay, not our default cool-down
    assert engine.admission.figures(engine.clock()).creates_per_minute == 3
