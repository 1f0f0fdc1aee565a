"""Admission control: each gate, learning from each kind of 429, cool-downs, and the budget invariant."""

from __future__ import annotations

import time

import pytest
from gembatch.core.admission import ADMIT, Admission, format_tokens
from gembatch.core.backend import JobState
from gembatch.core.config import AdmissionSettings
from gembatch.core.events import Quota
from gembatch.core.wait_text import wait_text
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = 1_700_000_000.0
M = 1_000_000


def make(**kwargs: object) -> Admission:
    return Admission(AdmissionSettings(**kwargs))  # type: ignore[arg-type]


def run_job(adm: Admission, batch_id: str, tokens: int, now: float) -> None:
    """A create that the engine sends and the server accepts, in the engine's order of calls."""
    adm.job_started(batch_id, tokens)
    adm.create_sent(now)
    adm.create_accepted(batch_id, tokens, now)
    adm.poll_seen(now)  # the next poll finds the jobs we hold unended


def refuse(adm: Admission, batch_id: str, tokens: int, now: float, quota: Quota,
           retry_delay: float | None = None) -> float:
    """A create that the server refuses with a 429, in the engine's order of calls."""
    adm.job_started(batch_id, tokens)
    adm.create_sent(now)
    adm.job_ended(batch_id)
    return adm.rate_limited(quota, retry_delay, tokens, now)


def said(decision: object) -> str | None:
    """What a decision's wait says, rendered as the screen shows it."""
    wait = getattr(decision, "wait", None)
    return wait_text(wait) if wait is not None else None


def clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(at)) + " UTC"


# ---- the gates -------------------------------------------------------------------------------------


def test_admits_when_nothing_limits() -> None:
    adm = make()
    assert adm.decide(10 * M, T0) == ADMIT


def test_concurrent_cap_from_settings() -> None:
    adm = make(max_concurrent_jobs=2)
    run_job(adm, "a", 10, T0)
    run_job(adm, "b", 10, T0)
    decision = adm.decide(10, T0)
    assert not decision.admit
    assert said(decision) == "concurrent cap 2/2"
    assert decision.quota is Quota.CONCURRENT_JOBS
    assert decision.retry_at is None  # a job must end
    adm.job_ended("a")
    assert adm.decide(10, T0).admit


def test_token_budget_from_settings_is_a_hard_gate() -> None:
    adm = make(token_budget=3 * M)
    run_job(adm, "a", 2_900_000, T0)
    decision = adm.decide(150_000, T0)
    assert not decision.admit
    assert said(decision) == "token budget 2.9M/3.0M + 150k"
    assert decision.quota is Quota.ENQUEUED_TOKENS
    assert decision.retry_at is None
    assert adm.decide(100_000, T0).admit  # exactly fills the budget


def test_job_bigger_than_the_budget_is_admitted_when_nothing_is_in_flight() -> None:
    adm = make(token_budget=1000, max_concurrent_jobs=1)
    assert adm.decide(5000, T0).admit
    run_job(adm, "a", 5000, T0)
    assert not adm.decide(5000, T0).admit
    adm.job_ended("a")
    assert adm.decide(5000, T0).admit


def test_creates_per_minute_sliding_window() -> None:
    adm = make(creates_per_minute=3)
    for i, at in enumerate((T0, T0 + 10, T0 + 20)):
        run_job(adm, f"j{i}", 1, at)
    decision = adm.decide(1, T0 + 30)
    assert not decision.admit
    assert said(decision) == "creates/min 3/3"
    assert decision.quota is Quota.CREATES_PER_MINUTE
    assert decision.retry_at == T0 + 60  # the oldest create leaves the window then
    assert not adm.decide(1, T0 + 59.9).admit
    assert adm.decide(1, T0 + 60).admit


def test_cool_down_blocks_everything_until_its_deadline() -> None:
    adm = make()
    until = refuse(adm, "a", 10, T0, Quota.CREATES_PER_MINUTE, retry_delay=25)
    assert until == T0 + 25
    decision = adm.decide(10, T0 + 10)
    assert not decision.admit
    assert said(decision) == f"cooling (creates/min) to {clock(T0 + 25)}"
    assert decision.quota is Quota.CREATES_PER_MINUTE
    assert decision.retry_at == T0 + 25
    assert adm.cool_down_until == T0 + 25 and adm.cool_down_quota is Quota.CREATES_PER_MINUTE
    assert adm.decide(10, T0 + 25).admit
    assert adm.cool_down_until is None and adm.cool_down_quota is None


# ---- learning from 429s ----------------------------------------------------------------------------


def test_enqueued_tokens_429_learns_the_tokens_in_flight() -> None:
    adm = make()
    run_job(adm, "a", M, T0)
    run_job(adm, "b", M, T0)
    until = refuse(adm, "c", M, T0 + 1, Quota.ENQUEUED_TOKENS)
    assert until == T0 + 1 + 60
    assert adm.token_budget == 2 * M
    assert adm.learned()["token_budget"] == 2 * M
    assert adm.tokens_in_flight == 2 * M and adm.jobs_in_flight == 2  # the refused job is not counted


def test_token_cool_down_ends_as_soon_as_a_job_ends_and_the_freed_tokens_are_usable() -> None:
    adm = make()
    run_job(adm, "a", M, T0)
    run_job(adm, "b", M, T0)
    refuse(adm, "c", M, T0 + 1, Quota.ENQUEUED_TOKENS)
    assert not adm.decide(M, T0 + 2).admit
    adm.job_ended("a")
    assert adm.cool_down_until is None
    assert adm.decide(M, T0 + 2).admit  # 1M in flight + 1M <= the 2M learned
    blocked = adm.decide(M + 1, T0 + 2)
    assert not blocked.admit and blocked.quota is Quota.ENQUEUED_TOKENS


