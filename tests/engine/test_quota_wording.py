"""The countdown pane and the uploads pane say what admission believes, and why, in UTC."""

from __future__ import annotations

import time

from gembatch.core.admission import Admission
from gembatch.core.backend import JobState
from gembatch.core.config import AdmissionSettings
from gembatch.core.events import Quota
from gembatch.tui.panes.countdown_pane import belief_rows

T0 = 1_700_000_000.0


def test_the_countdown_pane_shows_each_belief_with_its_confidence_and_utc_time() -> None:
    adm = Admission(AdmissionSettings())
    adm.others_seen({JobState.RUNNING: 2}, [], T0)
    for name in ("a", "b"):
        adm.job_started(name, 500)
        adm.create_sent(T0)
        adm.create_accepted(name, 500, T0)
    adm.job_started("c", 500)
    adm.create_sent(T0 + 1)
    adm.job_ended("c")
    adm.rate_limited(Quota.UNKNOWN, None, 500, T0 + 1)
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
    decision = adm.decide(100, T0 + 20)
    assert not decision.admit and decision.reason == "concurrent cap 3/3 (guess; probe after 15:14 UTC)".replace(
        "15:14", time.strftime("%H:%M", time.gmtime(T0 + 1 + 900)))
