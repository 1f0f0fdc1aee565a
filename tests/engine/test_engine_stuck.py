"""Jobs pending or running too long are flagged (or submitted once more); expired jobs keep partial results."""

from __future__ import annotations

import json
from pathlib import Path

from gembatch.core.events import BatchChanged, Event
from gembatch.core.exit_codes import EXIT_OK
from gembatch.core.model import Stage

from ..conftest import write_batch_files
from .helpers import assert_one_job_per_attempt, assert_results_match_inputs, engine_settings, run_engine

ONE_SECOND_IN_HOURS = 1 / 3600


async def test_a_stuck_job_is_flagged_and_left_to_finish(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=1, requests=3)
    emulator.settings.running_seconds = 2.5
    settings = engine_settings(tmp_path, emulator.base_url, stuck_after_hours=ONE_SECOND_IN_HOURS)

    code, engine, recorder = await run_engine(settings)

    assert code == EXIT_OK
    assert len(emulator.jobs()) == 1
    (rec,) = engine.records.values()
    assert rec.stuck_since is not None and rec.stage is Stage.DOWNLOADED
    assert any("stuck: running for" in line or "stuck: pending for" in line for line in recorder.lines())


async def test_a_stuck_job_is_cancelled_and_submitted_once_more(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=1, requests=3)
    emulator.settings.running_seconds = 2.5
    settings = engine_settings(
        tmp_path, emulator.base_url, stuck_after_hours=ONE_SECOND_IN_HOURS, stuck_action="resubmit"
    )

    code, engine, recorder = await run_engine(settings)

    assert code == EXIT_OK
    states = sorted(job["state"] for job in emulator.jobs())
    assert states == ["BATCH_STATE_CANCELLED", "BATCH_STATE_SUCCEEDED"]  # once more, and only once
    made = assert_one_job_per_attempt(emulator)
    assert sorted(name[-2:] for name in made) == ["a1", "a2"]
    (rec,) = engine.records.values()
    assert rec.attempt == 2 and rec.stuck_resubmits == 1 and rec.stage is Stage.DOWNLOADED
    assert any("submitting the stuck job once more" in line for line in recorder.lines())


async def test_an_expired_job_keeps_its_partial_results_and_is_submitted_again(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=1, requests=40)
    emulator.settings.running_seconds = 3.0
    emulator.settings.job_ttl_seconds = 1.5
    emulator.settings.partial_output_on_expiry = True
    settings = engine_settings(tmp_path, emulator.base_url)

    def second_attempt_may_finish(event: Event) -> None:
        if isinstance(event, BatchChanged) and event.record.stage is Stage.PENDING:
            emulator.settings.job_ttl_seconds = 3600.0  # only the first job expires

    code, engine, recorder = await run_engine(settings, hooks=(second_attempt_may_finish,))

    assert code == EXIT_OK
    assert sorted(job["state"] for job in emulator.jobs()) == ["BATCH_STATE_EXPIRED", "BATCH_STATE_SUCCEEDED"]
    partial = settings.output_dir / "part_001.results.partial-a1.jsonl"
    keys = [json.loads(line)["key"] for line in partial.read_text().splitlines()]
    assert 0 < len(keys) < 40 and all(key.startswith("part-1-") for key in keys)
    assert engine.records["part_001"].attempt == 2
    assert any("partial results of the expired job kept" in line for line in recorder.lines())
    assert_results_match_inputs(settings.input_dir, settings.output_dir)
