"""What the monitor needs from an engine: the real `Engine` has it, and so does the tests' fake."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from gembatch.core.events import AdmissionFigures, EventBus


class CheckpointLock(Protocol):
    """The part of `CheckpointStore` the app uses: the lock, and where the file is (for read-only watching)."""

    path: Path

    def acquire_lock(self) -> None: ...

    def release_lock(self) -> None: ...


class AdmissionView(Protocol):
    """Admission figures on demand (the 1 Hz tick refreshes creates-per-minute with it)."""

    def figures(self, now: float) -> AdmissionFigures: ...


class Closable(Protocol):
    """The gateway: closed when the engine's run is over."""

    async def aclose(self) -> None: ...


class EngineSurface(Protocol):
    """Events up (`bus`), commands down (the methods); `run()` returns the exit code after saving."""

    bus: EventBus
    paused: bool
    started_at: float
    store: CheckpointLock
    gateway: Closable

    @property
    def admission(self) -> AdmissionView: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def retry(self, batch_id: str) -> bool: ...

    def skip(self, batch_id: str) -> bool: ...

    async def cancel(self, batch_id: str) -> bool: ...

    def request_stop(self) -> None: ...

    async def run(self) -> int: ...
