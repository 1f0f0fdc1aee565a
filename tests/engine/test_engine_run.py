"""The engine end to end against the emulator through the real SDK; the emulator's journal is the witness."""

from __future__ import annotations

import json
from pathlib import Path

import gembatch.core.engine as engine_module
import pytest
from gembatch.core.engine import RunRefused
from gembatch.core.events import BatchChanged, Event
from gembatch.core.exit_codes import EXIT_INCOMPLETE, EXIT_OK
from gembatch.core.headless import build_engine
from gembatch.core.model import Stage

from ..conftest import FAKE_KEY, write_batch_files
from .helpers import (
    Recorder,
    assert_one_job_per_attempt,
    assert_results_match_inputs,
    engine_settings,
    jobs_by_file,
    run_engine,
)


async def test_thirty_files_end_with_exit_0_and_matching_results(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=30, requests=20)
    settings = engine_settings(tmp_path, emulator.base_url)

    code, engine, _ = await run_engine(settings)

    assert code == EXIT_OK
    assert assert_results_match_inputs(settings.input_dir, settings.output_dir) == 30
    made = assert_one_job_per_attempt(emulator)
    assert len(made) == 30
    assert all(rec.stage is Stage.DOWNLOADED for rec in engine.records.values())
    assert len(jobs_by_file(emulator)) == 30


async def test_rerun_of_a_finished_run_sends_nothing(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=3, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url)
    assert (await run_engine(settings))[0] == EXIT_OK
    emulator.reset_journal()

    code, _, _ = await run_engine(settings)

    assert code == EXIT_OK
    assert not [e for e in emulator.journal() if e.kind in ("batches.create", "upload.start")]


async def test_bad_files_are_rejected_with_file_and_line_while_others_complete(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=3, requests=5)
    bad = tmp_path / "in" / "broken.jsonl"
    bad.write_text('{"key": "a", "request": {}}\n{"key": "a", "request": {}}\n', encoding="utf-8")
    settings = engine_settings(tmp_path, emulator.base_url)

    code, engine, recorder = await run_engine(settings)

    assert code == EXIT_INCOMPLETE
    rec = engine.records["broken"]
    assert rec.stage is Stage.REJECTED
    assert "broken.jsonl:2" in (rec.last_error or "")
    assert any("broken.jsonl:2" in line for line in recorder.lines())
    uploads = [e for e in emulator.journal() if e.kind == "upload.start"]
    assert len(uploads) == 3  # the broken file was never uploaded
    assert (settings.output_dir / "part_003.results.jsonl").exists()


async def test_a_job_that_fails_on_the_server_is_submitted_again(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=4, requests=5)
    emulator.fail_next_jobs(1)
    settings = engine_settings(tmp_path, emulator.base_url)

    code, engine, _ = await run_engine(settings)

    assert code == EXIT_OK
    assert_one_job_per_attempt(emulator)
    failed = [job for job in emulator.jobs() if job["state"] == "BATCH_STATE_FAILED"]
    assert len(failed) == 1
    retried = [rec for rec in engine.records.values() if rec.attempt == 2]
    assert len(retried) == 1 and retried[0].display_name.endswith("-a2")
    assert_results_match_inputs(settings.input_dir, settings.output_dir)


async def test_a_job_failing_every_attempt_ends_failed_with_exit_3(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=1, requests=3)
    emulator.fail_next_jobs(3)
    settings = engine_settings(tmp_path, emulator.base_url, max_attempts=3)

    code, engine, _ = await run_engine(settings)

    assert code == EXIT_INCOMPLETE
    (rec,) = engine.records.values()
    assert rec.stage is Stage.FAILED and rec.attempt == 3
    assert len(emulator.jobs()) == 3


async def test_an_expired_upload_is_uploaded_again_and_its_job_created(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=2, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url)
    expired_for: set[str] = set()

    def expire_first_upload(event: Event) -> None:
        """Each file's first upload expires the moment it lands, before its job is created."""
        if isinstance(event, BatchChanged) and event.record.stage is Stage.UPLOADED:
            rec = event.record
            if rec.batch_id not in expired_for and rec.upload_name:
                expired_for.add(rec.batch_id)
                emulator.expire_file(rec.upload_name)

    code, _, recorder = await run_engine(settings, hooks=(expire_first_upload,))

    assert code == EXIT_OK
    uploads = [e for e in emulator.journal() if e.kind == "upload.start"]
    assert len(uploads) == 4
    assert sum("uploading again" in line for line in recorder.lines()) == 2
    assert_one_job_per_attempt(emulator)
    assert_results_match_inputs(settings.input_dir, settings.output_dir)


async def test_results_keep_the_lines_the_api_returned(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=1, requests=50)
    emulator.settings.request_error_rate = 0.2
    settings = engine_settings(tmp_path, emulator.base_url)

    code, engine, _ = await run_engine(settings)

    assert code == EXIT_OK
    lines = [json.loads(x) for x in (settings.output_dir / "part_001.results.jsonl").read_text().splitlines()]
    errors = [x for x in lines if "error" in x]
    assert 0 < len(errors) < 50
    rec = engine.records["part_001"]
    assert rec.failed_count == len(errors) and rec.succeeded_count == 50 - len(errors)


async def test_a_run_over_its_cost_limit_submits_nothing(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=3, requests=50, pad=50)
    settings = engine_settings(tmp_path, emulator.base_url, cost_limit_usd=0.0001)

    engine = build_engine(settings, FAKE_KEY)
    recorder = Recorder()
    engine.bus.subscribe(recorder)
    with pytest.raises(RunRefused) as refused:
        await engine.prepare()
    await engine.gateway.aclose()

    assert refused.value.exit_code == 4
    assert "over the cost limit" in str(refused.value) and "nothing was submitted" in str(refused.value)
    assert any("over the cost limit" in line for line in recorder.lines())
    assert emulator.journal() == []


async def test_a_restart_rehashes_only_the_validated_inputs_whose_size_or_mtime_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_batch_files(tmp_path / "in", files=3, requests=4)
    settings = engine_settings(tmp_path, "http://127.0.0.1:9")  # prepare() sends nothing
    settings.output_dir.mkdir(parents=True)

    async def prepare_once() -> dict[str, str]:
        engine = build_engine(settings, FAKE_KEY)
        engine.store.acquire_lock()
        try:
            await engine.prepare()
            await engine.store.commit()
            assert all(rec.stage is Stage.VALIDATED for rec in engine.records.values())
            return {batch_id: rec.sha256 for batch_id, rec in engine.records.items()}
        finally:
            engine.store.release_lock()
            await engine.gateway.aclose()

    first = await prepare_once()
    edited = sorted((tmp_path / "in").iterdir())[1]
    with edited.open("a", encoding="utf-8") as stream:  # one more request: size and mtime change
        stream.write(json.dumps({"key": "added", "request": {"contents": [{"parts": [{"text": "new"}]}]}}) + "\n")
    scanned: list[str] = []
    real_scan = engine_module.scan_file
    monkeypatch.setattr(engine_module, "scan_file", lambda path, *a: scanned.append(path.name) or real_scan(path, *a))

    second = await prepare_once()

    assert scanned == [edited.name]
    changed = edited.name.removesuffix(".jsonl")
    assert second[changed] != first[changed]
    assert {k: v for k, v in second.items() if k != changed} == {k: v for k, v in first.items() if k != changed}