def test_learned_budget_is_never_below_the_biggest_total_accepted() -> None:
    adm = make()
    for name in ("a", "b", "c"):
        run_job(adm, name, M, T0)
    adm.job_ended("a")
    adm.job_ended("b")
    refuse(adm, "d", 5 * M, T0 + 1, Quota.ENQUEUED_TOKENS)  # 1M in flight when refused
    assert adm.token_budget == 3 * M


def test_unknown_429_learns_a_budget_only_while_jobs_are_in_flight() -> None:
    adm = make()
    refuse(adm, "a", M, T0, Quota.UNKNOWN)
    assert adm.token_budget is None
    assert adm.cool_down_until == T0 + 60
    adm.decide(1, T0 + 60)  # the cool-down passes with time only
    run_job(adm, "b", 2 * M, T0 + 61)
    refuse(adm, "c", M, T0 + 62, Quota.UNKNOWN)
    assert adm.token_budget == 2 * M
    adm.job_ended("b")
    assert adm.cool_down_until is None  # treated like an enqueued-tokens 429


def test_enqueued_tokens_429_with_nothing_in_flight_waits_for_the_clock() -> None:
    adm = make()
    refuse(adm, "big", 5 * M, T0, Quota.ENQUEUED_TOKENS)
    assert adm.token_budget is None  # nothing to learn: someone else's jobs, or a job too big for the tier
    assert not adm.decide(5 * M, T0 + 59).admit
    assert adm.decide(5 * M, T0 + 60).admit


def test_concurrent_jobs_429_learns_the_cap() -> None:
    adm = make(max_concurrent_jobs=100)
    run_job(adm, "a", 1, T0)
    run_job(adm, "b", 1, T0)
    refuse(adm, "c", 1, T0, Quota.CONCURRENT_JOBS)
    assert adm.max_jobs == 2
    assert adm.learned()["max_jobs"] == 2
    adm.decide(1, T0 + 60)
    decision = adm.decide(1, T0 + 60)
    assert not decision.admit and said(decision) == "concurrent cap 2/2"
    adm.job_ended("a")
    assert adm.decide(1, T0 + 61).admit


def test_concurrent_jobs_cool_down_also_ends_when_a_job_ends() -> None:
    adm = make()
    run_job(adm, "a", 1, T0)
    refuse(adm, "b", 1, T0, Quota.CONCURRENT_JOBS)
    assert not adm.decide(1, T0 + 1).admit
    adm.job_ended("a")
    assert adm.decide(1, T0 + 1).admit


def test_creates_per_minute_429_learns_the_accepted_creates_of_the_last_minute() -> None:
    adm = make()
    for i in range(4):
        run_job(adm, f"j{i}", 1, T0 + i)
    refuse(adm, "x", 1, T0 + 5, Quota.CREATES_PER_MINUTE, retry_delay=1)
    assert adm.creates_per_minute == 4  # the refused create does not count
    assert adm.learned()["creates_per_minute"] == 4
    decision = adm.decide(1, T0 + 10)
    assert not decision.admit and said(decision) == "creates/min 4/4" and decision.retry_at == T0 + 60
    adm.job_ended("j0")
    assert not adm.decide(1, T0 + 10).admit  # a job ending does not help this quota
    assert adm.decide(1, T0 + 60).admit


def test_accepted_creates_raise_what_was_learned() -> None:
    adm = make()
    run_job(adm, "a", M, T0)
    refuse(adm, "b", M, T0, Quota.ENQUEUED_TOKENS)
    assert adm.token_budget == M
    adm.job_ended("a")
    run_job(adm, "c", 3 * M, T0 + 1)  # nothing in flight: admitted, and the server took it
    assert adm.token_budget == 3 * M


def test_set_budget_wins_when_smaller_than_learned() -> None:
    adm = make(token_budget=M)
    run_job(adm, "a", M, T0)
    run_job(adm, "b", M, T0)  # adopted over the budget (e.g. after a restart)
    refuse(adm, "c", M, T0, Quota.ENQUEUED_TOKENS)
    assert adm.learned()["token_budget"] == 2 * M
    assert adm.token_budget == M


# ---- cool-down doubling ----------------------------------------------------------------------------


def test_cool_down_doubles_per_consecutive_429_up_to_the_cap() -> None:
    adm = make(cool_down_seconds=60, cool_down_max_seconds=300)
    now = T0
    deadlines = []
    for i in range(5):
        until = refuse(adm, f"x{i}", 1, now, Quota.UNKNOWN)
        deadlines.append(until - now)
        now = until
    assert deadlines == [60, 120, 240, 300, 300]


def test_a_success_resets_the_doubling() -> None:
    adm = make(cool_down_seconds=10, cool_down_max_seconds=900)
    refuse(adm, "a", 1, T0, Quota.UNKNOWN)
    until = refuse(adm, "b", 1, T0 + 10, Quota.UNKNOWN)
    assert until - (T0 + 10) == 20
    run_job(adm, "c", 1, T0 + 30)
    assert refuse(adm, "d", 1, T0 + 31, Quota.UNKNOWN) - (T0 + 31) == 10


def test_a_job_ending_resets_the_doubling_but_a_refused_create_does_not() -> None:
    adm = make(cool_down_seconds=10, cool_down_max_seconds=900)
    run_job(adm, "a", 1, T0)
    refuse(adm, "x", 1, T0, Quota.CREATES_PER_MINUTE)  # the refuse helper ends x: must not reset
    assert refuse(adm, "y", 1, T0 + 10, Quota.CREATES_PER_MINUTE) - (T0 + 10) == 20
    adm.job_ended("a")
    assert refuse(adm, "z", 1, T0 + 30, Quota.CREATES_PER_MINUTE) - (T0 + 30) == 10


