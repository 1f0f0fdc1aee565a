"""Network trouble on every kind of call: 5xx, timeouts, dropped connections (lost answers).

Every run must still finish with one job per file and complete results; and a create is never repeated by the
SDK: the HTTP creates the emulator saw, per display name, are exactly the creates the engine sent through
Gateway.create (a create the engine repeats after a grace period, under the same display name, counts there too).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from gembatch.core.exit_codes import EXIT_OK
from gembatch.core.gateway import Gateway
from gembatch.core.headless import build_engine
from gembatch.core.model import Stage

from ..conftest import FAKE_KEY
from ..engine.helpers import engine_settings, run_engine
from .support import FIGURES, judge, write_inputs


class CreateCounter:
    """Counts Gateway.create calls per display name (what the engine sent, before the SDK)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: Counter[str] = Counter()
        original = Gateway.create

        async def create(gateway: Gateway, file_name: str, display_name: str) -> Any:
            self.sent[display_name] += 1
            return await original(gateway, file_name, display_name)

        monkeypatch.setattr(Gateway, "create", create)


def _http_creates(emulator) -> Counter[str]:
    return Counter(e.display_name for e in emulator.journal() if e.kind == "batches.create")


def _faults(emulator, note: str) -> int:
    return sum(1 for e in emulator.journal() if (e.note or "") == note)


def _check(emulator, settings, counter: CreateCounter, *, retries: bool = False) -> None:
    http = _http_creates(emulator)  # a create answered 5xx before its body was read has no display name here
    assert sum(http.values()) == sum(counter.sent.values()), (
        "the SDK (or something under Gateway.create) repeated a create: "
        f"{sum(http.values())} HTTP creates for {sum(counter.sent.values())} sent by the engine")
    over = {name: n for name, n in http.items() if name is not None and n > counter.sent[name]}
    assert not over, f"creates repeated under the engine: {over}"
    judge(emulator, SimpleNamespace(in_dir=settings.input_dir, out_dir=settings.output_dir), retries=retries)


KINDS = ["upload.start", "upload.chunk", "batches.create", "batches.list", "files.download"]


@pytest.mark.parametrize("kind", KINDS)
async def test_5xx_on_one_kind_of_call(tmp_path: Path, emulator, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    write_inputs(tmp_path / "in", 5, 3, tag=kind)
    emulator.settings.server_error_rate = 0.5
    emulator.settings.server_error_kinds = {kind}
    emulator.settings.seed = 11
    counter = CreateCounter(monkeypatch)
    settings = engine_settings(tmp_path, emulator.base_url)

    code, _, _ = await run_engine(settings, timeout=90)

    assert code == EXIT_OK
    fired = _faults(emulator, "fault:5xx")
    assert fired > 0, f"no 5xx was injected on {kind}"
    _check(emulator, settings, counter)
    FIGURES["network faults injected: 5xx"] += fired


async def test_5xx_on_every_kind_with_a_restart_mid_upload(tmp_path: Path, emulator,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """All kinds at once, and a stop while uploads are in flight, so that the restart lists files (files.list)."""
    write_inputs(tmp_path / "in", 6, 3, tag="every")
    emulator.settings.server_error_rate = 0.3
    emulator.settings.seed = 5
    counter = CreateCounter(monkeypatch)
    settings = engine_settings(tmp_path, emulator.base_url)

    engine = build_engine(settings, FAKE_KEY)
    engine.store.acquire_lock()
    try:
        run = asyncio.create_task(engine.run())
        for _ in range(600):
            if any(rec.stage is Stage.UPLOADING for rec in engine.records.values()):
                break
            await asyncio.sleep(0.005)
        engine.request_stop()
        await asyncio.wait_for(run, 30)
    finally:
        engine.store.release_lock()
        await engine.gateway.aclose()
    code, _, _ = await run_engine(settings, timeout=90)

    assert code == EXIT_OK
    kinds = {e.kind for e in emulator.journal() if e.note == "fault:5xx"}
    assert len(kinds) >= 3, f"5xx fired on {kinds} only"
    _check(emulator, settings, counter)
    FIGURES["network faults injected: 5xx"] += _faults(emulator, "fault:5xx")


async def test_timeouts_a_slow_server_beyond_the_request_timeout(tmp_path: Path, emulator,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Every answer comes after the engine stopped waiting (the create still takes effect): for a while."""
    write_inputs(tmp_path / "in", 4, 3, tag="slow")
    counter = CreateCounter(monkeypatch)
    settings = engine_settings(tmp_path, emulator.base_url, request_timeout=0.5, ambiguous_grace=3.0)
    slow_period = asyncio.Event()

    async def slow_for_a_while() -> None:
        while not any(e.kind == "batches.create" for e in emulator.journal()):
            await asyncio.sleep(0.01)
        emulator.settings.slow_seconds = 1.2  # beyond the 0.5 s timeout, below the 3 s grace
        await asyncio.sleep(2.5)
        emulator.settings.slow_seconds = 0.0
        slow_period.set()

    slow = asyncio.create_task(slow_for_a_while())
    code, _, recorder = await run_engine(settings, timeout=90)
    await slow

    assert code == EXIT_OK and slow_period.is_set()
    timeouts = sum("Timeout" in line for line in recorder.lines())
    assert timeouts > 0, "no call timed out"
    _check(emulator, settings, counter)
    FIGURES["network faults injected: timeouts"] += timeouts


async def test_resets_lost_answers_on_creates_uploads_lists_and_downloads(tmp_path: Path, emulator,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection drops after the server did the work: creates must be found by name, not sent again."""
    write_inputs(tmp_path / "in", 6, 3, tag="reset")
    emulator.settings.lost_create_rate = 0.5
    emulator.settings.lost_answer_rate = 0.3
    emulator.settings.lost_answer_kinds = {"upload.chunk", "batches.list", "files.download"}
    emulator.settings.seed = 3
    counter = CreateCounter(monkeypatch)
    settings = engine_settings(tmp_path, emulator.base_url)

    code, _, recorder = await run_engine(settings, timeout=90)

    assert code == EXIT_OK
    lost = _faults(emulator, "fault:lost-answer")
    lost_creates = sum(1 for e in emulator.journal() if e.kind == "batches.create" and e.note == "fault:lost-answer")
    assert lost_creates > 0, "no create answer was lost"
    assert sum("by display name" in line for line in recorder.lines()) >= lost_creates
    _check(emulator, settings, counter)
    FIGURES["network faults injected: lost answers (resets)"] += lost


def test_creates_are_sent_with_the_sdk_retries_off() -> None:
    """The create call itself asks the SDK for a single attempt (its retry options would otherwise repeat it)."""
    import inspect

    source = inspect.getsource(Gateway.create)
    assert "HttpRetryOptions(attempts=1)" in source
