"""Overall progress of a run, kept up to date by diff as batch records change (no Textual here)."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from gembatch.core.model import BatchRecord, Stage

FAILED_STAGES = frozenset({Stage.FAILED, Stage.CANCELLED, Stage.EXPIRED, Stage.REJECTED})
RATE_WINDOW = 600.0  # seconds of history behind the estimate of time left
RATE_MIN_SPAN = 5.0  # no estimate from less history than this
MINUTES_KEPT = 60  # per-minute progress kept for the header's sparkline


def requests_done(rec: BatchRecord) -> int:
    """Requests of this batch that have an answer (succeeded or failed)."""
    if rec.request_count <= 0:
        return 0
    return min(rec.request_count, rec.succeeded_count + rec.failed_count)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The figures the summary bar shows."""

    files_total: int
    files_done: int  # ended, whichever way: the sum of the four counts below
    files_failed: int  # failed, cancelled, expired or rejected (the exit code's "some ended otherwise")
    requests_total: int
    requests_done: int
    seconds_left: float | None
    files_ok: int = 0  # results saved
    files_rejected: int = 0  # did not pass validation (counted in files_failed too)
    files_skipped: int = 0

    @property
    def outcomes(self) -> list[tuple[str, int]]:
        """The ended files by outcome, `ok` always, the others when there are some; they add up to `files_done`."""
        parts = [("ok", self.files_ok), ("failed", self.files_failed - self.files_rejected),
                 ("rejected", self.files_rejected), ("skipped", self.files_skipped)]
        return [(name, n) for name, n in parts if n or name == "ok"]


class RunTally:
    """Files and requests done of total, by stage, and a sliding-window estimate of the time left."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[Stage, int, int]] = {}  # batch id -> (stage, requests, done)
        self.by_stage: Counter[Stage] = Counter()
        self.files_done = 0
        self.files_failed = 0
        self.requests_total = 0
        self.requests_done = 0
        self._samples: deque[tuple[float, int]] = deque()
        self._arrived_done = 0
        self._minutes: deque[tuple[int, int]] = deque()  # (minute, progress at its last sample), oldest first

    @property
    def files_total(self) -> int:
        """How many batches the run has."""
        return len(self._known)

    def apply(self, rec: BatchRecord) -> None:
        """Take in the latest snapshot of one batch; cost does not depend on the number of batches."""
        old = self._known.get(rec.batch_id)
        new = (rec.stage, max(0, rec.request_count), requests_done(rec))
        if old is not None:
            self._account(*old, sign=-1)
        else:
            self._arrived_done += new[2]  # done before we saw it (a resumed run): not progress of ours
        self._known[rec.batch_id] = new
        self._account(*new, sign=1)

    def _account(self, stage: Stage, requests: int, done: int, sign: int) -> None:
        self.by_stage[stage] += sign
        if stage.ended:
            self.files_done += sign
        if stage in FAILED_STAGES:
            self.files_failed += sign
        self.requests_total += sign * requests
        self.requests_done += sign * done

    def sample(self, now: float) -> None:
        """Record progress at `now` (the 1 Hz tick calls this) for the estimate of time left."""
        self._samples.append((now, self.requests_done - self._arrived_done))
        while self._samples and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()
        minute, progress = int(now // 60), self.requests_done - self._arrived_done
        if self._minutes and self._minutes[-1][0] == minute:
            self._minutes[-1] = (minute, progress)
        else:
            self._minutes.append((minute, progress))
            while len(self._minutes) > MINUTES_KEPT:
                self._minutes.popleft()

    def answered_per_minute(self, now: float, minutes: int) -> list[int]:
        """Requests answered in each of the last `minutes` minutes up to `now`'s, oldest first (0 when idle)."""
        last = int(now // 60)
        first = last - minutes + 1
        counts = [0] * minutes
        before = 0  # progress at the last sample of the minute before
        for minute, progress in self._minutes:
            if minute >= first and minute <= last:
                counts[minute - first] = max(0, progress - before)
            before = progress
        return counts

    def seconds_left(self) -> float | None:
        """Requests left divided by the recent rate; None while there is no rate to go by."""
        if len(self._samples) < 2:
            return None
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        span = t1 - t0
        if span < RATE_MIN_SPAN or d1 <= d0:
            return None
        left = self.requests_total - self.requests_done
        return max(0.0, left / ((d1 - d0) / span))

    def snapshot(self) -> Snapshot:
        """The figures as they stand."""
        by_stage = self.by_stage
        return Snapshot(self.files_total, self.files_done, self.files_failed, self.requests_total,
                        self.requests_done, self.seconds_left(), files_ok=by_stage[Stage.DOWNLOADED],
                        files_rejected=by_stage[Stage.REJECTED], files_skipped=by_stage[Stage.SKIPPED])