def test_retry_delay_from_the_server_wins_over_the_doubling() -> None:
    adm = make(cool_down_seconds=60)
    refuse(adm, "a", 1, T0, Quota.UNKNOWN)
    assert refuse(adm, "b", 1, T0 + 60, Quota.UNKNOWN, retry_delay=7.5) == T0 + 67.5


def test_a_transient_failure_is_not_a_job_end() -> None:
    adm = make(cool_down_seconds=10)
    run_job(adm, "a", M, T0)
    refuse(adm, "b", M, T0, Quota.ENQUEUED_TOKENS)
    adm.job_started("c", 1)  # a create that never reached the server
    adm.create_sent(T0 + 1)
    adm.job_ended("c")
    assert adm.cool_down_until == T0 + 10


# ---- bookkeeping -----------------------------------------------------------------------------------


def test_job_ended_is_idempotent_and_adopt_does_not_double_count() -> None:
    adm = make()
    adm.job_started("a", 100)
    adm.create_sent(T0)  # answer lost: ambiguous
    adm.job_started("a", 100)  # found by display name and adopted
    assert adm.tokens_in_flight == 100 and adm.jobs_in_flight == 1
    adm.job_ended("a")
    adm.job_ended("a")
    assert adm.tokens_in_flight == 0 and adm.jobs_in_flight == 0


def test_learned_facts_survive_a_restart() -> None:
    adm = make(max_concurrent_jobs=50)
    run_job(adm, "a", M, T0)
    run_job(adm, "b", M, T0)
    refuse(adm, "c", M, T0, Quota.ENQUEUED_TOKENS)
    refuse(adm, "d", M, T0 + 60, Quota.CONCURRENT_JOBS)
    learned = adm.learned()
    assert learned == {"token_budget": 2 * M, "max_jobs": 2, "accepted_tokens_max": 2 * M,
                       "accepted_jobs_max": 2, "accepted_creates_max": 2}
    again = Admission(AdmissionSettings(max_concurrent_jobs=50), learned=learned)
    assert again.token_budget == 2 * M and again.max_jobs == 2
    assert again.learned() == learned
    odd = Admission(AdmissionSettings(), learned={"token_budget": "x", "max_jobs": -3, "other": 1})
    assert odd.token_budget is None and odd.max_jobs == 100


def test_figures() -> None:
    adm = make(max_concurrent_jobs=10, creates_per_minute=5)
    run_job(adm, "a", 1000, T0)
    run_job(adm, "b", 2000, T0 + 1)
    until = refuse(adm, "c", 500, T0 + 2, Quota.ENQUEUED_TOKENS, retry_delay=30)
    figures = adm.figures(T0 + 3)
    assert figures.jobs_in_flight == 2
    assert figures.max_jobs == 10
    assert figures.tokens_enqueued == 3000
    assert figures.token_budget == 3000
    assert figures.creates_last_minute == 2
    assert figures.creates_per_minute == 5
    assert figures.cool_down_until == until
    assert figures.cool_down_quota is Quota.ENQUEUED_TOKENS
    assert figures.rate_limited_total == 1
    later = adm.figures(T0 + 100)
    assert later.cool_down_until is None and later.cool_down_quota is None and later.creates_last_minute == 0


@pytest.mark.parametrize(("tokens", "text"), [(950, "950"), (1500, "1.5k"), (150_000, "150k"),
                                              (2_900_000, "2.9M")])
def test_format_tokens(tokens: int, text: str) -> None:
    assert format_tokens(tokens) == text


# ---- the invariant ---------------------------------------------------------------------------------

_tokens = st.integers(min_value=1, max_value=2 * M)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("create"), _tokens, st.booleans()),  # admitted creates are accepted or refused
        st.tuples(st.just("end"), st.integers(min_value=0, max_value=1000)),
        st.tuples(st.just("adopt"), _tokens),  # a job found on restart, admitted by no one
        st.tuples(st.just("tick"), st.floats(min_value=0, max_value=200)),
    ),
    max_size=150,
)


@settings(max_examples=300, deadline=None)
@given(budget=st.integers(min_value=1, max_value=5 * M), ops=_ops,
       quota=st.sampled_from(list(Quota)), retry=st.one_of(st.none(), st.floats(min_value=0, max_value=90)))
def test_an_admitted_create_never_exceeds_a_set_budget_while_jobs_are_in_flight(
        budget: int, ops: list[tuple], quota: Quota, retry: float | None) -> None:
    adm = make(token_budget=budget, max_concurrent_jobs=20, creates_per_minute=30)
    now = T0
    in_flight: dict[str, int] = {}
    serial = 0
    for op in ops:
        serial += 1
        name = f"b{serial}"
        match op:
            case ("create", tokens, accepted):
                decision = adm.decide(tokens, now)
                if not decision.admit:
                    assert decision.wait is not None and said(decision)
                    continue
                if in_flight:
                    assert sum(in_flight.values()) + tokens <= budget
                    assert len(in_flight) < 20
                adm.job_started(name, tokens)
                adm.create_sent(now)
                if accepted:
                    adm.create_accepted(name, tokens, now)
                    in_flight[name] = tokens
                else:
                    adm.job_ended(name)
                    deadline = adm.rate_limited(quota, retry, tokens, now)
                    assert deadline >= now
            case ("end", index):
                if in_flight:
                    victim = sorted(in_flight)[index % len(in_flight)]
                    del in_flight[victim]
                    adm.job_ended(victim)
            case ("adopt", tokens):
                adm.job_started(name, tokens)
                in_flight[name] = tokens
            case ("tick", seconds):
                now += seconds
        assert adm.tokens_in_flight == sum(in_flight.values())
        assert adm.jobs_in_flight == len(in_flight)


