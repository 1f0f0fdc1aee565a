"""A job's life in real time, computed from its timestamps whenever someone looks (no timer threads).

PENDING for pending_seconds, RUNNING for running_seconds (+ per request), then SUCCEEDED (or FAILED when a
failure was planned); EXPIRED instead if that end comes after the job TTL. Cancel, delete, fail_job and
expire_job end a job early. Requests complete evenly over the RUNNING time, which drives batchStats.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

from . import answers
from .faults import request_errors
from .store import FileRecord, JobRecord, Store

PENDING = "BATCH_STATE_PENDING"
RUNNING = "BATCH_STATE_RUNNING"
SUCCEEDED = "BATCH_STATE_SUCCEEDED"
FAILED = "BATCH_STATE_FAILED"
CANCELLED = "BATCH_STATE_CANCELLED"
EXPIRED = "BATCH_STATE_EXPIRED"
ENDED = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED})

FAILED_MESSAGE = "The batch job failed: an internal error occurred while processing it (emulated)."
CANCELLED_MESSAGE = "The batch job was cancelled."


@dataclass(frozen=True, slots=True)
class JobStatus:
    """What a job looks like at one moment: state, times and request counts."""

    state: str
    update_time: float
    end_time: float | None
    request_count: int
    succeeded: int
    failed: int
    pending: int


def _error_lines(job: JobRecord) -> list[int]:
    if job.error_lines is None:
        job.error_lines = request_errors(job.seed, job.serial, job.request_count, job.error_rate)
    return job.error_lines


def _progress(job: JobRecord, at: float) -> tuple[int, int]:
    """(requests done, of which failed) at time `at`, while the job runs."""
    elapsed = at - (job.create_time + job.pending_seconds)
    if elapsed <= 0:
        return 0, 0
    if job.running_seconds <= 0:
        done = job.request_count
    else:
        done = min(job.request_count, math.floor(job.request_count * elapsed / job.running_seconds))
    return done, bisect.bisect_left(_error_lines(job), done)


def natural_end(job: JobRecord) -> tuple[str, float]:
    """The state and time the job ends at unless someone ends it first."""
    finish = job.create_time + job.pending_seconds + job.running_seconds
    expire = job.create_time + job.ttl_seconds
    if expire < finish:
        return EXPIRED, expire
    return (FAILED if job.planned_failure else SUCCEEDED), finish


def status(job: JobRecord, now: float) -> JobStatus:
    """The job as seen at `now` (call `advance` first so that ended jobs are settled)."""
    n = job.request_count
    if job.end_state is not None and job.end_time is not None:
        pending = n - job.succeeded - job.failed
        return JobStatus(job.end_state, job.end_time, job.end_time, n, job.succeeded, job.failed, pending)
    state, at = natural_end(job)
    if at <= now:  # ended, but not yet settled by `advance` (e.g. looked at after the server stopped)
        done, failed = _progress(job, at) if state != FAILED else (n, n)
        return JobStatus(state, at, at, n, done - failed, failed, n - done)
    start = job.create_time + job.pending_seconds
    if now < start:
        return JobStatus(PENDING, job.create_time, None, n, 0, 0, n)
    if job.flat_stats:  # a real RUNNING job has been seen with no progress at all (field report)
        return JobStatus(RUNNING, start, None, n, 0, 0, n)
    done, failed = _progress(job, now)
    return JobStatus(RUNNING, start, None, n, done - failed, failed, n - done)


def advance(store: Store, now: float) -> None:
    """Settle every job whose natural end has come (writing its results); caller holds the lock."""
    for name in list(store.active):
        job = store.jobs[name]
        state, at = natural_end(job)
        if at <= now:
            end(store, job, state, at)
    store.sweep(now)


def end(store: Store, job: JobRecord, state: str, at: float, message: str | None = None) -> None:
    """End a job now or at its natural end: outputs for SUCCEEDED, an error for the others."""
    job.end_state, job.end_time = state, at
    store.active.discard(job.name)
    if state == SUCCEEDED:
        _write_outputs(store, job, at)
    elif state == FAILED:
        job.end_error = {"code": 13, "message": message or FAILED_MESSAGE}
        job.succeeded, job.failed = 0, job.request_count
    else:
        done, failed = _progress(job, at)
        job.succeeded, job.failed = done - failed, failed
        if state == CANCELLED:
            job.end_error = {"code": 1, "message": message or CANCELLED_MESSAGE}
        else:
            hours = job.ttl_seconds / 3600
            job.end_error = {"code": 4, "message": message or (
                f"The batch job expired: it was pending or running for more than {hours:g} hours.")}
            if job.partial_output_on_expiry and done > 0 and job.input_path is not None:
                _write_outputs(store, job, at, limit=done)
    if job.input_path is not None:
        job.input_path.unlink(missing_ok=True)


def _write_outputs(store: Store, job: JobRecord, at: float, limit: int | None = None) -> None:
    model_id = job.model.removeprefix("models/")
    if job.inline_requests is not None:
        items, job.succeeded, job.failed = answers.inline_results(
            job.inline_requests, job.name, model_id, _error_lines(job), job.embedding_dimensions)
        job.inline_responses = items
        return
    assert job.input_path is not None
    if job.inline_output and limit is None:
        items, job.succeeded, job.failed = answers.file_results_inline(
            job.input_path, job.name, model_id, _error_lines(job), job.embedding_dimensions)
        job.inline_responses = items
        return
    target = store.new_path("result")
    job.succeeded, job.failed, size, sha = answers.write_file_results(
        job.input_path, target, job.name, model_id, _error_lines(job), limit, job.embedding_dimensions)
    job.result_file = f"files/batch-{job.job_id}"
    store.add_file(FileRecord(
        serial=store.next_serial(), name=job.result_file, display_name=None, mime_type="application/jsonl",
        size_bytes=size, sha256_hex=sha, create_time=at, expiration_time=at + job.file_ttl,
        source="GENERATED", path=target, available_at=at + job.result_delay,
    ))


def output(job: JobRecord) -> dict[str, Any] | None:
    """`metadata.output` of an ended job: SUCCEEDED, or EXPIRED with a partial output."""
    if job.end_state != SUCCEEDED and not (job.end_state == EXPIRED and job.result_file):
        return None
    if job.inline_responses is not None:
        return {"inlinedResponses": {"inlinedResponses": job.inline_responses}}
    return {"responsesFile": job.result_file}
