"""Typed engine events and the bus that hands them to subscribers (checkpoint writer, logger, TUI)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from .backend import Quota
from .model import BatchRecord

log = logging.getLogger(__name__)


class Level(StrEnum):
    """Log levels of engine log lines."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Wait:
    """Why a create waits, as figures (the presentation renders them, in UTC; `core/wait_text.py`).

    kind: "cooling" (after a 429, until `until`), "limit" (`used` of `limit` reached; tokens: `adding` more would
    pass it), "probing" (an admitted create that tries one past a learned limit). confidence: "set" (the user's
    setting), "sure", "guess" or "held by others" (learned while other jobs held part of the quota);
    learned_at and probe_at are unix times (probe_at: when a guessed limit is tried one create higher)."""

    kind: str
    quota: Quota | None
    used: int | None = None
    limit: int | None = None
    adding: int | None = None
    until: float | None = None
    confidence: str | None = None
    learned_at: float | None = None
    probe_at: float | None = None


@dataclass(frozen=True, slots=True)
class Belief:
    """What admission believes of one learned limit: its value, how sure ("sure", "guess", "held by others"),
    when it was learned (None: from the checkpoint) and whether a probe of it is in flight."""

    quota: Quota
    value: int
    confidence: str
    learned_at: float | None
    probing: bool = False


@dataclass(frozen=True, slots=True)
class AdmissionFigures:
    """What admission control knows right now; the countdown pane shows it."""

    jobs_in_flight: int
    max_jobs: int
    tokens_enqueued: int
    token_budget: int | None  # None while no budget is set or learned
    creates_last_minute: int
    creates_per_minute: int | None
    cool_down_until: float | None  # unix time
    cool_down_quota: Quota | None
    rate_limited_total: int  # 429s received on creates in this run
    other_jobs: int = 0  # unended jobs on the account that are not ours, as the last poll saw them
    beliefs: tuple[Belief, ...] = ()  # what admission believes of each learned limit and why
    wait: Wait | None = None  # why the next create waits, as admission last decided; None: it may go


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every engine event; `at` is unix time."""

    at: float


@dataclass(frozen=True, slots=True)
class BatchChanged(Event):
    """One batch changed; `record` is a snapshot the receiver may keep."""

    record: BatchRecord


@dataclass(frozen=True, slots=True)
class LogLine(Event):
    """A line for the log stream; never holds the API key."""

    level: Level
    message: str
    batch_id: str | None = None


@dataclass(frozen=True, slots=True)
class CoolDownStarted(Event):
    """A 429 stopped creates until `until` (unix time)."""

    quota: Quota
    until: float
    message: str = ""


@dataclass(frozen=True, slots=True)
class CoolDownEnded(Event):
    """Creates may go again."""

    quota: Quota


@dataclass(frozen=True, slots=True)
class AdmissionChanged(Event):
    """The admission figures moved (a job started or ended, a create went out, a budget was learned)."""

    figures: AdmissionFigures


@dataclass(frozen=True, slots=True)
class PauseChanged(Event):
    """The user paused or resumed new uploads and creates."""

    paused: bool


@dataclass(frozen=True, slots=True)
class RunFinished(Event):
    """Every batch has ended (or the engine was stopped); `exit_code` follows the CLI contract."""

    exit_code: int
    summary: dict[str, int] = field(default_factory=dict)


Subscriber = Callable[[Event], None]


class EventBus:
    """Hands each event to every subscriber in order; a failing subscriber is logged, not fatal."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def publish(self, event: Event) -> None:
        """Deliver `event` to every subscriber, synchronously; subscribers must be quick."""
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:  # one broken pane must not stop the engine
                log.exception("event subscriber %r failed on %s", subscriber, type(event).__name__)
