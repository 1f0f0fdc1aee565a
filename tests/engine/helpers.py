"""Running the engine in-process against the emulator, and reading the emulator's account of it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gembatch.core.config import Settings
from gembatch.core.engine import Engine
from gembatch.core.events import Event, LogLine
from gembatch.core.headless import build_engine

from ..conftest import FAKE_KEY


def engine_settings(tmp_path: Path, base_url: str, **overrides: Any) -> Settings:
    """Settings for a quick run: short polls and cool-downs, folders in tmp_path."""
    settings = Settings(
        input_dir=tmp_path / "in",
        output_dir=tmp_path / "out",
        checkpoint=tmp_path / "out" / "run.checkpoint.json",
        base_url=base_url,
        poll_interval=0.1,
    )
    settings.admission.cool_down_seconds = 0.5
    settings.admission.cool_down_max_seconds = 2.0
    settings.transfer.request_timeout = 5.0
    settings.transfer.max_retries = 8
    settings.transfer.retry_max_wait = 0.5
    settings.recovery.ambiguous_grace = 1.0
    for name, value in overrides.items():
        if hasattr(settings.admission, name):
            setattr(settings.admission, name, value)
        elif hasattr(settings.transfer, name):
            setattr(settings.transfer, name, value)
        elif hasattr(settings.recovery, name):
            setattr(settings.recovery, name, value)
        else:
            settings = dataclasses.replace(settings, **{name: value})
    return settings


class Recorder:
    """Keeps every event an engine published."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def lines(self) -> list[str]:
        return [e.message for e in self.events if isinstance(e, LogLine)]


async def run_engine(
    settings: Settings, timeout: float = 60.0, hooks: tuple[Callable[[Event], None], ...] = ()
) -> tuple[int, Engine, Recorder]:
    """Build, lock, run to the end, release; returns the exit code, the engine and its events."""
    engine = build_engine(settings, FAKE_KEY)
    recorder = Recorder()
    engine.bus.subscribe(recorder)
    for hook in hooks:
        engine.bus.subscribe(hook)
    engine.store.acquire_lock()
    try:
        code = await asyncio.wait_for(engine.run(), timeout)
    finally:
        engine.store.release_lock()
        await engine.gateway.aclose()
    return code, engine, recorder


def jobs_by_file(emu: Any) -> dict[str, list[dict[str, Any]]]:
    """The emulator's jobs grouped by the input file stem in their display name."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for job in emu.jobs():
        name = job["display_name"] or ""
        stem = name.split("-", 2)[2].rsplit("-", 2)[0] if name.startswith("gembatch-") else name
        grouped.setdefault(stem, []).append(job)
    return grouped


def assert_one_job_per_attempt(emu: Any) -> Counter[str]:
    """No display name was created twice (the emulator's journal is the witness); returns the counts."""
    made = Counter(
        e.display_name
        for e in emu.journal()
        if e.kind == "batches.create" and e.display_name and (e.status == 200 or (e.note and "lost" in e.note))
    )
    doubled = {name: n for name, n in made.items() if n > 1}
    assert not doubled, f"display names created more than once: {doubled}"
    per_name = Counter(job["display_name"] for job in emu.jobs())
    assert all(n == 1 for n in per_name.values()), per_name
    return made


def assert_results_match_inputs(input_dir: Path, output_dir: Path) -> int:
    """Every input file has a result file whose keys are exactly the input's; returns the file count."""
    count = 0
    for source in sorted(input_dir.glob("*.jsonl")):
        result = output_dir / f"{source.stem}.results.jsonl"
        assert result.exists(), f"no results for {source.name}"
        want = [json.loads(line)["key"] for line in source.read_text().splitlines() if line.strip()]
        got = [json.loads(line)["key"] for line in result.read_text().splitlines() if line.strip()]
        assert sorted(got) == sorted(want), source.name
        count += 1
    return count
