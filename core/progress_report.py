"""Headless progress: a line every `progress_interval` seconds, and the start and end of every admission wait.

Both are engine LogLines published on the engine's bus, so the terminal, the log file and the TUI's log pane
all get the same lines. The figures come from the engine's records and admission; nothing here blocks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from .admission import format_tokens
from .events import AdmissionFigures, BatchChanged, Event, EventBus, Level, LogLine, RunFinished
from .model import BatchRecord, Stage

ENDED_BADLY = frozenset({Stage.FAILED, Stage.CANCELLED, Stage.EXPIRED, Stage.REJECTED})
NOT_UPLOADED = frozenset({Stage.NEW, Stage.VALIDATED, Stage.UPLOADING})
IN_FLIGHT = frozenset({Stage.CREATING, Stage.PENDING, Stage.RUNNING})
FINISHED = frozenset({Stage.DOWNLOADED, Stage.FAILED, Stage.CANCELLED, Stage.EXPIRED})  # work done by a job
# Waits the engine announces itself (cool-downs, pause) are not tracked here; these are the silent ones.
_WAIT_KINDS = (
    ("token budget", "the enqueued-token budget"),
    ("concurrent cap", "the concurrent-jobs cap"),
    ("creates/min", "the creates-per-minute limit"),
)


@dataclass(frozen=True, slots=True)
class RunCounts:
    """Batches per stage group and requests answered, as the progress line and the leaving summary show them."""

    total: int
    downloaded: int
    ended_badly: int
    skipped: int
    in_flight: int
    downloading: int
    uploaded: int
    not_uploaded: int
    requests_total: int
    requests_answered: int
    by_stage: dict[Stage, int]

    @property
    def done(self) -> int:
        """Batches that have ended, whichever way."""
        return self.downloaded + self.ended_badly + self.skipped

    @property
    def work_left(self) -> bool:
        """True unless the run has batches and every one of them has ended."""
        return self.total == 0 or self.done < self.total


def count_batches(records: Iterable[BatchRecord]) -> RunCounts:
    """Count `records` by stage group; one pass, no copies."""
    by_stage = dict.fromkeys(Stage, 0)
    requests_total = requests_answered = 0
    for rec in records:
        by_stage[rec.stage] += 1
        requests_total += max(0, rec.request_count)
        if rec.request_count > 0:
            requests_answered += min(rec.request_count, rec.succeeded_count + rec.failed_count)
    return RunCounts(
        total=sum(by_stage.values()),
        downloaded=by_stage[Stage.DOWNLOADED],
        ended_badly=sum(by_stage[s] for s in ENDED_BADLY),
        skipped=by_stage[Stage.SKIPPED],
        in_flight=sum(by_stage[s] for s in IN_FLIGHT),
        downloading=by_stage[Stage.SUCCEEDED],
        uploaded=by_stage[Stage.UPLOADED],
        not_uploaded=sum(by_stage[s] for s in NOT_UPLOADED),
        requests_total=requests_total,
        requests_answered=requests_answered,
        by_stage={stage: n for stage, n in by_stage.items() if n},
    )


def utc_stamp(at: float) -> str:
    """2026-12-01T03:04:05Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def span(seconds: float) -> str:
    """45s, 12m05s, 3h07m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def wait_kind(reason: str | None) -> str | None:
    """Which quota an uploads' wait reason is about ("the enqueued-token budget"); None for no wait, a pause
    or a cool-down (those are logged by the engine when they start and end)."""
    if not reason:
        return None
    for prefix, kind in _WAIT_KINDS:
        if reason.startswith(prefix):
            return kind
    return None


class AdmissionView(Protocol):
    """What the report reads from admission control."""

    def figures(self, now: float) -> AdmissionFigures: ...


class ReportedEngine(Protocol):
    """The part of the engine the report reads."""

    bus: EventBus
    paused: bool

    @property
    def records(self) -> dict[str, BatchRecord]: ...

    @property
    def admission(self) -> AdmissionView: ...


class ProgressReport:
    """Subscribe it to the engine's bus: from the first event on, it logs a progress line every `interval`
    seconds, and the start and end of each wait on a quota (once each, not on every tick)."""

    def __init__(self, engine: ReportedEngine, interval: float, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.interval = interval
        self.clock = clock
        self.started_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False
        self._seen: dict[str, Stage] = {}  # batch id -> the stage its last event showed
        self._finished: dict[str, int] = {}  # batches that finished in this run -> their requests
        self._waiting: dict[str, str] = {}  # uploaded batches -> the reason they wait for their create
        self._wait: tuple[str, str, float] | None = None  # (kind, reason, since) of the wait in progress

    # ---- events --------------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        if self._stopped:
            return
        if self.started_at is None:
            self.started_at = event.at
        self._arm()
        if isinstance(event, BatchChanged):
            self._track(event.record, event.at)
        elif isinstance(event, RunFinished):
            self._close_wait(event.at, " (the run stopped)")
            self.stop()

    def _track(self, rec: BatchRecord, at: float) -> None:
        previous = self._seen.get(rec.batch_id)
        self._seen[rec.batch_id] = rec.stage
        if previous is not None and not previous.ended and rec.stage in FINISHED:
            self._finished[rec.batch_id] = max(1, rec.request_count)
        elif previous is not None and previous.ended and not rec.stage.ended:
            self._finished.pop(rec.batch_id, None)  # submitted again: its first end was not the work done
        if rec.stage is Stage.UPLOADED and wait_kind(rec.wait_reason) is not None:
            self._waiting[rec.batch_id] = rec.wait_reason or ""
            reason: str | None = rec.wait_reason
        else:
            self._waiting.pop(rec.batch_id, None)
            reason = next(iter(self._waiting.values()), None)
        kind = wait_kind(reason)
        current = self._wait[0] if self._wait else None
        if kind == current:
            return
        self._close_wait(at)
        if kind is not None and reason is not None:
            self._wait = (kind, reason, at)
            self._log(at, f"waiting for {kind} ({reason}) {self._until(kind, rec, at)}")

    def _close_wait(self, at: float, why: str = "") -> None:
        if self._wait is not None:
            kind, _, since = self._wait
            self._wait = None
            self._log(at, f"wait for {kind} over after {span(at - since)}{why}")

    def _until(self, kind: str, rec: BatchRecord | None, now: float) -> str:
        wait = self.engine.admission.figures(now).wait  # admission's last word on the wait (figures, not text)
        if kind == "the creates-per-minute limit" and wait is not None and wait.until is not None:
            return f"until about {utc_stamp(wait.until)}"
        return "until a job of ours ends"

    # ---- the periodic line ---------------------------------------------------------------------

    def _arm(self) -> None:
        if self._timer is not None or self._stopped:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # published outside a loop (a test): no timer
            return
        self._timer = loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._stopped:
            return
        if self.engine.records:
            self._log(self.clock(), self.line(self.clock()))
        self._arm()

    def stop(self) -> None:
        """No more lines (the run is over)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def line(self, now: float) -> str:
        """The progress line as it stands at `now`."""
        counts = count_batches(self.engine.records.values())
        parts = [
            f"progress: batches {counts.done}/{counts.total} done ({counts.downloaded} ok, "
            f"{counts.ended_badly} ended badly, {counts.skipped} skipped), {counts.in_flight} in flight, "
            f"{counts.downloading} downloading, {counts.uploaded} uploaded not created, "
            f"{counts.not_uploaded} not uploaded yet",
            f"requests {counts.requests_answered}/{counts.requests_total} answered",
            self._admission_text(counts, now),
            self._eta_text(counts, now),
        ]
        return "; ".join(parts)

    def _admission_text(self, counts: RunCounts, now: float) -> str:
        if self.engine.paused:
            return "admission: paused (p resumes in the UI)"
        figures = self.engine.admission.figures(now)
        if figures.cool_down_until is not None:
            quota = figures.cool_down_quota or "429"
            return f"admission: cooling down after a 429 ({quota}) until {utc_stamp(figures.cool_down_until)}"
        if self._wait is not None:
            kind, reason, since = self._wait
            head = next((r for r in self.engine.records.values() if r.stage is Stage.UPLOADED), None)
            return (f"admission: waiting for {kind} ({reason}) since {utc_stamp(since)}, "
                    f"{self._until(kind, head, now)}")
        budget = ("budget not known yet" if figures.token_budget is None
                  else f"of {format_tokens(figures.token_budget)}")
        held = (f"{figures.jobs_in_flight} of {figures.max_jobs or 'no cap'} jobs, "
                f"{format_tokens(figures.tokens_enqueued)} tokens {budget}")
        if counts.uploaded:
            return f"admission: open ({held})"
        return f"admission: nothing waiting ({held})"

    def _eta_text(self, counts: RunCounts, now: float) -> str:
        finished = sum(self._finished.values())
        elapsed = now - (self.started_at if self.started_at is not None else now)
        if not counts.work_left:
            return "ETA: done"
        if finished <= 0 or elapsed <= 0:
            return "ETA unknown (no batch has finished in this run yet)"
        left = sum(max(1, rec.request_count) for rec in self.engine.records.values() if not rec.stage.ended)
        seconds = left / (finished / elapsed)
        return (f"ETA {utc_stamp(now + seconds)} (in {span(seconds)}, from {len(self._finished)} batches "
                f"finished in {span(elapsed)})")

    def _log(self, at: float, message: str) -> None:
        self.engine.bus.publish(LogLine(at, Level.INFO, message))