# ---- bare 429s: classified from our own state --------------------------------------------------------


def test_a_bare_429_at_a_set_job_cap_is_the_cap_for_sure() -> None:
    adm = make(max_concurrent_jobs=2)
    run_job(adm, "a", M, T0)
    run_job(adm, "b", M, T0)
    adm.job_started("c", M)  # sent without asking (e.g. adopted work): the cap binds
    adm.create_sent(T0 + 1)
    adm.job_ended("c")
    adm.rate_limited(Quota.UNKNOWN, None, M, T0 + 1)
    verdict = adm.last_verdict
    assert verdict is not None and verdict.quotas == (Quota.CONCURRENT_JOBS,) and verdict.confidence == "sure"
    assert adm.token_budget is None  # not mistaken for a token budget


def test_a_bare_429_over_a_known_budget_is_the_budget() -> None:
    adm = make()
    run_job(adm, "a", M, T0)
    run_job(adm, "b", 3 * M, T0)
    adm.job_ended("b")
    refuse(adm, "c", 3 * M, T0 + 1, Quota.ENQUEUED_TOKENS)  # named: 4M is the most it held, 4M + 3M too much
    run_job(adm, "d", M, T0 + 100)
    run_job(adm, "e", M, T0 + 100)  # 3 jobs, 3M: the cap is at least 3
    refuse(adm, "f", 2 * M, T0 + 200, Quota.UNKNOWN)
    verdict = adm.last_verdict
    assert verdict is not None and verdict.quotas[0] is Quota.ENQUEUED_TOKENS
    assert verdict.quotas == (Quota.ENQUEUED_TOKENS,) and verdict.confidence == "sure"  # the known budget
    assert adm.token_budget == 4 * M and adm.max_jobs == 100


def test_a_bare_429_that_fits_several_quotas_holds_each_as_a_guess() -> None:
    adm = make()
    for name in ("a", "b", "c"):
        run_job(adm, name, M, T0)
    refuse(adm, "d", M, T0 + 1, Quota.UNKNOWN)
    verdict = adm.last_verdict
    assert verdict is not None and verdict.confidence == "guess"
    assert set(verdict.quotas) == {Quota.ENQUEUED_TOKENS, Quota.CONCURRENT_JOBS, Quota.CREATES_PER_MINUTE}
    assert adm.max_jobs == 3 and adm.token_budget == 3 * M  # jobs alike: both gates hold at the same point
    assert adm.creates_per_minute is None  # the window is only suspected: time alone would show it
    assert not adm.is_sure(Quota.CONCURRENT_JOBS) and not adm.is_sure(Quota.ENQUEUED_TOKENS)


def test_what_the_server_held_before_rules_out_the_job_cap() -> None:
    adm = make()
    for name in ("a", "b", "c"):
        run_job(adm, name, 100, T0)  # the server held 3 jobs of ours at once
    adm.job_ended("a")
    adm.job_ended("b")
    run_job(adm, "d", 2 * M, T0 + 100)  # 2 jobs now
    refuse(adm, "e", M, T0 + 200, Quota.UNKNOWN)
    verdict = adm.last_verdict
    assert verdict is not None and verdict.quotas == (Quota.ENQUEUED_TOKENS,) and verdict.confidence == "sure"
    assert adm.token_budget == 2 * M + 100 and adm.max_jobs == 100


def test_what_the_server_held_before_rules_out_the_token_budget() -> None:
    adm = make()
    run_job(adm, "big", 5 * M, T0)  # the server held 5M tokens of ours
    adm.job_ended("big")
    for name in ("a", "b", "c"):
        run_job(adm, name, M, T0 + 100)
    refuse(adm, "d", M, T0 + 200, Quota.UNKNOWN)  # 3M + 1M < 5M: not the budget
    verdict = adm.last_verdict
    assert verdict is not None and verdict.quotas == (Quota.CONCURRENT_JOBS,) and verdict.confidence == "sure"
    assert adm.max_jobs == 3 and adm.token_budget is None
    assert adm.is_sure(Quota.CONCURRENT_JOBS)


def test_a_guess_freed_by_time_alone_was_the_creates_window() -> None:
    adm = make(cool_down_seconds=1)
    for i in range(3):
        run_job(adm, f"j{i}", M, T0 + i)
    refuse(adm, "x", M, T0 + 3, Quota.UNKNOWN)  # guessed: 3 jobs / 3M / 3 creates
    assert adm.max_jobs == 3
    blocked = adm.decide(M, T0 + 3.5)
    assert not blocked.admit  # cooling down
    window_probe = adm.decide(M, T0 + 61)  # the first create has left the window: one create tells
    assert window_probe.admit and said(window_probe) and said(window_probe).startswith("probing")
    run_job(adm, "y", M, T0 + 61)  # accepted, and no job of ours ended: time freed it
    assert adm.creates_per_minute == 3
    assert adm.max_jobs == 100 and adm.token_budget is None  # the guessed holding limits are put back
    assert adm.last_verdict is not None and adm.last_verdict.quotas == (Quota.CREATES_PER_MINUTE,)


def test_a_refused_window_probe_keeps_the_holding_guess_and_costs_one_429() -> None:
    adm = make(cool_down_seconds=1)
    for i in range(3):
        run_job(adm, f"j{i}", M, T0 + i)
    refuse(adm, "x", M, T0 + 3, Quota.UNKNOWN)
    assert adm.decide(M, T0 + 61).admit
    refuse(adm, "y", M, T0 + 61, Quota.UNKNOWN)
    verdict = adm.last_verdict
    assert verdict is not None and Quota.CREATES_PER_MINUTE not in verdict.quotas
    assert adm.max_jobs == 3
    assert not adm.decide(M, T0 + 61 + 3).admit  # no second window probe: the jobs must end, or the pair's probe
    assert adm.decide(M, T0 + 61 + 4).admit  # which waits twice the cool-down, doubled by the wrong probe


