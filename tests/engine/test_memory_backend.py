"""A second backend, registered with one line in core/compose.py's table, drives a whole run through the real
Engine: no emulator, no SDK client. (The request-line check, `request_check`, on by default, still reads the
Gemini API's request schema from the SDK's types, whatever the backend: the last test shows the rest needs no SDK.)"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from gembatch.core import compose
from gembatch.core.backend import JobState, Quota, RateLimited
from gembatch.core.config import Settings
from gembatch.core.engine import Engine
from gembatch.core.events import CoolDownEnded, CoolDownStarted, Level, LogLine
from gembatch.core.exit_codes import EXIT_OK
from gembatch.core.model import Stage
from gembatch.core.workflow.merge import merge

from ..conftest import FAKE_KEY, write_batch_files
from .helpers import Recorder, assert_results_match_inputs
from .memory_backend import MemoryBackend, opener


def memory_settings(tmp_path: Path) -> Settings:
    settings = Settings(input_dir=tmp_path / "in", output_dir=tmp_path / "out",
                        checkpoint=tmp_path / "out" / "run.checkpoint.json", poll_interval=0.05, backend="memory")
    settings.admission.cool_down_seconds = 0.2
    settings.admission.cool_down_max_seconds = 1.0
    return settings


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> MemoryBackend:
    """A memory backend registered under `backend = "memory"` for this test."""
    service = MemoryBackend()
    monkeypatch.setitem(compose.BACKENDS, "memory", opener(service))
    return service


async def run(engine: Engine) -> tuple[int, Recorder]:
    recorder = Recorder()
    engine.bus.subscribe(recorder)
    engine.store.acquire_lock()
    try:
        code = await asyncio.wait_for(engine.run(), 60)
    finally:
        engine.store.release_lock()
        await engine.gateway.aclose()
    return code, recorder


async def test_a_whole_run_on_the_memory_backend_gives_each_file_one_job_and_every_key_an_answer(
        tmp_path: Path, backend: MemoryBackend) -> None:
    write_batch_files(tmp_path / "in", files=7, requests=5)
    settings = memory_settings(tmp_path)
    engine = compose.build_engine(settings, FAKE_KEY)
    assert engine.gateway is backend

    code, _ = await run(engine)

    assert code == EXIT_OK
    assert backend.closed
    made = backend.jobs_by_display_name()
    assert len(made) == 7 and set(made.values()) == {1}  # one job per file, each created once
    assert backend.calls["create"] == 7
    assert len({job.input_file for job in backend.jobs.values()}) == 7
    assert assert_results_match_inputs(settings.input_dir, settings.output_dir) == 7
    assert all(rec.stage is Stage.DOWNLOADED for rec in engine.records.values())
    assert {rec.job_state for rec in engine.records.values()} == {"succeeded"}  # the backend's own words
    report = merge(settings.input_dir, settings.output_dir, [], tmp_path / "all.jsonl")
    assert report.ok and report.requests == 35 and report.succeeded == 35
    assert len((tmp_path / "all.jsonl").read_text(encoding="utf-8").splitlines()) == 35


async def test_a_429_from_the_memory_backend_cools_down_like_a_gemini_one_and_the_run_completes(
        tmp_path: Path, backend: MemoryBackend) -> None:
    write_batch_files(tmp_path / "in", files=4, requests=3)
    backend.create_errors.append(RateLimited("429 RESOURCE_EXHAUSTED: too many jobs", Quota.CONCURRENT_JOBS, 0.2))
    settings = memory_settings(tmp_path)

    code, recorder = await run(compose.build_engine(settings, FAKE_KEY))

    assert code == EXIT_OK
    started = [e for e in recorder.events if isinstance(e, CoolDownStarted)]
    assert [e.quota for e in started] == [Quota.CONCURRENT_JOBS]
    assert any(isinstance(e, CoolDownEnded) for e in recorder.events)
    assert backend.calls["create"] == 5  # the refused create was sent again once, after the cool-down
    assert set(backend.jobs_by_display_name().values()) == {1} and len(backend.jobs) == 4
    assert assert_results_match_inputs(settings.input_dir, settings.output_dir) == 4


async def test_a_job_the_memory_backend_fails_is_submitted_again_as_a_new_attempt(
        tmp_path: Path, backend: MemoryBackend) -> None:
    write_batch_files(tmp_path / "in", files=1, requests=3)
    backend.hold = True
    settings = memory_settings(tmp_path)
    engine = compose.build_engine(settings, FAKE_KEY)

    async def fail_first_then_let_go() -> None:
        while not backend.jobs:
            await asyncio.sleep(0.01)
        backend.finish(next(iter(backend.jobs)), JobState.FAILED)
        backend.hold = False

    helper = asyncio.create_task(fail_first_then_let_go())
    code, _ = await run(engine)
    await helper

    assert code == EXIT_OK
    assert [name.rsplit("-", 1)[1] for name in backend.jobs_by_display_name()] == ["a1", "a2"]
    assert engine.records["part_001"].attempt == 2
    assert assert_results_match_inputs(settings.input_dir, settings.output_dir) == 1


async def test_the_backends_retry_notices_reach_the_event_bus_as_warnings(
        tmp_path: Path, backend: MemoryBackend) -> None:
    write_batch_files(tmp_path / "in", files=1, requests=1)
    engine = compose.build_engine(memory_settings(tmp_path), FAKE_KEY)
    recorder = Recorder()
    engine.bus.subscribe(recorder)

    assert backend.on_retry is not None
    backend.on_retry("list files: 503 UNAVAILABLE; retry 1 in 1.0s")

    lines = [e for e in recorder.events if isinstance(e, LogLine)]
    assert [(e.level, e.message) for e in lines] == [
        (Level.WARNING, "retrying list files: 503 UNAVAILABLE; retry 1 in 1.0s")]


_ROOT = Path(__file__).resolve().parents[2]
_RUN_ALONE = """
import asyncio, json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from gembatch.core import compose
from gembatch.core.config import Settings
from tests.engine.memory_backend import MemoryBackend, opener
from tests.inputs import write_batch_files

folder = Path(sys.argv[2])
write_batch_files(folder / "in", files=3, requests=2)
compose.BACKENDS["memory"] = opener(MemoryBackend())
settings = Settings(input_dir=folder / "in", output_dir=folder / "out", checkpoint=folder / "out" / "run.json",
                    poll_interval=0.05, backend="memory", request_check="off")
engine = compose.build_engine(settings, "FAKEKEY-memory-not-real")

async def run():
    engine.store.acquire_lock()
    try:
        return await engine.run()
    finally:
        engine.store.release_lock()
        await engine.gateway.aclose()

code = asyncio.run(run())
service = sorted(m for m in sys.modules if m.split(".")[0] in ("google", "httpx", "httpx2")
                 or m == "gembatch.core.gateway" or m.startswith("gembatch.core.emulator"))
print(json.dumps({"code": code, "loaded": service}))
"""


def test_a_run_on_the_memory_backend_loads_neither_the_sdk_nor_the_gemini_backend_nor_the_emulator(
        tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _RUN_ALONE, str(_ROOT), str(tmp_path)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"code": EXIT_OK, "loaded": []}
