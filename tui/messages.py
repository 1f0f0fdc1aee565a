"""Engine events as Textual messages, and the bridge that posts them to the app.

The engine publishes on its own asyncio task, on the app's event loop; the bridge turns each event into a
message. Batch changes are coalesced by batch id (the latest snapshot wins) into one `BatchesChanged` per
burst: the message waiting in the app's queue takes every later change until the app reads its records, so
10,000 changes at start-up cost one message and one grid update, not 10,000. Admission figures replace their
predecessor in the queue (`can_replace`), as toolong does for its high-frequency messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gembatch.core.events import (
    AdmissionChanged,
    AdmissionFigures,
    BatchChanged,
    CoolDownEnded,
    CoolDownStarted,
    Event,
    EventBus,
    LogLine,
    PauseChanged,
    Quota,
    RunFinished,
)
from gembatch.core.model import BatchRecord
from textual.message import Message
from textual.message_pump import MessagePump


class BatchesChanged(Message):
    """Some batches changed: the latest snapshot of each, by batch id, in the order they first changed.

    Open until its records are read: the bridge adds the changes that arrive while it waits in the queue."""

    def __init__(self, record: BatchRecord) -> None:
        super().__init__()
        self._records = {record.batch_id: record}
        self._open = True

    def add(self, record: BatchRecord) -> bool:
        """Take a later snapshot into this message; False once its records were read (post a new message)."""
        if not self._open:
            return False
        self._records[record.batch_id] = record
        return True

    @property
    def records(self) -> list[BatchRecord]:
        """The snapshots, one per batch; reading them closes the message to later changes."""
        self._open = False
        return list(self._records.values())


@dataclass
class LogAdded(Message):
    """A line for the log pane."""

    line: LogLine


@dataclass
class AdmissionUpdated(Message):
    """The admission figures moved; only the latest matters."""

    figures: AdmissionFigures

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, AdmissionUpdated)


@dataclass
class CoolDownUpdated(Message):
    """A cool-down started (`until` set) or ended (`until` None)."""

    quota: Quota
    until: float | None
    text: str = ""


@dataclass
class PauseUpdated(Message):
    """The engine paused or resumed."""

    paused: bool


@dataclass
class RunEnded(Message):
    """The engine's run returned (the checkpoint is saved)."""

    exit_code: int
    summary: dict[str, int] = field(default_factory=dict)


class EngineBridge:
    """Subscribes to an event bus and posts the matching messages to `target`."""

    def __init__(self, bus: EventBus, target: MessagePump) -> None:
        self._target = target
        self._waiting: BatchesChanged | None = None  # the batch message not read yet
        self._unsubscribe: Callable[[], None] | None = bus.subscribe(self)

    def __call__(self, event: Event) -> None:
        match event:
            case BatchChanged(record=record):
                if self._waiting is None or not self._waiting.add(record):
                    self._waiting = BatchesChanged(record)
                    self._target.post_message(self._waiting)
            case LogLine():
                self._target.post_message(LogAdded(event))
            case AdmissionChanged(figures=figures):
                self._target.post_message(AdmissionUpdated(figures))
            case CoolDownStarted(quota=quota, until=until, message=text):
                self._target.post_message(CoolDownUpdated(quota, until, text))
            case CoolDownEnded(quota=quota):
                self._target.post_message(CoolDownUpdated(quota, None))
            case PauseChanged(paused=paused):
                self._target.post_message(PauseUpdated(paused))
            case RunFinished(exit_code=code, summary=summary):
                self._target.post_message(RunEnded(code, dict(summary)))

    def close(self) -> None:
        """Stop listening."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