def test_a_window_learned_later_keeps_a_guess_whose_429_came_with_the_window_not_full() -> None:
    """The first 429 fits the cap, the budget and a window of 3; a later one shows the window is 6: the first
    was not the window, so its guessed cap and budget stay (they used to go, and the run met them again)."""
    adm = make(cool_down_seconds=100)
    for name in ("a", "b", "c"):
        run_job(adm, name, M, T0)
    refuse(adm, "d", M, T0 + 1, Quota.UNKNOWN)  # 3 jobs, 3M tokens, 3 creates in the window
    assert adm.max_jobs == 3 and adm.token_budget == 3 * M
    for name in ("a", "b", "c"):
        adm.job_ended(name)
    for name in ("e", "f", "g"):
        run_job(adm, name, M, T0 + 3)
    adm.job_ended("e")
    refuse(adm, "h", M, T0 + 4, Quota.UNKNOWN)  # 2 jobs held, 6 creates in the window: only the window fits
    assert adm.last_verdict is not None and adm.last_verdict.quotas == (Quota.CREATES_PER_MINUTE,)
    assert adm.creates_per_minute == 6
    assert adm.max_jobs == 3 and adm.token_budget == 3 * M
    assert adm.cool_down_until == T0 + 60  # a window read for sure: the wait ends when it has room, not at T0 + 104


