"""A hypothesis state machine over the engine (in-process) and the emulator, with faults toggled by rules.

Rules: 5xx on some or all calls, lost create answers, lost answers on other calls, quotas that answer 429
(concurrent jobs, enqueued tokens), expiring uploads, failing or expiring jobs, time passing, a clean restart
(stop, then a new Engine on the same checkpoint) and a crash (the old engine's store stops writing at once, its
tasks are cancelled mid-call and its lock dropped, as a SIGKILL would leave them; then a new Engine).

After every step: no display name was created twice (the emulator's journal), at most one job per file that has
not failed, every DOWNLOADED record's result file is complete, the checkpoint on disk loads, and no create left
before its intent was on disk. At the end the faults are lifted and the run must finish: every file downloaded.

The default run keeps a few short examples; the slow profile (`-m slow`) runs more and longer ones, and
GEMBATCH_PROPERTY_EXAMPLES / GEMBATCH_PROPERTY_STEPS override both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from gembatch.core.checkpoint_store import CheckpointStore
from gembatch.core.emulator import Emulator, EmulatorSettings
from gembatch.core.exit_codes import EXIT_OK
from gembatch.core.gateway import Gateway
from gembatch.core.headless import build_engine
from gembatch.core.model import Stage
from gembatch.core.results import check_results
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from ..conftest import FAKE_KEY
from ..engine.helpers import engine_settings
from .support import (
    ENDED_BADLY,
    FIGURES,
    IntentWitness,
    assert_no_display_name_twice,
    jobs_of,
    judge,
    scanned_inputs,
    write_inputs,
)

FILES = 6
MAX_ATTEMPTS = 6
FAILS_PER_FILE = 2  # job failures forced per file, so attempts never run out
EXPIRIES_PER_FILE = 2  # the engine re-uploads a refused create's gone upload twice, then gives up

KINDS = [None, {"batches.create"}, {"batches.list"}, {"upload.chunk", "upload.start"}, {"files.download"}]


class _Killed(Exception):
    """Raised by a crashed engine's store: the process is gone, nothing more reaches the disk."""


