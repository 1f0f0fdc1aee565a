"""When the next batch create may go: concurrent jobs, enqueued-token budget, creates per minute, cool-down.

Pure logic: no I/O, the clock is passed in (unix seconds). The engine tells it what happens (a job started or
ended, a create was sent, accepted or refused with a 429) and asks `decide` before each create.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .events import AdmissionFigures, Quota

if TYPE_CHECKING:
    from .config import AdmissionSettings

WINDOW = 60.0  # seconds of the creates-per-minute window (sliding)
_MAX_DOUBLINGS = 30

# keys of `learned()`, kept in the checkpoint across restarts
LEARNED_TOKEN_BUDGET = "token_budget"
LEARNED_MAX_JOBS = "max_jobs"
LEARNED_CREATES_PER_MINUTE = "creates_per_minute"
LEARNED_ACCEPTED_TOKENS = "accepted_tokens_max"  # the most tokens the server ever held for us at once


@dataclass(frozen=True)
class Decision:
    """Whether a create may go now; if not, why, which quota, and when a retry makes sense (None: a job end)."""

    admit: bool
    reason: str | None = None
    quota: Quota | None = None
    retry_at: float | None = None


_SHORT_QUOTA = {  # fits the uploads pane at 80 columns
    Quota.ENQUEUED_TOKENS: "tokens",
    Quota.CONCURRENT_JOBS: "job cap",
    Quota.CREATES_PER_MINUTE: "creates/min",
    Quota.UNKNOWN: "429",
    None: "429",
}
ADMIT = Decision(True)


def format_tokens(tokens: int) -> str:
    """950, 1.5k, 150k, 2.9M."""
    if tokens >= 1_000_000:
        return f"{tokens / 1_000_000:.1f}M"
    if tokens >= 10_000:
        return f"{tokens / 1000:.0f}k"
    if tokens >= 1000:
        return f"{tokens / 1000:.1f}k"
    return str(tokens)


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def _positive_int(value: object) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
        return int(value)
    return None


def _smallest(*limits: int | None) -> int | None:
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


class Admission:
    """Admission control for creates: hard gates from settings and from what the server's 429s taught us."""

    def __init__(self, settings: AdmissionSettings, *, learned: dict | None = None) -> None:
        self.settings = settings
        self._jobs: dict[str, int] = {}  # batch id -> estimated tokens, for every job of ours (maybe) on the server
        self._tokens = 0
        self._last_started: str | None = None  # the job the next `create_sent` is about
        self._unanswered: set[str] = set()  # creates sent whose job is not known to exist
        self._sent: deque[float] = deque()  # send times of creates in the last WINDOW seconds
        self._sent_for: str | None = None  # the batch whose create is the newest entry of `_sent`
        learned = learned or {}
        self._budget = _positive_int(learned.get(LEARNED_TOKEN_BUDGET))
        self._max_jobs = _positive_int(learned.get(LEARNED_MAX_JOBS))
        self._rate = _positive_int(learned.get(LEARNED_CREATES_PER_MINUTE))
        self._accepted_tokens = _positive_int(learned.get(LEARNED_ACCEPTED_TOKENS)) or 0
        self._cool_until: float | None = None
        self._cool_quota: Quota | None = None
        self._cool_ends_with_job = False  # the quota frees when a job of ours ends, not when time passes
        self._strikes = 0  # 429s since the last accepted create or job end: the cool-down doubles with each
        self._rate_limited_total = 0

    # ---- what happened -------------------------------------------------------------------------

    def job_started(self, batch_id: str, tokens: int) -> None:
        """A job of ours is (or may be) pending or running on the server; also on adopt and restart."""
        if batch_id in self._jobs:  # adopted after an ambiguous create: the job exists
            self._unanswered.discard(batch_id)
            self._tokens += tokens - self._jobs[batch_id]
            self._jobs[batch_id] = tokens
            return
        self._jobs[batch_id] = tokens
        self._tokens += tokens
        self._last_started = batch_id

    def job_ended(self, batch_id: str) -> None:
        """The job ended, or its create was refused or never left (idempotent)."""
        tokens = self._jobs.pop(batch_id, None)
        if tokens is None:
            return
        self._tokens -= tokens
        if self._last_started == batch_id:
            self._last_started = None
        if batch_id in self._unanswered:
            self._unanswered.discard(batch_id)  # refused or never sent: nothing was freed on the server
            return
        self._strikes = 0
        if self._cool_until is not None and self._cool_ends_with_job:
            self._end_cool_down()  # waiting does not free these quotas, a finished job does

    def create_sent(self, now: float, batch_id: str | None = None) -> None:
        """A create left (for `batch_id`, else for the job started last); counts for creates per minute."""
        self._expire(now)
        self._sent.append(now)
        target = batch_id if batch_id is not None else self._last_started
        self._sent_for = target
        self._last_started = None
        if target in self._jobs:
            self._unanswered.add(target)

    def create_accepted(self, batch_id: str, tokens: int, now: float) -> None:
        """The server created the job; what it now holds for us proves the limits are at least that high."""
        self._expire(now)
        if batch_id not in self._jobs:
            self._jobs[batch_id] = tokens
            self._tokens += tokens
        self._unanswered.discard(batch_id)
        if self._last_started == batch_id:
            self._last_started = None
        self._strikes = 0
        if self._sent and self._sent_for == batch_id:
            # the server counted this create when it arrived, some time after we sent it: keep it in our window
            # until the answer time plus WINDOW, so that we never think a slot is free before the server does
            self._sent[-1] = max(self._sent[-1], now)
            self._sent_for = None
        held_tokens, held_jobs = self._held()
        self._accepted_tokens = max(self._accepted_tokens, held_tokens)
        if self._budget is not None and held_tokens > self._budget:
            self._budget = held_tokens
        if self._max_jobs is not None and held_jobs > self._max_jobs:
            self._max_jobs = held_jobs
        if self._rate is not None and len(self._sent) > self._rate:
            self._rate = len(self._sent)

    def rate_limited(self, quota: Quota, retry_delay: float | None, tokens: int, now: float) -> float:
        """A create got a 429: learn from it and start a cool-down; returns its deadline (unix time).

        Call `job_ended` for the refused job first (a job whose create is unanswered is left out anyway).
        """
        self._expire(now)
        self._rate_limited_total += 1
        self._strikes += 1
        if self._sent:
            self._sent.pop()  # the refused create: the server counts accepted creates only
            self._sent_for = None
        held_tokens, held_jobs = self._held()
        ends_with_job = False
        if quota is Quota.ENQUEUED_TOKENS or (quota is Quota.UNKNOWN and held_jobs > 0):
            learned = max(held_tokens, self._accepted_tokens)
            if learned > 0:
                self._budget = learned
            ends_with_job = held_jobs > 0
        elif quota is Quota.CONCURRENT_JOBS:
            if held_jobs > 0:
                self._max_jobs = held_jobs
            ends_with_job = held_jobs > 0
        elif quota is Quota.CREATES_PER_MINUTE:
            self._rate = max(1, len(self._sent))
        if retry_delay is not None and retry_delay >= 0:
            delay = retry_delay
        else:
            doublings = min(self._strikes - 1, _MAX_DOUBLINGS)
            delay = min(self.settings.cool_down_seconds * 2**doublings, self.settings.cool_down_max_seconds)
        self._cool_until = now + delay
        self._cool_quota = quota
        self._cool_ends_with_job = ends_with_job
        return self._cool_until

    # ---- the question --------------------------------------------------------------------------

    def decide(self, tokens: int, now: float) -> Decision:
        """May a create of a job of `tokens` estimated tokens go now?"""
        self._expire(now)
        if self._cool_until is not None:
            return Decision(False, f"cooling ({_SHORT_QUOTA[self._cool_quota]}) to {_clock(self._cool_until)}",
                            self._cool_quota, self._cool_until)
        jobs = len(self._jobs)
        if jobs == 0:  # nothing of ours to wait for: let the server judge (a job above the budget never starves)
            return self._decide_rate()
        cap = self.max_jobs
        if cap is not None and jobs >= cap:
            return Decision(False, f"concurrent cap {jobs}/{cap}", Quota.CONCURRENT_JOBS)
        budget = self.token_budget
        if budget is not None and self._tokens + tokens > budget:
            return Decision(
                False,
                f"token budget {format_tokens(self._tokens)}/{format_tokens(budget)} + {format_tokens(tokens)}",
                Quota.ENQUEUED_TOKENS,
            )
        return self._decide_rate()

    def _decide_rate(self) -> Decision:
        limit = self.creates_per_minute
        count = len(self._sent)
        if limit is not None and count >= limit:
            # the window admits again once enough of its oldest creates have left it
            retry_at = self._sent[count - limit] + WINDOW
            return Decision(False, f"creates/min {count}/{limit}", Quota.CREATES_PER_MINUTE, retry_at)
        return ADMIT

    # ---- views ---------------------------------------------------------------------------------

    @property
    def max_jobs(self) -> int | None:
        """The concurrent-jobs cap in force: the setting, or less if a 429 taught us so."""
        setting = self.settings.max_concurrent_jobs
        return _smallest(setting if setting and setting > 0 else None, self._max_jobs)

    @property
    def token_budget(self) -> int | None:
        """The enqueued-token budget in force (set or learned, the smaller); None while unknown."""
        return _smallest(self.settings.token_budget, self._budget)

    @property
    def creates_per_minute(self) -> int | None:
        """The creates-per-minute limit in force (set or learned, the smaller); None while unknown."""
        return _smallest(self.settings.creates_per_minute, self._rate)

    @property
    def jobs_in_flight(self) -> int:
        """Jobs of ours pending or running on the server (creates in flight included)."""
        return len(self._jobs)

    @property
    def tokens_in_flight(self) -> int:
        """Their estimated tokens."""
        return self._tokens

    @property
    def cool_down_until(self) -> float | None:
        """The deadline of the current cool-down; None when there is none (or it was seen to pass)."""
        return self._cool_until

    @property
    def cool_down_quota(self) -> Quota | None:
        """The quota whose 429 started the current cool-down."""
        return self._cool_quota if self._cool_until is not None else None

    def figures(self, now: float) -> AdmissionFigures:
        """Everything the countdown pane shows."""
        self._expire(now)
        return AdmissionFigures(
            jobs_in_flight=len(self._jobs),
            max_jobs=self.max_jobs or 0,
            tokens_enqueued=self._tokens,
            token_budget=self.token_budget,
            creates_last_minute=len(self._sent),
            creates_per_minute=self.creates_per_minute,
            cool_down_until=self._cool_until,
            cool_down_quota=self.cool_down_quota,
            rate_limited_total=self._rate_limited_total,
        )

    def learned(self) -> dict[str, float | int]:
        """What the 429s and accepted creates taught us, to keep in the checkpoint."""
        out: dict[str, float | int] = {}
        for key, value in ((LEARNED_TOKEN_BUDGET, self._budget), (LEARNED_MAX_JOBS, self._max_jobs),
                           (LEARNED_CREATES_PER_MINUTE, self._rate),
                           (LEARNED_ACCEPTED_TOKENS, self._accepted_tokens or None)):
            if value is not None:
                out[key] = value
        return out

    # ---- internals -----------------------------------------------------------------------------

    def _held(self) -> tuple[int, int]:
        """Tokens and jobs the server holds for us for sure (creates still unanswered left out)."""
        tokens = self._tokens - sum(self._jobs[b] for b in self._unanswered if b in self._jobs)
        return tokens, len(self._jobs) - sum(1 for b in self._unanswered if b in self._jobs)

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - WINDOW:
            self._sent.popleft()
        if self._cool_until is not None and now >= self._cool_until:
            self._end_cool_down()

    def _end_cool_down(self) -> None:
        self._cool_until = None
        self._cool_quota = None
        self._cool_ends_with_job = False
