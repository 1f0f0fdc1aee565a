"""The read-only watcher: reloads the checkpoint, publishes only what changed, never writes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gembatch.core.checkpoint_format import RunState
from gembatch.core.checkpoint_store import CheckpointStore
from gembatch.core.events import BatchChanged, EventBus, LogLine
from gembatch.core.model import Stage
from gembatch.core.watch import CheckpointWatcher

from .fake_engine import NOW, sample_records


class Collect:
    def __init__(self) -> None:
        self.events: list = []

    def __call__(self, event) -> None:
        self.events.append(event)

    def changed(self) -> list[str]:
        return [e.record.batch_id for e in self.events if isinstance(e, BatchChanged)]


async def test_publishes_every_record_then_only_changes(tmp_path: Path) -> None:
    records = {rec.batch_id: rec for rec in sample_records()}
    path = tmp_path / "run.checkpoint.json"
    writer = CheckpointStore(path)
    state = RunState(run_id="r1", created_at=NOW, model="m", records=records)
    writer.create(state)
    bus, seen = EventBus(), Collect()
    bus.subscribe(seen)
    watcher = CheckpointWatcher(path, bus, interval=0.1)

    assert await watcher.poll_once() == 12
    assert seen.changed() == list(records)
    assert await watcher.poll_once() == 0  # nothing changed, nothing published

    rec = records["qa_part_005"]
    rec.stage = Stage.DOWNLOADED
    rec.succeeded_count = 100
    writer.append(rec)
    await writer.commit()
    seen.events.clear()
    files_before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.iterdir()}
    assert await watcher.poll_once() == 1
    assert seen.changed() == ["qa_part_005"]
    assert seen.events[0].record.stage is Stage.DOWNLOADED
    files_after = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.iterdir()}
    assert files_after == files_before  # the watcher writes nothing and takes no lock


async def test_a_failed_load_is_reported_once_and_retried(tmp_path: Path) -> None:
    calls = {"n": 0}
    good = dataclasses.make_dataclass("State", [("records", dict)])

    def load():
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OSError("disk hiccup")
        return good(records={rec.batch_id: rec for rec in sample_records()[:2]})

    bus, seen = EventBus(), Collect()
    bus.subscribe(seen)
    watcher = CheckpointWatcher(tmp_path / "x.json", bus, load=load)
    assert await watcher.poll_once() == 0
    assert await watcher.poll_once() == 0
    assert await watcher.poll_once() == 2
    warnings = [e for e in seen.events if isinstance(e, LogLine) and "cannot read" in e.message]
    assert len(warnings) == 1


HOLD_THE_LOCK = """
import sys, time
from pathlib import Path
from gembatch.core.checkpoint_store import CheckpointStore
CheckpointStore(Path(sys.argv[1])).acquire_lock()
print("locked", flush=True)
time.sleep(120)
"""


async def test_the_watcher_notices_when_the_engine_holding_the_lock_dies(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    path = tmp_path / "run.checkpoint.json"
    records = {rec.batch_id: rec for rec in sample_records()}
    CheckpointStore(path).create(RunState(run_id="r1", created_at=NOW, model="m", records=records))
    engine = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert engine.stdout is not None and engine.stdout.readline().strip() == "locked"
        bus, seen = EventBus(), Collect()
        bus.subscribe(seen)
        watcher = CheckpointWatcher(path, bus, holder=CheckpointStore(path).read_holder)
        await watcher.poll_once()
        assert watcher.holder is not None and f"pid {engine.pid}" in watcher.holder
        assert not watcher.holder_stopped
        engine.send_signal(signal.SIGKILL)  # no clean release: the lock file stays, the flock goes with it
        engine.wait(10)
        assert (tmp_path / "run.checkpoint.json.lock").exists()
        await watcher.poll_once()
        assert watcher.holder is None and watcher.holder_stopped
        lines = [e.message for e in seen.events if isinstance(e, LogLine)]
        assert any("has stopped" in line and f"pid {engine.pid}" in line for line in lines)
        await watcher.poll_once()
        assert sum("has stopped" in e.message for e in seen.events if isinstance(e, LogLine)) == 1  # said once
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait(10)
