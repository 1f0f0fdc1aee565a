"""When the next batch create may go: concurrent jobs, enqueued-token budget, creates per minute, cool-down.

Pure logic: no I/O, the clock is passed in (unix seconds). The engine tells it what happens (a job started or
ended, a create was sent, accepted or refused with a 429, what other jobs the account holds) and asks `decide`
before each create.

The service's batch 429s rarely name their quota, so a 429 is classified from our own state (`Verdict`): which
limits it can be, given what the server has already accepted for us, and how sure that is. Learned limits are
never a ceiling: a limit that is only guessed, was learned while other jobs held part of the quota, or came from
the checkpoint is probed upward one create at a time (a wrong probe costs one 429).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .backend import JobState, Quota
from .events import AdmissionFigures, Belief, Wait

if TYPE_CHECKING:
    from .config import AdmissionSettings

WINDOW = 60.0  # seconds of the creates-per-minute window (sliding)
_MAX_DOUBLINGS = 30
_RESTORED_LATENESS = 1.0  # a create restored from the checkpoint may have reached the server this much later

# keys of `learned()`, kept in the checkpoint across restarts
LEARNED_TOKEN_BUDGET = "token_budget"
LEARNED_MAX_JOBS = "max_jobs"
LEARNED_CREATES_PER_MINUTE = "creates_per_minute"
LEARNED_ACCEPTED_TOKENS = "accepted_tokens_max"  # the most tokens the server ever held for us at once
LEARNED_ACCEPTED_JOBS = "accepted_jobs_max"  # the most jobs the server ever held for us at once
LEARNED_ACCEPTED_CREATES = "accepted_creates_max"  # the most creates it ever accepted in one window
OTHER_JOBS_PENDING = "other_jobs_pending"  # jobs on the account that are not this run's, as the last poll saw
OTHER_JOBS_RUNNING = "other_jobs_running"
OTHER_JOBS_SEEN_AT = "other_jobs_seen_at"

_LIMIT_KEYS = {Quota.ENQUEUED_TOKENS: LEARNED_TOKEN_BUDGET, Quota.CONCURRENT_JOBS: LEARNED_MAX_JOBS,
               Quota.CREATES_PER_MINUTE: LEARNED_CREATES_PER_MINUTE}
_PRIOR = (Quota.ENQUEUED_TOKENS, Quota.CONCURRENT_JOBS, Quota.CREATES_PER_MINUTE)  # most likely first (protocol 6.1)
_HOLDING = (Quota.ENQUEUED_TOKENS, Quota.CONCURRENT_JOBS)  # quotas that a job ending frees


@dataclass(frozen=True)
class Decision:
    """Whether a create may go now; if not, why (`wait`, figures to render), which quota, and when a retry makes
    sense (None: a job end). An admitted probe carries the wait it goes past."""

    admit: bool
    wait: Wait | None = None
    quota: Quota | None = None
    retry_at: float | None = None


@dataclass(frozen=True)
class Verdict:
    """Which quota a 429 most likely hit, how sure admission is, and why.

    confidence: "named" (the 429 said), "sure" (one explanation fits our state), "guess" (several fit, or one
    that only guessed limits single out; held until a probe or a later answer tells), "none" (nothing of ours
    explains it)."""

    quotas: tuple[Quota, ...]
    confidence: str
    why: str


_SHORT_QUOTA = {  # for the log lines of a 429's verdict
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


def _positive_int(value: object) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
        return int(value)
    return None


def _smallest(*limits: int | None) -> int | None:
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


@dataclass
class _Suspect:
    """A 429 guessed to be a holding quota while the create window could explain it too: if a create is then
    accepted and the next poll finds no job of ours ended, time alone freed the quota, so it was the window."""

    count: int  # creates in the window when it was refused
    saved: dict[Quota, int | None]  # the holding limits before the guess, to put back
    saved_sure: set[Quota]
    window_probed: bool = False
    accepted_at: float | None = None  # a create was accepted since, with no job of ours seen ending


class Admission:
    """Admission control for creates: hard gates from settings, soft gates from what the server taught us."""

    def __init__(self, settings: AdmissionSettings, *, learned: dict | None = None) -> None:
        self.settings = settings
        self._jobs: dict[str, int] = {}  # batch id -> estimated tokens, for every job of ours (maybe) on the server
        self._tokens = 0
        self._last_started: str | None = None  # the job the next `create_sent` is about
        self._unanswered: set[str] = set()  # creates sent whose job is not known to exist
        self._sent: deque[float] = deque()  # send times of creates in the last WINDOW seconds
        self._sent_for: str | None = None  # the batch whose create is the newest entry of `_sent`
        self._sent_at: dict[str, float] = {}  # batch -> its entry in `_sent`, so that k creates in flight at once
        self._in_flight: set[str] = set()  # are each answered by their own batch; creates sent, not yet answered
        self._restored: deque[float] = deque()  # creates before a restart, as late as they may have arrived
        learned = learned or {}
        self._budget = _positive_int(learned.get(LEARNED_TOKEN_BUDGET))
        self._max_jobs = _positive_int(learned.get(LEARNED_MAX_JOBS))
        self._rate = _positive_int(learned.get(LEARNED_CREATES_PER_MINUTE))
        self._drop_below_settings()
        self._accepted_tokens = _positive_int(learned.get(LEARNED_ACCEPTED_TOKENS)) or 0
        self._accepted_jobs = _positive_int(learned.get(LEARNED_ACCEPTED_JOBS)) or 0
        self._accepted_creates = _positive_int(learned.get(LEARNED_ACCEPTED_CREATES)) or 0
        # What we believe of each learned limit: sure ones are probed only after `probe_after_seconds`.
        self._sure: set[Quota] = set()  # loaded values are a starting point: not sure
        self._learned_at: dict[Quota, float] = {}
        self._under_others: dict[Quota, int] = {}  # quota -> other jobs active when it was learned
        self._guessed_with: dict[Quota, frozenset[Quota]] = {}  # a guessed limit -> the quotas its 429 fitted
        self._guessed_window: dict[Quota, int] = {}  # a guessed limit -> creates in the window at its 429
        self._last_refused: dict[Quota, float] = {}  # the last 429 put on each quota
        self._wrong_probes: dict[Quota, int] = {}  # probes refused in a row: the quiet period doubles
        self._offer: Quota | None = None  # the last `decide` admitted a probe of this quota
        self._probe: tuple[Quota, str | None] | None = None  # the probe in flight: its quota and batch
        self._suspect: _Suspect | None = None
        self._unconfirmed: list[tuple[float, frozenset[str], int]] = []  # (accepted at, jobs held, their tokens)
        self._verdict: Verdict | None = None
        self._wait: Wait | None = None  # why the last `decide` said no
        self._others_active = 0
        self._others_states: dict[JobState, int] = {}
        self._others_recent: list[float] = []  # create times of other jobs within the window
        self._others_seen_at: float | None = None
        self._cool_until: float | None = None
        self._cool_set_at: float | None = None  # when the current cool-down began: creates sent before are echoes
        self._held_at_refusal: dict[Quota, frozenset[str]] = {}  # a sure holding limit: our jobs at its 429
        self._cool_quota: Quota | None = None
        self._cool_ends_with_job = False  # the quota frees when a job of ours ends, not when time passes
        self._strikes = 0  # 429s since the last accepted create or job end: the cool-down doubles with each
        self._rate_limited_total = 0

    def _drop_below_settings(self) -> None:
        """A token budget or a rate the user set beats a lower one learned before: the user asked for more (a
        raised tier, say). max_concurrent_jobs is our own ceiling, not a statement of the server's limit."""
        if self.settings.token_budget and self._budget and self._budget < self.settings.token_budget:
            self._budget = None
        if self.settings.creates_per_minute and self._rate and self._rate < self.settings.creates_per_minute:
            self._rate = None

    # ---- what happened -------------------------------------------------------------------------

    def job_started(self, batch_id: str, tokens: int, *, unknown: bool = False) -> None:
        """A job of ours is (or may be) pending or running on the server; also on adopt and restart (`unknown`:
        a create whose answer never came, restored: it holds its slots but proves nothing of the limits)."""
        if unknown and batch_id not in self._jobs:
            self._unanswered.add(batch_id)
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
        self._in_flight.discard(batch_id)
        tokens = self._jobs.pop(batch_id, None)
        if tokens is None:
            return
        self._tokens -= tokens
        if self._last_started == batch_id:
            self._last_started = None
        if batch_id in self._unanswered:
            self._unanswered.discard(batch_id)  # refused or never sent: nothing was freed on the server
            return  # a probe whose create never left is dropped by the next `decide`
        self._strikes = 0
        self._suspect = None  # a job ended: acceptance from now on tells the quotas apart no more
        if self._cool_until is not None and self._cool_ends_with_job:
            self._end_cool_down()  # waiting does not free these quotas, a finished job does

    def create_sent(self, now: float, batch_id: str | None = None) -> None:
        """A create left (for `batch_id`, else for the job started last); counts for creates per minute."""
        self._expire(now)
        self._sent.append(now)
        target = batch_id if batch_id is not None else self._last_started
        self._sent_for = target
        self._last_started = None
        if target is not None:
            self._sent_at[target] = now
            self._in_flight.add(target)
        if target in self._jobs:
            self._unanswered.add(target)
        if self._offer is not None:
            self._probe = (self._offer, target)
            self._offer = None

    def create_withdrawn(self, batch_id: str) -> None:
        """A create reserved with `job_started` and `create_sent` did not leave (its intent could not be saved):
        its slots (job, tokens, the window) are free again."""
        self._drop_sent(batch_id)
        if self._probe is not None and self._probe[1] == batch_id:
            self._probe = None
        self.job_ended(batch_id)

    def create_unknown(self, batch_id: str) -> None:
        """The create's answer was lost: it may exist; it holds its slots, but is no longer in flight."""
        self._in_flight.discard(batch_id)

    def _drop_sent(self, batch_id: str | None) -> float | None:
        """Take a refused or withdrawn create out of the window; returns when it was sent."""
        self._in_flight.discard(batch_id or "")
        sent_at = self._sent_at.pop(batch_id, None) if batch_id is not None else None
        if sent_at is not None:
            if sent_at in self._sent:
                self._sent.remove(sent_at)
            if self._sent_for == batch_id:
                self._sent_for = None
        elif self._sent:  # unknown batch: the newest create (one create at a time)
            self._sent.pop()
            self._sent_for = None
        return sent_at

    def creates_restored(self, times: list[float], now: float) -> None:
        """Creates this run made before a restart (checkpoint intents), so the window is right from the start."""
        self._expire(now)
        recent = sorted(t + _RESTORED_LATENESS for t in times if t + _RESTORED_LATENESS > now - WINDOW)
        # kept apart: they fill the window for the gates, but their times are upper bounds, no proof of a limit
        self._restored = deque(sorted([*self._restored, *(min(t, now) for t in recent)]))

    def others_seen(self, states: dict[JobState, int], recent_creates: list[float], now: float) -> None:
        """What a batches.list walk saw of jobs that are not ours: unended ones by state, and their create times."""
        active = sum(states.values())
        if active < self._others_active:  # jobs that held part of the quota ended: what was learned while they
            for quota in _HOLDING:  # held it (or before we saw them) may be probed now
                if quota in self._under_others or quota not in self._sure:
                    self._last_refused.pop(quota, None)
                    self._wrong_probes.pop(quota, None)
            self._suspect = None
        if states != self._others_states or self._others_seen_at is None:
            self._others_seen_at = now  # when the counts last changed (kept in the checkpoint)
        self._others_active = active
        self._others_states = dict(states)
        self._others_recent = sorted(t for t in recent_creates if t > now - WINDOW)

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
        self._in_flight.discard(batch_id)
        sent_at = self._sent_at.pop(batch_id, None)
        if sent_at is not None and sent_at in self._sent:
            # the server counted this create when it arrived, some time after we sent it: keep it in our window
            # until the answer time plus WINDOW, so that we never think a slot is free before the server does
            self._sent.remove(sent_at)
            self._sent = deque(sorted([*self._sent, max(sent_at, now)]))
            if self._sent_for == batch_id:
                self._sent_for = None
        elif self._sent and self._sent_for == batch_id:
            self._sent[-1] = max(self._sent[-1], now)
            self._sent_for = None
        if self._suspect is not None and self._suspect.accepted_at is None:
            self._suspect.accepted_at = now  # time alone freed it, if no job of ours had ended: the next poll says
        if self._probe is not None and self._probe[1] in (batch_id, None):
            self._wrong_probes.pop(self._probe[0], None)
            self._probe = None
        # what the server surely counted (restored and creates still in flight left out)
        creates = len(self._sent) + len(self._others_recent) - len(self._in_flight)
        self._accepted_creates = max(self._accepted_creates, creates)
        if self._rate is not None and creates > self._rate:
            self._rate = creates
        # a job of ours may have ended on the server before the poll shows it: what we hold now proves a limit
        # only once a later poll finds every one of these jobs still unended
        held = frozenset(b for b in self._jobs if b not in self._unanswered)
        self._unconfirmed.append((now, held, sum(self._jobs[b] for b in held)))

    def poll_seen(self, started_at: float) -> None:
        """A poll that began at `started_at` brought every job of ours up to date: what was accepted before it,
        with none of those jobs ended since, is proof of the limits."""
        keep = []
        for accepted_at, held, tokens in self._unconfirmed:
            if accepted_at > started_at:
                keep.append((accepted_at, held, tokens))
                continue
            # a job of these that has ended since may have ended before the accept: those still unended now
            # were held by the server at that moment for sure
            still = held & self._jobs.keys()
            if still != held:
                tokens = sum(self._jobs[b] for b in still)
            self._accepted_tokens = max(self._accepted_tokens, tokens)
            self._accepted_jobs = max(self._accepted_jobs, len(still))
            if self._budget is not None and tokens > self._budget:
                self._budget = tokens
            if self._max_jobs is not None and len(still) > self._max_jobs:
                self._max_jobs = len(still)
        self._unconfirmed = keep
        suspect = self._suspect
        if suspect is not None and suspect.accepted_at is not None and suspect.accepted_at <= started_at:
            self._window_was_it(started_at)

    def rate_limited(self, quota: Quota, retry_delay: float | None, tokens: int, now: float,
                     batch_id: str | None = None) -> float:
        """A create (of `batch_id`, else the last one sent) got a 429: learn from it and start a cool-down;
        returns its deadline (unix time).

        Call `job_ended` for the refused job first (a job whose create is unanswered is left out anyway). A 429
        for a create sent before the current cool-down began (k creates were in flight) is an echo of the same
        event: it teaches, but does not double the cool-down.
        """
        self._expire(now)
        self._rate_limited_total += 1
        sent_at = self._drop_sent(batch_id)  # the refused create: the server counts accepted creates only
        echo = (self._cool_until is not None and self._cool_set_at is not None and sent_at is not None
                and sent_at <= self._cool_set_at)
        if not echo:
            self._strikes += 1
        verdict = self.classify(quota, tokens)
        self._offer = None
        probe = self._probe
        if probe is not None and (batch_id is None or probe[1] in (batch_id, None)):
            self._probe = None
            self._wrong_probes[probe[0]] = self._wrong_probes.get(probe[0], 0) + 1
        self._verdict = verdict
        self._learn(verdict, now)
        held_jobs = self._held()[1]
        ends_with_job = held_jobs > 0 and any(q in _HOLDING for q in verdict.quotas)
        if retry_delay is not None and retry_delay >= 0:
            delay = retry_delay
        else:
            doublings = min(self._strikes - 1, _MAX_DOUBLINGS)
            delay = min(self.settings.cool_down_seconds * 2**doublings, self.settings.cool_down_max_seconds)
        window_free = self._window_free_at(verdict)
        if window_free is not None and retry_delay is None:
            delay = min(delay, max(0.0, window_free - now))
        if echo and self._cool_until is not None:
            self._cool_until = max(self._cool_until, now + delay)
        else:
            self._cool_until = now + delay
            self._cool_set_at = now
        # a bare 429 shows as the most likely quota (the belief says how sure)
        self._cool_quota = quota if quota is not Quota.UNKNOWN or not verdict.quotas else verdict.quotas[0]
        self._cool_ends_with_job = ends_with_job
        return self._cool_until

    def _window_free_at(self, verdict: Verdict) -> float | None:
        """When the creates window has room again, if the window is all that refused us (named or sure): waiting
        longer than that frees nothing more."""
        if verdict.quotas != (Quota.CREATES_PER_MINUTE,) or verdict.confidence not in ("named", "sure"):
            return None
        window = self._window_times()
        return window[0] + WINDOW if window else None

    # ---- the 429's meaning ---------------------------------------------------------------------

    def classify(self, quota: Quota, tokens: int) -> Verdict:
        """Which quota a 429 on a create of `tokens` most likely hit, from what we hold now (refused job left out)."""
        held_tokens, held_jobs = self._held()
        creates = self._answered_window_count()
        state = (f"{held_jobs} jobs, {format_tokens(held_tokens)} tokens held, "
                 f"{creates} creates in the last minute")
        if quota is not Quota.UNKNOWN:
            return Verdict((quota,), "named", f"the 429 names it ({state})")
        others = self._others_active > 0
        probed = self._probe[0] if self._probe is not None else None
        window_probe = self._suspect is not None and self._suspect.window_probed and probed in _HOLDING
        plausible: dict[Quota, bool] = {
            # the server has held more for us before, so this is not the limit (unless others' jobs take a share)
            Quota.ENQUEUED_TOKENS: held_jobs > 0 and (held_tokens + tokens > self._accepted_tokens or others),
            Quota.CONCURRENT_JOBS: held_jobs > 0 and (held_jobs >= self._accepted_jobs or others),
            Quota.CREATES_PER_MINUTE: creates > 0 and creates >= self._accepted_creates and not window_probe,
        }
        limits = {Quota.ENQUEUED_TOKENS: (self.token_budget, held_tokens + tokens),
                  Quota.CONCURRENT_JOBS: (self.max_jobs, held_jobs + 1),
                  Quota.CREATES_PER_MINUTE: (self.creates_per_minute, creates + 1)}
        binding = [q for q in _PRIOR if plausible[q] and limits[q][0] is not None and limits[q][1] > limits[q][0]]
        known = tuple(q for q in binding
                      if q in self._sure or limits[q][1] > (self._set_limit_of(q) or limits[q][1]))
        if known:  # a limit we know for sure (or the user told us) was reached: that is what fired
            return Verdict(known, "sure", f"{' and '.join(_SHORT_QUOTA[q] for q in known)} reached ({state})")
        for q in _PRIOR:  # a sure limit far from binding did not fire
            if q in self._sure and q not in binding and not (others and q in _HOLDING):
                plausible[q] = False
        ruled_out_by_guess = False
        if plausible[Quota.CREATES_PER_MINUTE] and not others:
            for q in _HOLDING:  # nor did a guessed one we are below, when a full window explains the 429
                if self._limit(q) is not None and q not in binding:
                    ruled_out_by_guess = ruled_out_by_guess or (plausible[q] and q not in self._sure)
                    plausible[q] = False
        order = ([probed] if probed is not None else []) + binding + list(_PRIOR)
        candidates = tuple(dict.fromkeys(q for q in order if plausible[q]))
        if not candidates:
            why = "other jobs on the account hold the quota" if others else "nothing of ours explains it"
            return Verdict((), "none", f"{why} ({state})")
        if len(candidates) == 1 and ruled_out_by_guess:  # a guess (maybe wrong) ruled the others out: not sure
            return Verdict(candidates, "guess", f"{_SHORT_QUOTA[candidates[0]]}, as guessed limits rule out the "
                                                f"rest ({state})")
        if len(candidates) == 1:
            return Verdict(candidates, "sure", f"only {_SHORT_QUOTA[candidates[0]]} fits ({state})")
        names = " or ".join(_SHORT_QUOTA[q] for q in candidates)
        return Verdict(candidates, "guess", f"{names} ({state})")

    def _learn(self, verdict: Verdict, now: float) -> None:
        held_tokens, held_jobs = self._held()
        creates = self._answered_window_count()
        sure = verdict.confidence in ("named", "sure") and self._others_active == 0
        quotas = verdict.quotas
        if verdict.confidence == "guess":
            # hold every holding quota that fits (a probe or a later answer tells them apart); the window is
            # only suspected, since time alone frees it and shows it (`_window_was_it`)
            held = tuple(q for q in quotas if q in _HOLDING)
            if Quota.CREATES_PER_MINUTE in quotas and held:
                self._suspect = _Suspect(creates, {q: self._limit(q) for q in _HOLDING}, set(self._sure))
            quotas = held or quotas
        for quota in quotas:
            if quota is Quota.ENQUEUED_TOKENS:
                value = max(held_tokens, self._accepted_tokens)
            elif quota is Quota.CONCURRENT_JOBS:
                value = held_jobs
            elif quota is Quota.CREATES_PER_MINUTE:
                value = creates  # never 1 per minute from a window we cannot see: an empty one teaches nothing
            else:
                continue
            if value <= 0:
                continue
            self._set_limit(quota, value)
            self._learned_at[quota] = now
            self._last_refused[quota] = now
            if quota in _HOLDING:
                self._held_at_refusal[quota] = frozenset(b for b in self._jobs if b not in self._unanswered)
            if sure:
                self._sure.add(quota)
                self._guessed_with.pop(quota, None)
                self._drop_guesses_explained_by(quota)
            else:
                self._sure.discard(quota)
                self._guessed_with[quota] = frozenset(verdict.quotas)
                self._guessed_window[quota] = creates
            if self._others_active:
                self._under_others[quota] = self._others_active
            else:
                self._under_others.pop(quota, None)

    def _window_was_it(self, now: float) -> None:
        """Accepted with no job of ours ended since a guessed 429: time freed the quota, so it was the window."""
        suspect, self._suspect = self._suspect, None
        assert suspect is not None
        for quota, value in suspect.saved.items():
            self._set_limit(quota, value)
            if quota in suspect.saved_sure:
                self._sure.add(quota)
            else:
                self._sure.discard(quota)
        if suspect.count > 0:
            self._rate = suspect.count
            self._learned_at[Quota.CREATES_PER_MINUTE] = now
            if self._others_active == 0:
                self._sure.add(Quota.CREATES_PER_MINUTE)
                self._drop_guesses_explained_by(Quota.CREATES_PER_MINUTE)
        self._verdict = Verdict((Quota.CREATES_PER_MINUTE,), "sure",
                                f"time alone freed it: creates/min {suspect.count}")

    def _drop_guesses_explained_by(self, quota: Quota) -> None:
        """`quota` is now known to be what fired: guesses made from 429s that it could explain go."""
        for other, fitted in list(self._guessed_with.items()):
            if (quota is Quota.CREATES_PER_MINUTE and self._rate is not None
                    and self._guessed_window.get(other, 0) < self._rate):
                continue  # the window was not full at that 429: it was not the window
            if other is not quota and quota in fitted and other not in self._sure:
                self._set_limit(other, None)
                del self._guessed_with[other]

    def _set_limit_of(self, quota: Quota) -> int | None:
        settings = self.settings
        value = {Quota.ENQUEUED_TOKENS: settings.token_budget, Quota.CONCURRENT_JOBS: settings.max_concurrent_jobs,
                 Quota.CREATES_PER_MINUTE: settings.creates_per_minute}[quota]
        return value if value and value > 0 else None

    def _limit(self, quota: Quota) -> int | None:
        return {Quota.ENQUEUED_TOKENS: self._budget, Quota.CONCURRENT_JOBS: self._max_jobs,
                Quota.CREATES_PER_MINUTE: self._rate}[quota]

    def _set_limit(self, quota: Quota, value: int | None) -> None:
        if quota is Quota.ENQUEUED_TOKENS:
            self._budget = value
        elif quota is Quota.CONCURRENT_JOBS:
            self._max_jobs = value
        elif quota is Quota.CREATES_PER_MINUTE:
            self._rate = value

    # ---- the question --------------------------------------------------------------------------

    def room_for_more(self, tokens: int) -> bool:
        """After `decide` admitted a create, may one more of `tokens` go in the same group? Only where the room
        of a holding quota is known: it has a limit (set or learned, which `decide` checks) or the group stays
        within what the server has held for us before. Unknown ground is tried one create at a time (one 429).
        The creates window is not held back so: it is only learned by meeting it (at most one group's 429s)."""
        if self._max_jobs is None and len(self._jobs) + 1 > self._accepted_jobs:
            return False
        return self.token_budget is not None or self._tokens + tokens <= self._accepted_tokens

    def decide(self, tokens: int, now: float) -> Decision:
        """May a create of a job of `tokens` estimated tokens go now? A probe of a learned limit is admitted
        as `Decision(True, "probing ...", quota)`: one create at a time past exactly one learned gate."""
        self._expire(now)
        self._offer = None
        if self._probe is not None and self._probe[1] not in self._jobs:
            self._probe = None  # its create never reached the server
        if self._cool_until is not None:
            return self._waits(Decision(False, Wait("cooling", self._cool_quota, until=self._cool_until),
                                        self._cool_quota, self._cool_until))
        blocks: list[tuple[Decision, bool]] = []  # (why not, whether a learned limit that a probe may test)
        jobs = len(self._jobs)
        if jobs:  # with nothing of ours to wait for, let the server judge (a job above the budget never starves)
            setting = self.settings.max_concurrent_jobs if (self.settings.max_concurrent_jobs or 0) > 0 else None
            for limit, soft in ((setting, False), (self._max_jobs, True)):
                if limit is not None and jobs >= limit:
                    wait = self._limit_wait(Quota.CONCURRENT_JOBS, jobs, self.max_jobs or limit, soft)
                    blocks.append((Decision(False, wait, Quota.CONCURRENT_JOBS), soft))
                    break
            for limit, soft in ((self.settings.token_budget, False), (self._budget, True)):
                if limit is not None and self._tokens + tokens > limit:
                    wait = replace(self._limit_wait(Quota.ENQUEUED_TOKENS, self._tokens, self.token_budget or limit,
                                                    soft), adding=tokens)
                    blocks.append((Decision(False, wait, Quota.ENQUEUED_TOKENS), soft))
                    break
        count = self._window_count()
        for limit, soft in ((self.settings.creates_per_minute, False), (self._rate, True)):
            if limit is not None and count >= limit:
                limit_now = self.creates_per_minute or limit
                ours = self._window_times()
                retry_at = ours[count - limit_now] + WINDOW if count >= limit_now else None
                wait = replace(self._limit_wait(Quota.CREATES_PER_MINUTE, count, limit_now, soft), until=retry_at)
                blocks.append((Decision(False, wait, Quota.CREATES_PER_MINUTE, retry_at), soft))
                break
        if not blocks:
            return self._waits(ADMIT)
        hard = [d for d, soft in blocks if not soft]
        if hard:
            return self._waits(hard[0])
        if self._probe is None:
            # every gate in the way is learned: past all of them, one create at a time (if they were learned
            # together from one 429 they are tried together; a wrong probe costs one 429 and doubles the quiet
            # period of them all, so a pair that alike jobs cannot tell apart is still tried as the tier may rise)
            doublings = max(self._wrong_probes.get(d.quota, 0) for d, _ in blocks if d.quota)
            doublings += len(blocks) > 1  # a pair is less likely wrong than a lone guess: it waits twice as long
            ready_at = max(self._probe_ready_at(d.quota, doublings) for d, _ in blocks)
            suspect = self._suspect
            window_suspected = (suspect is not None and not suspect.window_probed
                                and all(d.quota in _HOLDING for d, _ in blocks))
            if window_suspected and suspect is not None:
                if count < suspect.count:
                    suspect.window_probed = True  # was it the window? one create tells, at most one 429
                    return self._offer_probe(blocks[0][0])
                if len(blocks) > 1:  # a pair that alike jobs cannot tell apart: the window's create goes first
                    window = self._window_times()
                    ready_at = max(ready_at, window[count - suspect.count] + WINDOW)
            if now >= ready_at:
                return self._offer_probe(blocks[0][0])
            blocked = blocks[0][0]
            wait = blocked.wait
            if blocked.quota not in self._sure and wait is not None:
                wait = replace(wait, probe_at=ready_at)
            retry_at = ready_at if blocked.retry_at is None or ready_at < blocked.retry_at else blocked.retry_at
            blocks[0] = (Decision(False, wait, blocked.quota, retry_at), True)
            if window_suspected and suspect is not None:
                window = self._window_times()
                room_at = window[count - suspect.count] + WINDOW  # when the window has room again
                blocked = blocks[0][0]
                if blocked.retry_at is None or room_at < blocked.retry_at:
                    return self._waits(Decision(False, blocked.wait, blocked.quota, room_at))
        return self._waits(blocks[0][0])

    def _waits(self, decision: Decision) -> Decision:
        """Remember the wait of the last decision (the countdown and the progress line show it)."""
        self._wait = None if decision.admit else decision.wait
        return decision

    def _limit_wait(self, quota: Quota, used: int, limit: int, learned: bool) -> Wait:
        """A wait on a limit: set by the user, or learned (how sure, when)."""
        if not learned:
            return Wait("limit", quota, used=used, limit=limit, confidence="set")
        how = "sure" if quota in self._sure else "held by others" if quota in self._under_others else "guess"
        return Wait("limit", quota, used=used, limit=limit, confidence=how, learned_at=self._learned_at.get(quota))

    def _offer_probe(self, blocked: Decision) -> Decision:
        assert blocked.quota is not None and blocked.wait is not None
        self._offer = blocked.quota
        self._wait = None
        return Decision(True, replace(blocked.wait, kind="probing", probe_at=None), blocked.quota)

    def _probe_ready_at(self, quota: Quota | None, doublings: int = 0) -> float:
        """When a learned limit may be tried one create higher: once its quiet period passed, short while it is
        a guess (doubling per wrong probe), after the quota's own period when sure (doubling too),
        `probe_after_seconds` when learned under other jobs that have not ended yet."""
        assert quota is not None
        last = self._last_refused.get(quota)
        if last is None:
            return 0.0
        if quota in self._under_others:
            quiet = self.settings.probe_after_seconds
        elif quota in self._sure:
            # a sure limit is a snapshot of a tier that can rise: once the quota's own period has passed (the
            # window; for a holding quota, every job it held at its 429 ended), one create higher, with the
            # usual doubling after a wrong probe; `probe_after_seconds` at the latest
            period = WINDOW if quota is Quota.CREATES_PER_MINUTE else self.settings.cool_down_seconds
            held = self._held_at_refusal.get(quota)
            if quota in _HOLDING and (held is None or held & self._jobs.keys()):
                period = self.settings.probe_after_seconds
            doublings = min(max(doublings, self._wrong_probes.get(quota, 0)), _MAX_DOUBLINGS)
            quiet = min(period * 2**doublings, self.settings.probe_after_seconds)
        else:
            doublings = min(max(doublings, self._wrong_probes.get(quota, 0)), _MAX_DOUBLINGS)
            quiet = min(self.settings.cool_down_seconds * 2**doublings, self.settings.probe_after_seconds)
        return last + quiet

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

    @property
    def last_verdict(self) -> Verdict | None:
        """How the last 429 was read."""
        return self._verdict

    @property
    def other_jobs(self) -> dict[JobState, int]:
        """Unended jobs on the account that are not ours, by state, as the last poll saw them."""
        return dict(self._others_states)

    def is_sure(self, quota: Quota) -> bool:
        """Whether a learned limit is held as sure (else a guess, probed upward)."""
        return quota in self._sure

    def beliefs(self) -> tuple[Belief, ...]:
        """What admission believes of each learned limit and why (rendered by `wait_text.belief_text`)."""
        out = []
        for quota in _PRIOR:
            value = self._limit(quota)
            if value is None:
                continue
            how = ("sure" if quota in self._sure else "held by others" if quota in self._under_others
                   else "guess")
            probing = self._probe is not None and self._probe[0] is quota
            out.append(Belief(quota, value, how, self._learned_at.get(quota), probing))
        return tuple(out)

    def figures(self, now: float) -> AdmissionFigures:
        """Everything the countdown pane shows."""
        self._expire(now)
        return AdmissionFigures(
            jobs_in_flight=len(self._jobs),
            max_jobs=self.max_jobs or 0,
            tokens_enqueued=self._tokens,
            token_budget=self.token_budget,
            creates_last_minute=len(self._sent) + len(self._restored),
            creates_per_minute=self.creates_per_minute,
            cool_down_until=self._cool_until,
            cool_down_quota=self.cool_down_quota,
            rate_limited_total=self._rate_limited_total,
            other_jobs=self._others_active,
            beliefs=self.beliefs(),
            wait=self._wait,
        )

    def learned(self) -> dict[str, float | int]:
        """What the 429s and accepted creates taught us, and the other jobs last seen, to keep in the checkpoint."""
        out: dict[str, float | int] = {}
        for key, value in ((LEARNED_TOKEN_BUDGET, self._budget), (LEARNED_MAX_JOBS, self._max_jobs),
                           (LEARNED_CREATES_PER_MINUTE, self._rate),
                           (LEARNED_ACCEPTED_TOKENS, self._accepted_tokens or None),
                           (LEARNED_ACCEPTED_JOBS, self._accepted_jobs or None),
                           (LEARNED_ACCEPTED_CREATES, self._accepted_creates or None)):
            if value is not None:
                out[key] = value
        if self._others_seen_at is not None:
            out[OTHER_JOBS_PENDING] = self._others_states.get(JobState.PENDING, 0)
            out[OTHER_JOBS_RUNNING] = self._others_states.get(JobState.RUNNING, 0)
            out[OTHER_JOBS_SEEN_AT] = round(self._others_seen_at)
        return out

    # ---- internals -----------------------------------------------------------------------------

    def _held(self) -> tuple[int, int]:
        """Tokens and jobs the server holds for us for sure (creates still unanswered left out)."""
        tokens = self._tokens - sum(self._jobs[b] for b in self._unanswered if b in self._jobs)
        return tokens, len(self._jobs) - sum(1 for b in self._unanswered if b in self._jobs)

    def _window_count(self) -> int:
        """Creates the server counts in its window: ours and, as the last poll saw them, other jobs'."""
        return len(self._sent) + len(self._restored) + len(self._others_recent)

    def _answered_window_count(self) -> int:
        """The window less the creates still in flight (they may yet be refused): what a 429 can be read from."""
        return max(0, self._window_count() - len(self._in_flight))

    def _window_times(self) -> list[float]:
        """The creates in the window, oldest first: ours, ours from before a restart, and other jobs'."""
        return sorted([*self._sent, *self._restored, *self._others_recent])

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - WINDOW:
            self._sent.popleft()
            for batch_id in [b for b, t in self._sent_at.items() if t <= now - WINDOW and b not in self._in_flight]:
                del self._sent_at[batch_id]
        while self._restored and self._restored[0] <= now - WINDOW:
            self._restored.popleft()
        while self._others_recent and self._others_recent[0] <= now - WINDOW:
            self._others_recent.pop(0)
        if self._cool_until is not None and now >= self._cool_until:
            self._end_cool_down()

    def _end_cool_down(self) -> None:
        self._cool_until = None
        self._cool_quota = None
        self._cool_ends_with_job = False
