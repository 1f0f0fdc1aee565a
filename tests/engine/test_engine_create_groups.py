"""Several creates in flight at once: their intents saved in one commit, then sent together; each answer (ok,
bare 429, lost) handled for its own batch, and never a job twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import gembatch.core.admission as admission_module
import pytest
from gembatch.core.exit_codes import EXIT_OK
from gembatch.core.gateway import Gateway
from gembatch.core.wait_text import belief_text

from ..conftest import write_batch_files
from .helpers import assert_one_job_per_attempt, assert_results_match_inputs, engine_settings, run_engine

WINDOW = 3.0


@pytest.fixture
def creates_at_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the creates the engine has in flight whenever one leaves; returns the counts."""
    seen: list[int] = []
    in_flight = 0
    create = Gateway.create

    async def counted(self: Gateway, file_name: str, display_name: str):
        nonlocal in_flight
        in_flight += 1
        seen.append(in_flight)
        try:
            await asyncio.sleep(0.02)  # a create takes a while on the wire: the group's others leave meanwhile
            return await create(self, file_name, display_name)
        finally:
            in_flight -= 1

    monkeypatch.setattr(Gateway, "create", counted)
    return seen


def refused(emu) -> int:
    return sum(1 for e in emu.journal() if e.kind == "batches.create" and e.status == 429)


@pytest.mark.parametrize("lost", [0.0, 0.3])
async def test_several_creates_in_flight_with_bare_429s_make_one_job_per_file(
        tmp_path: Path, emulator, creates_at_once: list[int], lost: float, monkeypatch: pytest.MonkeyPatch) -> None:
    write_batch_files(tmp_path / "in", files=24, requests=5, pad=20)
    assert emulator.settings.quota_error_details == "help"  # bare 429s, as the service sends them
    emulator.settings.create_window_seconds = WINDOW  # a creates window of 8 per 3 s: each opens with room for 8
    monkeypatch.setattr(admission_module, "WINDOW", WINDOW)
    emulator.settings.creates_per_minute = 8
    emulator.settings.max_concurrent_jobs = 10
    emulator.settings.running_seconds = 0.3
    emulator.settings.lost_create_rate = lost
    settings = engine_settings(tmp_path, emulator.base_url, create_concurrency=4)

    code, engine, recorder = await run_engine(settings, timeout=120)

    print("\n".join(line for line in recorder.lines() if "429" in line))
    assert code == EXIT_OK
    assert max(creates_at_once) > 1  # creates went several at a time
    assert max(creates_at_once) <= 4
    made = assert_one_job_per_attempt(emulator)
    assert sum(1 for name in made if name.startswith("gembatch-")) == 24
    assert len(emulator.jobs()) == 24  # one job per file, lost answers found by display name
    assert assert_results_match_inputs(settings.input_dir, settings.output_dir) == 24
    print(f"8 creates per window, 4 at once, lost {lost}: {refused(emulator)} 429s; most in flight "
          f"{max(creates_at_once)}; {belief_text(engine.admission.beliefs())}")
    assert engine.admission.creates_per_minute == 8
    assert refused(emulator) <= 4 + 3  # one learning event: the first 429 and at most 3 of its group


async def test_one_create_at_a_time_when_create_concurrency_is_1(
        tmp_path: Path, emulator, creates_at_once: list[int]) -> None:
    write_batch_files(tmp_path / "in", files=6, requests=3)
    settings = engine_settings(tmp_path, emulator.base_url, create_concurrency=1)

    code, _, _ = await run_engine(settings, timeout=60)

    assert code == EXIT_OK
    assert max(creates_at_once) == 1
    assert len(emulator.jobs()) == 6
