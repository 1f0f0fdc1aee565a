"""Watching a run through its checkpoint, read-only: for a second instance while another one holds the lock.

The watcher reloads the checkpoint every few seconds (no lock taken, nothing written) and publishes a
`BatchChanged` for every record that differs from the last load, so the same subscribers (the TUI panes)
work unchanged. It never talks to the API. Given a probe of the checkpoint's lock, it also follows who holds
the run, and says so when that engine stops (its lock is released or its process died).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .events import BatchChanged, EventBus, Level, LogLine
from .model import BatchRecord
from .redact import redact

Loader = Callable[[], Any]  # returns an object with `.records` (dict batch_id -> BatchRecord), or None
HolderProbe = Callable[[], Any]  # returns the lock's holder now (with `describe()`), or None when nobody holds it


def _default_loader(path: Path) -> Loader:
    def load() -> Any:
        from .checkpoint_store import CheckpointStore  # here so a watcher can be made without the module loaded

        return CheckpointStore(path).load()

    return load


class CheckpointWatcher:
    """Reloads `path` every `interval` seconds and publishes what changed on `bus`."""

    def __init__(
        self,
        path: Path,
        bus: EventBus,
        *,
        interval: float = 2.0,
        load: Loader | None = None,
        clock: Callable[[], float] = time.time,
        holder: HolderProbe | None = None,
    ) -> None:
        self.path = Path(path)
        self.bus = bus
        self.interval = interval
        self.clock = clock
        self._load = load or _default_loader(self.path)
        self._known: dict[str, BatchRecord] = {}
        self._last_problem: str | None = None
        self._stop = asyncio.Event()
        self.loads = 0
        self._probe = holder
        self._probed: str | None = None
        self._probe_answered = False
        self.holder: str | None = None  # who holds the run as of the last reload ("pid 12 on host, since ..")
        self.holder_checked = False  # True once the probe has answered at least once
        self.held_before = False  # True once the probe has named a holder

    @property
    def holder_stopped(self) -> bool:
        """True when the probe named a holder before and now says nobody holds the checkpoint."""
        return self.held_before and self.holder is None

    def _probe_holder(self) -> None:
        """Ask the lock who holds the run (blocking: part of `poll`); a failed probe changes nothing."""
        if self._probe is None:
            return
        try:
            found = self._probe()
        except Exception:
            return
        self._probed = None if found is None else found.describe() if hasattr(found, "describe") else str(found)
        self._probe_answered = True

    def _note_holder(self) -> None:
        """Publish a line when the holder changed since the last reload (not on the first one)."""
        if not self._probe_answered:
            return
        probed, was, first = self._probed, self.holder, not self.holder_checked
        self.holder, self.holder_checked = probed, True
        self.held_before = self.held_before or probed is not None
        if first or probed == was:
            return
        if probed is None:
            text = f"the engine that held {self.path} ({was}) has stopped; this is its last saved state"
        else:
            text = f"{self.path} is now held by {probed}"
        self.bus.publish(LogLine(self.clock(), Level.INFO, text))

    @property
    def records(self) -> dict[str, BatchRecord]:
        """The records as of the last load, in checkpoint order."""
        return self._known

    def poll(self) -> list[BatchRecord]:
        """Load the checkpoint once; returns copies of the records that changed (blocking: run in a thread)."""
        self._probe_holder()
        state = self._load()
        self.loads += 1
        if state is None:
            return []
        changed: list[BatchRecord] = []
        fresh: dict[str, BatchRecord] = {}
        for batch_id, rec in state.records.items():
            fresh[batch_id] = rec
            old = self._known.get(batch_id)
            if old is None or old != rec:
                changed.append(rec.copy())
        self._known = fresh
        return changed

    def publish(self, changed: list[BatchRecord]) -> None:
        """Hand the changed records to the bus subscribers, in checkpoint order."""
        now = self.clock()
        for rec in changed:
            self.bus.publish(BatchChanged(now, rec))

    async def poll_once(self) -> int:
        """One reload off the event loop, then publish; a failed load is reported once, then retried."""
        try:
            changed = await asyncio.to_thread(self.poll)
        except Exception as exc:  # a half-written or missing file: say so once, try again next time
            self._note_holder()
            problem = redact(f"cannot read the checkpoint {self.path}: {exc}")
            if problem != self._last_problem:
                self._last_problem = problem
                self.bus.publish(LogLine(self.clock(), Level.WARNING, problem))
            return 0
        if self._last_problem is not None:
            self._last_problem = None
            self.bus.publish(LogLine(self.clock(), Level.INFO, f"reading the checkpoint {self.path} again"))
        self._note_holder()
        self.publish(changed)
        return len(changed)

    async def run(self) -> None:
        """Reload every `interval` seconds until `stop()`."""
        self.bus.publish(LogLine(self.clock(), Level.INFO,
                                 f"read-only: watching {self.path} every {self.interval:g}s"))
        while not self._stop.is_set():
            await self.poll_once()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):  # not wait_for: on 3.11 it can swallow a cancellation
                    await self._stop.wait()

    def stop(self) -> None:
        """Make `run()` return after the current reload."""
        self._stop.set()
