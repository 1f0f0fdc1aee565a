"""The countdown pane and the uploads pane say what admission believes, and why, in UTC."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from gembatch.core.admission import Admission
from gembatch.core.backend import JobState
from gembatch.core.config import AdmissionSettings
from gembatch.core.events import BatchChanged, EventBus, LogLine, Quota, Wait
from gembatch.core.model import BatchRecord, Stage
from gembatch.core.progress_report import ProgressReport
from gembatch.core.wait_text import wait_text
from gembatch.tui.panes.countdown_pane import belief_rows

T0 = 1_700_000_000.0


def _two_held_then_refused(adm: Admission, tokens: int, quota: Quota) -> None:
    """Jobs a and b accepted at T0; c sent at T0 + 1, ended, and refused with `quota`."""
    for name in ("a", "b"):
        adm.job_started(name, tokens)
        adm.create_sent(T0)
        adm.create_accepted(name, tokens, T0)
    adm.job_started("c", tokens)
    adm.create_sent(T0 + 1)
    adm.job_ended("c")
    adm.rate_limited(quota, None, tokens, T0 + 1)


def test_the_countdown_pane_shows_each_belief_with_its_confidence_and_utc_time() -> None:
    adm = Admission(AdmissionSettings())
    adm.others_seen({JobState.RUNNING: 2}, [], T0)
    _two_held_then_refused(adm, 500, Quota.UNKNOWN)
    learned_at = time.strftime("%H:%M", time.gmtime(T0 + 1))
    rows = belief_rows(adm.figures(T0 + 2))
    assert rows[0] == ("Believes", f"tokens ~1.0k (held by others, {learned_at} UTC)")
    assert rows[1] == ("", f"job cap ~2 (held by others, {learned_at} UTC)")
    assert rows[-1] == ("Other jobs", "2 not ours (left alone)")


def test_nothing_learned_and_no_other_jobs_adds_no_row() -> None:
    adm = Admission(AdmissionSettings())
    assert belief_rows(adm.figures(T0)) == []


def test_a_wait_on_a_guessed_limit_says_it_is_a_guess() -> None:
    adm = Admission(AdmissionSettings(cool_down_seconds=10))
    for name in ("a", "b", "c"):
        adm.job_started(name, 100)
        adm.create_sent(T0)
        adm.create_accepted(name, 100, T0)
    adm.job_started("d", 100)
    adm.create_sent(T0 + 1)
    adm.job_ended("d")
    adm.rate_limited(Quota.UNKNOWN, None, 100, T0 + 1)
    adm.job_ended("a")  # the cool-down ends with a job of ours; a smaller job meets only the guessed cap
    for name in ("e",):
        adm.job_started(name, 50)
        adm.create_sent(T0 + 3)
        adm.create_accepted(name, 50, T0 + 3)
    decision = adm.decide(50, T0 + 5)
    assert not decision.admit and decision.wait is not None
    assert wait_text(decision.wait) == "concurrent cap 3/3 (guess; probe after 15:14 UTC)".replace(
        "15:14", time.strftime("%H:%M", time.gmtime(T0 + 1 + 10)))


@pytest.fixture
def kolkata(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's zone is UTC+05:30: a time rendered in local time would differ from the UTC one."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    assert time.localtime(T0).tm_hour != time.gmtime(T0).tm_hour
    yield
    monkeypatch.undo()
    time.tzset()


def test_waits_and_beliefs_are_figures_rendered_in_utc_whatever_the_machines_zone(kolkata: None) -> None:
    adm = Admission(AdmissionSettings(cool_down_seconds=30))
    _two_held_then_refused(adm, 100, Quota.CONCURRENT_JOBS)
    cooling = adm.decide(100, T0 + 2)
    assert cooling.wait == Wait("cooling", Quota.CONCURRENT_JOBS, until=T0 + 31)  # figures, not words
    assert adm.figures(T0 + 2).wait == cooling.wait
    utc = time.strftime("%H:%M:%S", time.gmtime(T0 + 31))
    assert wait_text(cooling.wait) == f"cooling (job cap) to {utc} UTC"
    assert time.strftime("%H:%M:%S", time.localtime(T0 + 31)) not in wait_text(cooling.wait)
    learned = time.strftime("%H:%M", time.gmtime(T0 + 1))
    assert belief_rows(adm.figures(T0 + 2)) == [("Believes", f"job cap ~2 (sure, {learned} UTC)")]
    held = adm.decide(100, T0 + 40)
    assert held.wait == Wait("limit", Quota.CONCURRENT_JOBS, used=2, limit=2, confidence="sure",
                             learned_at=T0 + 1)


def test_the_progress_line_gives_the_creates_window_deadline_in_utc(kolkata: None) -> None:
    adm = Admission(AdmissionSettings(creates_per_minute=2))
    for name in ("a", "b"):
        adm.job_started(name, 100)
        adm.create_sent(T0)
        adm.create_accepted(name, 100, T0)
    engine = SimpleNamespace(bus=EventBus(), paused=False, admission=adm, records={})
    lines: list[str] = []
    engine.bus.subscribe(lambda e: lines.append(e.message) if isinstance(e, LogLine) else None)
    rec = BatchRecord(batch_id="c", source="in/c.jsonl", stage=Stage.UPLOADED, est_tokens=100)
    decision = adm.decide(100, T0 + 5)
    assert decision.wait is not None and decision.wait.until == T0 + 60
    rec.wait_reason = wait_text(decision.wait)
    engine.records["c"] = rec
    report = ProgressReport(engine, 60.0, clock=lambda: T0 + 5)
    report(BatchChanged(T0 + 5, rec))
    utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + 60))
    assert lines == [f"waiting for the creates-per-minute limit (creates/min 2/2) until about {utc}"]