class LoopThread:
    """An asyncio loop in a thread, so that the engine runs while the rules (plain functions) act."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="engine-loop", daemon=True)
        self.thread.start()

    def call(self, coroutine: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_the_rest() -> None:  # what a crashed engine left behind, so that nothing dies pending
            me = asyncio.current_task()
            for _ in range(20):
                rest = [task for task in asyncio.all_tasks() if task is not me and not task.done()]
                if not rest:
                    return
                for task in rest:
                    task.cancel()
                await asyncio.wait(rest, timeout=0.2)

        with contextlib.suppress(Exception):
            self.call(cancel_the_rest(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class EngineMachine(RuleBasedStateMachine):
    """The engine against the emulator; each example is a fresh folder, emulator and checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="gembatch-machine-"))
        self.emu = Emulator(EmulatorSettings(pending_seconds=0.1, running_seconds=1.2,
                                             running_seconds_per_request=0.0))
        self.emu.start()
        write_inputs(self.tmp / "in", FILES, 2, tag="machine")
        # three jobs at a time: the run lasts long enough for the rules to meet it mid-way
        self.settings = engine_settings(self.tmp, self.emu.base_url, max_attempts=MAX_ATTEMPTS,
                                        request_timeout=2.0, ambiguous_grace=1.0, max_concurrent_jobs=3)
        self.witness = IntentWitness(self.settings.checkpoint_path())
        self._create = Gateway.create
        Gateway.create = self.witness.wrap(self._create)  # type: ignore[method-assign]
        self.loop = LoopThread()
        self.engine: Any = None
        self.task: Any = None
        self.forced: Counter[str] = Counter()  # per file: failures and expiries forced on it
        self.figures: Counter[str] = Counter()
        self.broken = False
        self._start_engine()

    # ---- engine lifecycle --------------------------------------------------------------------------------

    def _start_engine(self) -> None:
        async def start() -> tuple[Any, Any]:
            engine = build_engine(self.settings, FAKE_KEY)
            engine.store.compact_every = 7  # compactions happen often, so restarts and crashes meet them
            engine.store.acquire_lock()
            return engine, asyncio.create_task(engine.run())

        self.engine, self.task = self.loop.call(start())

    def _stop_engine(self) -> int | None:
        engine, task = self.engine, self.task

        async def stop() -> int | None:
            engine.request_stop()
            try:
                return await asyncio.wait_for(task, 30)
            finally:
                engine.store.release_lock()
                await engine.gateway.aclose()

        return self.loop.call(stop())

    def _crash_engine(self) -> None:
        engine, task = self.engine, self.task

        async def crash() -> None:
            store = engine.store

            def dead(*_args: Any) -> None:
                raise _Killed

            with store._io_lock:  # a write in flight finishes (or not) before the "kill", as on a real disk
                store.commit_sync = dead
                store._write_compaction = dead
            # a SIGKILL cannot be swallowed; a cancel can (asyncio.wait_for on 3.11, see test_signals.py), and a
            # TaskGroup cancels its children once only: cancel every task of this loop until the old engine is gone
            me = asyncio.current_task()
            while not task.done():
                for other in asyncio.all_tasks():
                    if other is not me:
                        other.cancel()
                await asyncio.wait({task}, timeout=0.2)
            await asyncio.gather(task, return_exceptions=True)
            lock = store._lock
            if lock._fd is not None:  # the kernel drops a dead process's flock; its lock file stays
                os.close(lock._fd)
                lock._fd = None
            await engine.gateway.aclose()

        self.loop.call(crash())

    def _records(self) -> list[Any]:
        async def copy() -> list[Any]:
            return [rec.copy() for rec in self.engine.records.values()]

        return self.loop.call(copy())

    # ---- rules: faults --------------------------------------------------------------------------------------

    @initialize(seed=st.integers(0, 10_000))
    def seed(self, seed: int) -> None:
        self.emu.settings.seed = seed

    @rule(rate=st.sampled_from([0.0, 0.2, 0.5]), kinds=st.sampled_from(KINDS))
    def server_errors(self, rate: float, kinds: set[str] | None) -> None:
        self.emu.settings.server_error_rate = rate
        self.emu.settings.server_error_kinds = kinds
        _let_it_act()

    @rule(rate=st.sampled_from([0.0, 0.3, 0.7]))
    def lost_create_answers(self, rate: float) -> None:
        self.emu.settings.lost_create_rate = rate
        _let_it_act()

    @rule(rate=st.sampled_from([0.0, 0.3]), kinds=st.sampled_from(KINDS[1:]))
    def lost_answers(self, rate: float, kinds: set[str]) -> None:
        self.emu.settings.lost_answer_rate = rate
        self.emu.settings.lost_answer_kinds = kinds
        _let_it_act()

    @rule(jobs=st.sampled_from([1, 2, 100]), tokens=st.sampled_from([None, 60, 130]))
    def quota(self, jobs: int, tokens: int | None) -> None:
        """429s: fewer concurrent jobs, or a small enqueued-token limit (a file is ~50 tokens)."""
        self.emu.settings.max_concurrent_jobs = jobs
        self.emu.settings.enqueued_token_limit = tokens
        _let_it_act()

    @rule(pick=st.integers(0, 100))
    def expire_an_upload(self, pick: int) -> None:
        waiting = [rec for rec in self._records() if rec.stage is Stage.UPLOADED and rec.upload_name
                   and self.forced[f"expire {rec.batch_id}"] < EXPIRIES_PER_FILE]
        if waiting:
            rec = waiting[pick % len(waiting)]
            try:
                self.emu.expire_file(rec.upload_name)
            except KeyError:
                return  # already gone
            self.forced[f"expire {rec.batch_id}"] += 1
            self.figures["uploads expired"] += 1

    @rule(pick=st.integers(0, 100), how=st.sampled_from(["fail", "expire"]))
    def end_a_job_badly(self, pick: int, how: str) -> None:
        live = [job for job in self.emu.jobs() if job["state"] in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING")]
        live = [job for job in live if self.forced[f"fail {_stem(job)}"] < FAILS_PER_FILE]
        if live:
            job = live[pick % len(live)]
            try:
                (self.emu.fail_job if how == "fail" else self.emu.expire_job)(job["name"])
            except (KeyError, ValueError):
                return  # it ended meanwhile
            self.forced[f"fail {_stem(job)}"] += 1
            self.figures[f"jobs ended {'failed' if how == 'fail' else 'expired'}"] += 1

    @rule(seconds=st.sampled_from([0.1, 0.3, 0.8]))
    def time_passes(self, seconds: float) -> None:
        threading.Event().wait(seconds)

    @rule()
    def restart(self) -> None:
        self._stop_engine()
        self._start_engine()
        self.figures["clean restarts"] += 1

    @rule()
    def crash(self) -> None:
        self._crash_engine()
        self._start_engine()
        self.figures["crashes"] += 1

    # ---- invariants -------------------------------------------------------------------------------------------

    @invariant()
    def nothing_twice_nothing_broken(self) -> None:
        try:
            assert_no_display_name_twice(self.emu)
            for item in scanned_inputs(self.tmp / "in").values():
                alive = [j for j in jobs_of(self.emu, item) if j["state"] not in ENDED_BADLY]
                assert len(alive) <= 1, f"{item.batch_id}: {len(alive)} jobs that did not fail: {alive}"
            for rec in self._records():
                if rec.stage is Stage.DOWNLOADED:
                    assert rec.result_path and Path(rec.result_path).exists(), f"{rec.batch_id}: no result file"
                    check = check_results(Path(rec.source), Path(rec.result_path))
                    assert check.complete, f"{rec.batch_id}: result file incomplete: {check.problem()}"
            assert self.witness.saved_intents() is not None  # the checkpoint on disk loads
            assert not self.witness.violations, f"creates sent before their intent was saved: {self.witness.violations}"
        except BaseException:
            self.broken = True
            raise

    # ---- the end ----------------------------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if not self.broken:
                self._drain()
            elif self.task is not None and not self.task.done():
                self._stop_engine()
        finally:
            Gateway.create = self._create  # type: ignore[method-assign]
            self.loop.close()
            self.emu.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _drain(self) -> None:
        """Lift every fault; the run must finish on its own, every file downloaded, no job twice."""
        s = self.emu.settings
        s.server_error_rate = s.lost_create_rate = s.lost_answer_rate = 0.0
        s.max_concurrent_jobs, s.enqueued_token_limit = 100, None

        async def finish() -> int:
            return await asyncio.wait_for(asyncio.shield(self.task), 90)

        code = self.loop.call(finish(), timeout=100)
        self.engine.store.release_lock()
        self.loop.call(self.engine.gateway.aclose())
        stages = Counter(str(rec.stage) for rec in self._records())
        assert code == EXIT_OK, f"the run ended with exit {code}: {dict(stages)}"
        state = CheckpointStore(self.settings.checkpoint_path()).load()
        assert state is not None and all(rec.stage is Stage.DOWNLOADED for rec in state.records.values())
        judge(self.emu, SimpleNamespace(in_dir=self.tmp / "in", out_dir=self.tmp / "out"), retries=True)
        self.figures["examples finished"] += 1
        self.figures["creates sent"] += self.witness.calls
        self.figures["faults injected (5xx, lost answers, 429)"] += sum(
            1 for e in self.emu.journal()
            if (e.note or "").startswith("fault:") or e.status == 429)
        for name, value in self.figures.items():
            FIGURES[f"state machine: {name}"] += value


def _let_it_act() -> None:
    """A fault switched on gets a moment to meet the engine's calls before the next rule may switch it off."""
    threading.Event().wait(0.2)


def _stem(job: dict[str, Any]) -> str:
    return (job["display_name"] or "").rsplit("-", 2)[0]


def _settings(examples: int, steps: int) -> settings:
    return settings(
        max_examples=int(os.environ.get("GEMBATCH_PROPERTY_EXAMPLES") or examples),
        stateful_step_count=int(os.environ.get("GEMBATCH_PROPERTY_STEPS") or steps),
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: each step is real time; the steps are printed
        suppress_health_check=list(HealthCheck),
    )


def test_engine_state_machine() -> None:
    run_state_machine_as_test(EngineMachine, settings=_settings(examples=3, steps=10))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_engine_state_machine_long() -> None:
    run_state_machine_as_test(EngineMachine, settings=_settings(examples=20, steps=30))