def test_a_full_window_below_a_guessed_budget_is_the_window_not_a_lower_budget() -> None:
    """With the window full and fewer jobs held than a guessed cap and budget allow, a bare 429 is the window:
    the guesses are not lowered to what is held now (in the benchmark they fell to 66 % of the limit). No poll
    has confirmed what the server held, as in a busy run where some job always ends between two polls."""
    adm = make()

    def accepted(name: str, tokens: int, at: float) -> None:
        adm.job_started(name, tokens)
        adm.create_sent(at)
        adm.create_accepted(name, tokens, at)

    for name in ("a", "b", "c", "d"):
        accepted(name, M, T0 - 100)
    refuse(adm, "x", M, T0 - 99, Quota.UNKNOWN)  # guess: cap 4, budget 4M
    assert adm.max_jobs == 4 and adm.token_budget == 4 * M
    for name in ("a", "b"):
        adm.job_ended(name)
    for i in range(6):  # a burst of small jobs that end at once: the window holds 6, 2 jobs are held
        accepted(f"w{i}", M // 4, T0 + i * 0.1)
        adm.job_ended(f"w{i}")
    refuse(adm, "y", M // 4, T0 + 1, Quota.UNKNOWN)
    assert adm.last_verdict is not None and adm.last_verdict.quotas == (Quota.CREATES_PER_MINUTE,)
    assert adm.token_budget == 4 * M and adm.max_jobs == 4


def test_a_window_that_only_a_guess_singles_out_is_a_guess_not_sure() -> None:
    """A guessed cap (too high: the server's real cap is what we hold now) rules itself out, and only the window is
    left: that is a guess, to be probed, not a sure creates/min limit held for a whole window (seen after a
    restart, where the restored creates fill the window: the run waited a minute it did not have to)."""
    adm = make()
    for name in ("a", "b", "c"):
        adm.job_started(name, M)
        adm.create_sent(T0)
        adm.create_accepted(name, M, T0)
    refuse(adm, "x", M, T0 + 1, Quota.UNKNOWN)  # a guess: cap 3, budget 3M
    adm.job_ended("a")  # two held now, the window holds three creates: the guessed cap of 3 is not binding
    refuse(adm, "y", M, T0 + 2, Quota.UNKNOWN)
    verdict = adm.last_verdict
    assert verdict is not None and verdict.quotas == (Quota.CREATES_PER_MINUTE,)
    assert verdict.confidence == "guess" and "guessed limits rule out" in verdict.why


def test_nothing_of_ours_in_flight_teaches_nothing_not_even_one_per_minute() -> None:
    adm = make()
    refuse(adm, "a", M, T0, Quota.UNKNOWN)  # e.g. just after a restart, the server's window is full
    refuse(adm, "b", M, T0 + 60, Quota.CREATES_PER_MINUTE)  # named, but our window is empty
    assert adm.creates_per_minute is None and adm.token_budget is None and adm.max_jobs == 100
    assert adm.last_verdict is not None and adm.last_verdict.confidence == "named"


# ---- learned limits go up again -------------------------------------------------------------------


def test_a_guessed_limit_is_probed_one_create_at_a_time_and_a_wrong_probe_costs_one_429() -> None:
    adm = make(cool_down_seconds=10, probe_after_seconds=900)
    for name in ("a", "b", "c"):
        run_job(adm, name, 100, T0)
    refuse(adm, "d", 100, T0 + 1, Quota.UNKNOWN)  # guess: cap 3, budget 300
    adm.job_ended("a")  # 2 jobs, 200 tokens: a small job fits both gates
    run_job(adm, "e", 50, T0 + 5)
    early = adm.decide(50, T0 + 6)  # 3 jobs, 250 tokens: only the guessed cap blocks, not quiet long enough
    assert not early.admit and early.retry_at == T0 + 11
    probe = adm.decide(50, T0 + 11)
    assert probe.admit and probe.quota is Quota.CONCURRENT_JOBS
    adm.job_started("f", 50)
    adm.create_sent(T0 + 11)
    assert not adm.decide(50, T0 + 11).admit  # one probe at a time
    adm.job_ended("f")
    adm.rate_limited(Quota.UNKNOWN, None, 50, T0 + 11)  # the probe was wrong: one 429
    assert adm.max_jobs == 3
    assert adm.last_verdict is not None and adm.last_verdict.quotas[0] is Quota.CONCURRENT_JOBS
    assert adm.last_verdict.confidence == "guess"  # the creates window could explain it too
    assert not adm.decide(50, T0 + 22).admit  # the next probe waits twice as long (20 s)
    assert adm.decide(50, T0 + 31).admit


def test_a_guessed_cap_and_budget_that_alike_jobs_cannot_tell_apart_are_probed_after_the_cool_down() -> None:
    """One 429 with alike jobs fits the job cap and the budget alike: the pair is tried one create higher after
    twice the cool-down (doubling per wrong probe), not held for `probe_after_seconds` (a cap of 3 held 15 min)."""
    adm = make(cool_down_seconds=10, probe_after_seconds=900)
    for name in ("a", "b", "c"):
        run_job(adm, name, 100, T0 - 100)  # out of the creates window: only the cap or the budget fits
    refuse(adm, "d", 100, T0 + 1, Quota.UNKNOWN)
    assert adm.max_jobs == 3 and adm.token_budget == 300
    assert not adm.decide(100, T0 + 20).admit
    probe = adm.decide(100, T0 + 21)
    assert probe.admit and probe.wait is not None and probe.wait.kind == "probing"
    run_job(adm, "e", 100, T0 + 21)  # the server takes a fourth job: the guess was low
    assert adm.max_jobs == 4 and adm.token_budget == 400
    assert adm.decide(100, T0 + 22).admit  # still a guess: the next probe
    refuse(adm, "f", 100, T0 + 22, Quota.UNKNOWN)  # refused: one 429, and the quiet doubles
    assert not adm.decide(100, T0 + 22 + 39).admit
    assert adm.decide(100, T0 + 22 + 40).admit


def test_accepted_probes_raise_the_limit_by_what_the_next_poll_proves_even_when_a_job_ended_meanwhile() -> None:
    """With jobs ending all the time (a long run), a poll rarely finds every job held at an accept unended: the
    ones it finds unended were held by the server then for sure, and they prove the risen limit (a tier rise)."""
    adm = make(cool_down_seconds=10)
    for name in ("a", "b", "c"):
        run_job(adm, name, 100, T0 - 100)
    refuse(adm, "d", 100, T0 + 1, Quota.UNKNOWN)  # guess: cap 3, budget 300
    for name, at in (("e", T0 + 21), ("f", T0 + 22)):  # two probes accepted, one after the other
        assert adm.decide(100, at).admit
        adm.job_started(name, 100)
        adm.create_sent(at)
        adm.create_accepted(name, 100, at)
    adm.job_ended("a")  # the next poll sees a ended: it may have ended before either accept
    adm.poll_seen(T0 + 23)
    assert adm.max_jobs == 4 and adm.token_budget == 400  # b, c, e and f were held at f's accept


def test_an_accepted_probe_raises_the_limit() -> None:
    adm = make(cool_down_seconds=10)
    for name in ("a", "b", "c"):
        run_job(adm, name, 100, T0)
    refuse(adm, "d", 100, T0 + 1, Quota.UNKNOWN)
    adm.job_ended("a")
    run_job(adm, "e", 50, T0 + 5)
    assert adm.decide(50, T0 + 11).admit
    run_job(adm, "f", 50, T0 + 11)
    assert adm.max_jobs == 4


def test_a_sure_limit_is_probed_again_after_the_quiet_period() -> None:
    adm = make(cool_down_seconds=10, probe_after_seconds=600)
    run_job(adm, "a", 1, T0)
    run_job(adm, "b", 1, T0)
    refuse(adm, "c", 1, T0, Quota.CONCURRENT_JOBS)
    assert adm.is_sure(Quota.CONCURRENT_JOBS)
    assert not adm.decide(1, T0 + 599).admit
    probe = adm.decide(1, T0 + 600)  # the tier may have risen
    assert probe.admit and probe.quota is Quota.CONCURRENT_JOBS
    run_job(adm, "d", 1, T0 + 600)
    assert adm.max_jobs == 3


def test_a_set_limit_is_never_probed() -> None:
    adm = make(max_concurrent_jobs=2, probe_after_seconds=1)
    run_job(adm, "a", 1, T0)
    run_job(adm, "b", 1, T0)
    assert not adm.decide(1, T0 + 10_000).admit


def test_a_limit_learned_under_other_jobs_is_a_guess_and_rises_when_they_end() -> None:
    adm = make(cool_down_seconds=10, probe_after_seconds=900)
    adm.others_seen({JobState.RUNNING: 2}, [], T0)
    run_job(adm, "a", M, T0)
    refuse(adm, "b", 2 * M, T0 + 1, Quota.ENQUEUED_TOKENS)  # named, but others hold part of the budget
    assert adm.token_budget == M and not adm.is_sure(Quota.ENQUEUED_TOKENS)
    assert not adm.decide(2 * M, T0 + 100).admit  # still held: the others have not ended
    adm.others_seen({JobState.RUNNING: 1}, [], T0 + 120)  # one of them ended
    probe = adm.decide(2 * M, T0 + 121)
    assert probe.admit and probe.quota is Quota.ENQUEUED_TOKENS
    run_job(adm, "c", 2 * M, T0 + 121)
    assert adm.token_budget == 3 * M


def test_other_jobs_are_counted_and_kept() -> None:
    adm = make()
    adm.others_seen({JobState.PENDING: 1, JobState.RUNNING: 2}, [T0 - 10, T0 - 100], T0)
    assert adm.other_jobs == {JobState.PENDING: 1, JobState.RUNNING: 2}
    assert adm.figures(T0).other_jobs == 3
    assert adm.figures(T0).creates_last_minute == 0  # ours only; the window gate counts theirs too
    learned = adm.learned()
    assert (learned["other_jobs_pending"], learned["other_jobs_running"], learned["other_jobs_seen_at"]) == (1, 2, T0)


def test_other_jobs_creates_count_in_the_window() -> None:
    adm = make(creates_per_minute=3)
    adm.others_seen({}, [T0 - 5, T0 - 4], T0)
    run_job(adm, "a", 1, T0)
    blocked = adm.decide(1, T0 + 1)
    assert not blocked.admit and said(blocked) == "creates/min 3/3" and blocked.retry_at == T0 - 5 + 60


def test_a_loaded_limit_is_a_starting_point_not_a_ceiling() -> None:
    adm = Admission(AdmissionSettings(cool_down_seconds=10), learned={"max_jobs": 2})
    assert not adm.is_sure(Quota.CONCURRENT_JOBS)
    run_job(adm, "a", 1, T0)
    run_job(adm, "b", 1, T0)
    probe = adm.decide(1, T0)
    assert probe.admit and probe.quota is Quota.CONCURRENT_JOBS
    run_job(adm, "c", 1, T0)
    assert adm.max_jobs == 3


def test_a_set_limit_beats_a_lower_learned_one() -> None:
    learned = {"token_budget": M, "creates_per_minute": 1}
    adm = Admission(AdmissionSettings(token_budget=5 * M, creates_per_minute=40), learned=learned)
    assert adm.token_budget == 5 * M and adm.creates_per_minute == 40
    lower = Admission(AdmissionSettings(token_budget=M // 2), learned=learned)
    assert lower.token_budget == M // 2 and lower.creates_per_minute == 1


# ---- restart: the creates window comes back --------------------------------------------------------


def test_restored_creates_fill_the_window_after_a_restart() -> None:
    adm = make()
    adm.creates_restored([T0 - 70, T0 - 30, T0 - 20, T0 - 10, T0 - 5, T0 - 1], T0)
    assert adm.figures(T0).creates_last_minute == 5
    refuse(adm, "x", 1, T0 + 1, Quota.CREATES_PER_MINUTE)
    assert adm.creates_per_minute == 5  # not 1


def test_creates_restored_after_a_restart_fill_the_window_but_prove_no_higher_rate() -> None:
    """A restored create's time is only an upper bound (it may have reached the server earlier and left its
    window already): it holds the window for the gates, but an accept counted with it proves nothing. (The
    restart benchmark learned 63 per window against a true 48, then read the window's 429s as nothing of ours.)"""
    adm = Admission(AdmissionSettings(), learned={"creates_per_minute": 4})
    adm.creates_restored([T0 - 30, T0 - 29], T0)
    assert adm.figures(T0).creates_last_minute == 2
    for i in range(3):  # the server takes 3 more: with the 2 restored that would be 5 in the window
        run_job(adm, f"n{i}", 1, T0 + i)
    assert adm.figures(T0 + 3).creates_last_minute == 5
    assert adm.creates_per_minute == 4


def test_a_bare_429_after_a_restart_with_the_window_full_is_not_one_per_minute() -> None:
    adm = make(cool_down_seconds=1)
    adm.creates_restored([T0 - 30 + i for i in range(5)], T0)
    for i in range(5):
        adm.job_started(f"j{i}", 100)  # the jobs of those creates, found in the checkpoint
    refuse(adm, "x", 100, T0 + 1, Quota.UNKNOWN)
    assert adm.creates_per_minute is None or adm.creates_per_minute >= 5
    assert adm.decide(100, T0 + 31).admit  # the window has room again: one create tells
    run_job(adm, "y", 100, T0 + 31)
    assert adm.creates_per_minute == 5


# ---- several creates in flight at once ---------------------------------------------------------------


def reserve(adm: Admission, batch_id: str, tokens: int, now: float) -> bool:
    """What the engine does for each create of a group: ask, then reserve its slots before the next is asked."""
    if not adm.decide(tokens, now).admit:
        return False
    adm.job_started(batch_id, tokens)
    adm.create_sent(now, batch_id)
    return True


def test_a_group_reserves_its_slots_before_the_next_create_is_asked_about() -> None:
    adm = make(token_budget=3 * M, max_concurrent_jobs=10)
    run_job(adm, "a", M, T0)
    assert [reserve(adm, b, M, T0 + 1) for b in ("b", "c", "d")] == [True, True, False]  # tokens
    adm = make(max_concurrent_jobs=3)
    assert [reserve(adm, b, 1, T0) for b in ("a", "b", "c", "d")] == [True, True, True, False]  # job cap
    adm = make(creates_per_minute=2)
    assert [reserve(adm, b, 1, T0) for b in ("a", "b", "c")] == [True, True, False]  # creates window


def test_a_refused_or_withdrawn_create_of_a_group_frees_its_slots() -> None:
    adm = make(max_concurrent_jobs=3, creates_per_minute=3, cool_down_seconds=5)
    assert all(reserve(adm, b, 1, T0) for b in ("a", "b", "c"))
    assert not adm.decide(1, T0).admit
    adm.create_withdrawn("c")  # its intent could not be saved: it never left
    assert adm.jobs_in_flight == 2 and adm.figures(T0).creates_last_minute == 2
    assert adm.decide(1, T0).admit
    adm.create_accepted("a", 1, T0 + 1)
    adm.job_ended("b")
    adm.rate_limited(Quota.UNKNOWN, 0.0, 1, T0 + 1, "b")  # refused: the server counts accepted creates only
    assert adm.jobs_in_flight == 1 and adm.figures(T0 + 1).creates_last_minute == 1


def test_a_429_read_while_others_of_its_group_are_in_flight_leaves_them_out() -> None:
    adm = make()
    for i in range(4):
        run_job(adm, f"j{i}", 1, T0 + i)
    for b in ("a", "b", "c"):
        adm.job_started(b, 1)
        adm.create_sent(T0 + 5, b)
    adm.job_ended("b")
    adm.rate_limited(Quota.CREATES_PER_MINUTE, None, 1, T0 + 5, "b")
    assert adm.creates_per_minute == 4  # not 6: a and c may yet be refused
    adm.create_accepted("a", 1, T0 + 5)
    assert adm.creates_per_minute == 5  # a was counted: the window held 5
    adm.job_ended("c")
    adm.rate_limited(Quota.CREATES_PER_MINUTE, None, 1, T0 + 5, "c")
    assert adm.creates_per_minute == 5


def test_the_other_429s_of_a_group_do_not_double_the_cool_down() -> None:
    adm = make(cool_down_seconds=10, cool_down_max_seconds=1000)
    run_job(adm, "a", M, T0)
    for b in ("b", "c", "d"):
        adm.job_started(b, M)
        adm.create_sent(T0 + 1, b)
    until = []
    for b in ("b", "c", "d"):
        adm.job_ended(b)
        until.append(adm.rate_limited(Quota.ENQUEUED_TOKENS, None, M, T0 + 2, b))
    assert until == [T0 + 12] * 3  # one learning event: k-1 echoes, no doubling
    adm.job_started("e", M)
    adm.create_sent(T0 + 12, "e")
    adm.job_ended("e")
    assert adm.rate_limited(Quota.ENQUEUED_TOKENS, None, M, T0 + 12, "e") == T0 + 32  # a new 429: doubled


def test_a_sure_creates_window_is_probed_after_one_window_as_the_tier_may_rise() -> None:
    adm = make(cool_down_seconds=1, probe_after_seconds=900)
    for i in range(4):
        run_job(adm, f"j{i}", 1, T0)
    refuse(adm, "x", 1, T0 + 1, Quota.CREATES_PER_MINUTE)
    assert adm.is_sure(Quota.CREATES_PER_MINUTE) and adm.creates_per_minute == 4
    for i in range(4, 8):  # held at the limit for the next window
        assert reserve(adm, f"j{i}", 1, T0 + 60)
        adm.create_accepted(f"j{i}", 1, T0 + 60)
    assert not adm.decide(1, T0 + 60).admit
    probe = adm.decide(1, T0 + 61)  # one window quiet: one create higher, not 900 s later
    assert probe.admit and probe.quota is Quota.CREATES_PER_MINUTE
    adm.job_started("p", 1)
    adm.create_sent(T0 + 61, "p")
    assert not adm.decide(1, T0 + 61).admit  # one probe at a time
    adm.job_ended("p")
    adm.rate_limited(Quota.UNKNOWN, None, 1, T0 + 61, "p")  # the tier did not rise: this probe cost one 429
    assert adm.creates_per_minute == 4
    for i in range(8, 12):  # held at the limit again
        assert reserve(adm, f"j{i}", 1, T0 + 130)
        adm.create_accepted(f"j{i}", 1, T0 + 130)
    assert not adm.decide(1, T0 + 61 + 119).admit  # the next probe waits twice as long
    again = adm.decide(1, T0 + 61 + 120)
    assert again.admit and again.quota is Quota.CREATES_PER_MINUTE


def test_a_sure_token_budget_is_probed_once_the_jobs_it_held_ended() -> None:
    adm = make(cool_down_seconds=10, probe_after_seconds=900)
    run_job(adm, "a", M, T0)
    run_job(adm, "b", M, T0)
    refuse(adm, "c", M, T0, Quota.ENQUEUED_TOKENS)
    assert adm.is_sure(Quota.ENQUEUED_TOKENS) and adm.token_budget == 2 * M
    adm.job_ended("a")
    run_job(adm, "d", M, T0 + 20)
    assert not adm.decide(M, T0 + 30).admit  # b, held at the 429, has not ended: the tier is not known to change
    adm.job_ended("b")
    run_job(adm, "e", M, T0 + 40)
    probe = adm.decide(M, T0 + 40)
    assert probe.admit and probe.quota is Quota.ENQUEUED_TOKENS
    run_job(adm, "f", M, T0 + 40)
    assert adm.token_budget == 3 * M


def test_a_group_grows_only_where_the_room_of_the_holding_quotas_is_known() -> None:
    adm = make()
    run_job(adm, "a", M, T0)
    run_job(adm, "b", M, T0)  # the server has held 2 jobs, 2M tokens for us
    adm.job_ended("a")
    assert adm.room_for_more(M)  # nothing learned, but within what it held before
    adm.job_started("c", M)
    adm.create_sent(T0 + 1, "c")
    assert not adm.room_for_more(M)  # a third job is unknown ground: one create at a time
    adm.create_accepted("c", M, T0 + 2)
    refuse(adm, "d", M, T0 + 2, Quota.ENQUEUED_TOKENS)  # learned: the budget is known now
    assert adm.token_budget == 2 * M
    adm.job_ended("b")
    adm.job_ended("c")
    assert adm.room_for_more(M) and adm.decide(M, T0 + 3).admit  # decide checks the learned budget


def test_a_create_restored_without_its_answer_holds_its_slots_but_proves_no_limit() -> None:
    adm = make()
    adm.job_started("a", M)
    adm.job_started("b", M, unknown=True)  # killed between its intent and its answer
    adm.job_started("c", M)
    refuse(adm, "d", M, T0, Quota.CONCURRENT_JOBS)
    assert adm.jobs_in_flight == 3 and adm.max_jobs == 2  # b may never have reached the server
    adm.job_started("b", M)  # found by display name: it exists
    assert adm.jobs_in_flight == 3
