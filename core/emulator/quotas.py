"""The three batch quotas (concurrent jobs, enqueued tokens per model, creates per minute) and their 429s.

Token estimate of one request line: `ceil(len(line_bytes) / 4)`, where line_bytes is the line without its
terminator (`\\n` or `\\r\\n`); whitespace-only lines are not requests and cost nothing. Inline requests cost
`ceil(len(compact JSON of the item) / 4)`. The engine uses the same rule.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from .errors import HELP_DETAIL, RATE_LIMITS_URL, ApiError
from .settings import EmulatorSettings


def estimate_tokens(line: bytes) -> int:
    """Tokens of one JSONL request line: ceil(bytes without the line terminator / 4)."""
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    return math.ceil(len(line) / 4)


class LineCounter:
    """Counts request lines and their token estimate while a file's bytes stream past, chunk by chunk."""

    def __init__(self) -> None:
        self.requests = 0
        self.tokens = 0
        self._length = 0
        self._blank = True
        self._ends_with_cr = False

    def feed(self, data: bytes) -> None:
        """Account for the next bytes of the file."""
        start = 0
        while True:
            newline = data.find(b"\n", start)
            piece = data[start:] if newline < 0 else data[start:newline]
            if piece:
                self._length += len(piece)
                self._ends_with_cr = piece.endswith(b"\r")
                if self._blank and piece.strip():
                    self._blank = False
            if newline < 0:
                return
            self._end_line()
            start = newline + 1

    def finish(self) -> None:
        """Account for a last line that has no newline."""
        self._end_line()

    def _end_line(self) -> None:
        if not self._blank:
            self.requests += 1
            self.tokens += math.ceil((self._length - (1 if self._ends_with_cr else 0)) / 4)
        self._length = 0
        self._blank = True
        self._ends_with_cr = False


@dataclass(frozen=True, slots=True)
class QuotaSpec:
    """How one quota names itself in a QuotaFailure, and the journal note of its 429."""

    note: str
    quota_id: str
    metric: str
    per_model: bool


CONCURRENT_JOBS = QuotaSpec("quota:concurrent-jobs", "BatchConcurrentJobsPerProject",
                            "generativelanguage.googleapis.com/batch_concurrent_jobs", per_model=False)
ENQUEUED_TOKENS = QuotaSpec("quota:enqueued-tokens", "BatchEnqueuedTokensPerModelPerProject",
                            "generativelanguage.googleapis.com/batch_enqueued_tokens", per_model=True)
CREATES_PER_MINUTE = QuotaSpec("quota:creates-per-minute", "BatchCreateRequestsPerMinutePerProject",
                               "generativelanguage.googleapis.com/batch_create_requests", per_model=False)
STORAGE = QuotaSpec("quota:storage", "FileStorageBytesPerProject",
                    "generativelanguage.googleapis.com/file_storage_bytes", per_model=False)


def duration(seconds: float) -> str:
    """A proto Duration as JSON: "12s" or "12.5s" (rounded up to the millisecond)."""
    millis = max(0, math.ceil(seconds * 1000))
    whole, frac = divmod(millis, 1000)
    return f"{whole}s" if frac == 0 else f"{whole}.{frac:03d}".rstrip("0") + "s"


GENERIC_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more information on "
    f"this error, head to: {RATE_LIMITS_URL}. To monitor your current usage, head to: https://ai.dev/rate-limit. "
)


def quota_error(spec: QuotaSpec, limit: int, model: str | None, retry_after: float | None = None,
                details: str = "full") -> ApiError:
    """429 RESOURCE_EXHAUSTED. `details` (settings.quota_error_details): "full" names the quota (QuotaFailure,
    and RetryInfo when `retry_after` is given); "help" is the generic message with one Help detail, as batch
    429s are recorded; "none" is the generic message alone. The journal note names the quota in every case."""
    if details != "full":
        return ApiError(429, "RESOURCE_EXHAUSTED", GENERIC_QUOTA_MESSAGE,
                        details=[HELP_DETAIL] if details == "help" else None, note=spec.note)
    message = GENERIC_QUOTA_MESSAGE + (
        f"\n* Quota exceeded for metric: {spec.metric}, limit: {limit}" + (f", model: {model}" if model else ""))
    dimensions = {"location": "global"}
    if model:
        dimensions["model"] = model
    found: list[dict[str, object]] = [
        HELP_DETAIL,
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaMetric": spec.metric, "quotaId": spec.quota_id,
                         "quotaDimensions": dimensions, "quotaValue": str(limit)}]},
    ]
    if retry_after is not None:
        message += f"\nPlease retry in {retry_after:.6f}s."
        found.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": duration(retry_after)})
    return ApiError(429, "RESOURCE_EXHAUSTED", message, details=found, note=spec.note)


class CreateWindow:
    """Accepted creates of the last 60 s (a sliding window); not thread-safe, the store's lock guards it."""

    WINDOW = 60.0

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def check(self, limit: int | None, model: str, now: float, window: float = WINDOW,
              details: str = "full") -> None:
        """Raise the creates-per-minute 429 (RetryInfo when `details` is full) when the window is full."""
        while self._times and self._times[0] <= now - window:
            self._times.popleft()
        if limit and len(self._times) >= limit:
            wait = self._times[len(self._times) - limit] + window - now
            raise quota_error(CREATES_PER_MINUTE, limit, model, retry_after=max(wait, 0.001), details=details)

    def accepted(self, now: float) -> None:
        """Count one accepted create."""
        self._times.append(now)


def check_capacity(settings: EmulatorSettings, *, model: str, job_tokens: int, unfinished_jobs: int,
                   enqueued_tokens: int) -> None:
    """Raise the concurrent-jobs or enqueued-tokens 429 (no RetryInfo: only finishing jobs frees room)."""
    if settings.max_concurrent_jobs and unfinished_jobs >= settings.max_concurrent_jobs:
        raise quota_error(CONCURRENT_JOBS, settings.max_concurrent_jobs, model,
                          details=settings.quota_error_details)
    limit = settings.enqueued_token_limit
    if limit and enqueued_tokens + job_tokens > limit:
        raise quota_error(ENQUEUED_TOKENS, limit, model, details=settings.quota_error_details)
