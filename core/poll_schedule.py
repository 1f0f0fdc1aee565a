"""When to poll next: at the poll interval, or sooner when a job in flight is due to end.

The engine learns how long its jobs take (the server's createTime to endTime of each job that succeeded, a
rolling median) and looks again just after the soonest predicted end. A job still running after its predicted
end is looked at again after a quarter of its age, so a slow job costs only a few early polls; early polls are
at least interval/20 apart. The time from a job's end to its download (and to the next create it makes room
for) drops from about half an interval to about interval/20, for a handful of extra list pages.
"""

from __future__ import annotations

import statistics
from collections import deque

from .backend import JobState, RemoteJob

DURATIONS_KEPT = 64
EARLY_POLL_SPACING = 1 / 20


class PollSchedule:
    """Predicted ends of our jobs in flight, by batch id; `delay` says how long to sleep before the next poll."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._durations: deque[float] = deque(maxlen=DURATIONS_KEPT)  # create-to-end seconds (server clock)
        self._seen_at: dict[str, float] = {}  # batch id -> when (our clock) we first knew its job existed
        self._check_at: dict[str, float] = {}  # batch id -> when (our clock) to look at its job next

    def observe(self, batch_id: str, job: RemoteJob, now: float) -> None:
        """What a poll (or a create) said about one job."""
        if job.ended:
            self._seen_at.pop(batch_id, None)
            self._check_at.pop(batch_id, None)
            if job.state is JobState.SUCCEEDED and job.create_time is not None and job.end_time is not None:
                self._durations.append(max(0.0, job.end_time - job.create_time))
        else:
            self._seen_at.setdefault(batch_id, now)

    def forget(self, batch_id: str) -> None:
        """The batch's job left flight without an ended poll (cancelled, requeued): a next job starts afresh."""
        self._seen_at.pop(batch_id, None)
        self._check_at.pop(batch_id, None)

    def delay(self, in_flight: list[str], now: float) -> float:
        """Seconds until the next poll, for the batch ids whose jobs are in flight."""
        interval = self.interval
        if not self._durations:  # no job of ours has ended yet: look a little more often until one has
            return interval / 4
        margin = interval / 100
        typical = statistics.median(self._durations)
        soonest: float | None = None
        for batch_id in in_flight:
            seen = self._seen_at.get(batch_id)
            if seen is None:
                continue
            check = self._check_at.get(batch_id, seen + typical + margin)
            if check <= now:  # looked at after its predicted end and still running: back off with its age
                check = now + max(margin, (now - seen) / 4)
            self._check_at[batch_id] = check
            soonest = check if soonest is None else min(soonest, check)
        if soonest is None:
            return interval
        return min(interval, max(interval * EARLY_POLL_SPACING, soonest - now))
