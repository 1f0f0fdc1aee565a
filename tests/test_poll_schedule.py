"""The poll schedule looks again just after a job is due to end, and backs off for a slow one."""

from __future__ import annotations

from gembatch.core.backend import JobState, RemoteJob
from gembatch.core.poll_schedule import PollSchedule


def job(state: JobState, create: float | None = None, end: float | None = None) -> RemoteJob:
    return RemoteJob(name="batches/x", display_name="d", state=state, result_file=None,
                     create_time=create, end_time=end)


def test_polls_often_until_a_job_has_ended_then_just_after_the_predicted_end() -> None:
    schedule = PollSchedule(interval=30.0)
    schedule.observe("a", job(JobState.RUNNING), now=0.0)
    assert schedule.delay(["a"], now=0.0) == 7.5  # nothing learned yet: interval / 4

    schedule.observe("a", job(JobState.SUCCEEDED, create=100.0, end=110.0), now=12.0)  # jobs take 10 s
    schedule.observe("b", job(JobState.PENDING), now=12.0)
    assert abs(schedule.delay(["b"], now=12.0) - 10.3) < 1e-9  # 10 s + interval/100


def test_a_slow_job_is_looked_at_with_a_backoff_never_closer_than_interval_over_20() -> None:
    schedule = PollSchedule(interval=30.0)
    schedule.observe("a", job(JobState.SUCCEEDED, create=0.0, end=2.0), now=2.0)
    schedule.observe("b", job(JobState.RUNNING), now=10.0)
    assert abs(schedule.delay(["b"], now=10.0) - 2.3) < 1e-9  # its predicted end: 2 s + interval/100
    assert schedule.delay(["b"], now=12.0) == 1.5  # 0.3 s left, but early polls are at least interval/20 apart
    assert schedule.delay(["b"], now=40.0) == 7.5  # past its predicted end: a quarter of its age (30 s)
    assert schedule.delay([], now=40.0) == 30.0


def test_a_job_that_left_flight_without_an_end_is_forgotten_so_its_next_job_starts_afresh() -> None:
    schedule = PollSchedule(interval=30.0)
    schedule.observe("a", job(JobState.SUCCEEDED, create=0.0, end=10.0), now=10.0)  # jobs take 10 s
    schedule.observe("b", job(JobState.RUNNING), now=10.0)
    schedule.forget("b")  # cancelled and requeued; its next job is seen at 50
    schedule.observe("b", job(JobState.PENDING), now=50.0)
    # predicted from the new job's start (50 + 10 + 0.3), not the old one's (which would back off by age)
    assert abs(schedule.delay(["b"], now=50.0) - 10.3) < 1e-9
