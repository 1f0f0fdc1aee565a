"""What the engine needs of any batch service: remote jobs and files, their states, the error kinds, and the
`BatchBackend` protocol the engine, rebuild, adopt and cleanup are typed to.

Pure: no SDK, no wire strings. A service's own spellings (its state names, its resource names, how long it keeps
an upload) stay in its backend module (core/gateway.py for the Gemini Developer API); core/compose.py picks one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Protocol


class Quota(StrEnum):
    """Which server quota a 429 (or our own admission) is about."""

    CONCURRENT_JOBS = "concurrent-jobs"
    ENQUEUED_TOKENS = "enqueued-tokens"
    CREATES_PER_MINUTE = "creates-per-minute"
    UNKNOWN = "unknown"


class JobState(Enum):
    """A batch job's state, as the engine tells them apart; a backend maps its service's states onto these."""

    UNSPECIFIED = "unspecified"  # the service did not say
    QUEUED = "queued"
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    OTHER = "other"  # a state this program does not know (cancelling, paused, ...): not ended, not live either

    @property
    def ended(self) -> bool:
        """True once the service will not change a job in this state any more."""
        return self in _ENDED


_ENDED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED})


class FileState(Enum):
    """An uploaded file's state: a job may be created from an ACTIVE file only."""

    UNSPECIFIED = "unspecified"
    PROCESSING = "processing"
    ACTIVE = "active"
    FAILED = "failed"


class GatewayError(Exception):
    """Base of the errors the engine sees from a backend; `str()` never contains the API key."""

    retry_after: float | None = None


class RateLimited(GatewayError):
    """HTTP 429: the named quota is exhausted; nothing was created."""

    def __init__(self, message: str, quota: Quota, retry_after: float | None) -> None:
        super().__init__(message)
        self.quota = quota
        self.retry_after = retry_after


class Transient(GatewayError):
    """A failure that did not take effect (or is safe to repeat): try again later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Permanent(GatewayError):
    """A clear refusal (4xx other than 429): repeating the same call will not help."""

    def __init__(self, message: str, code: int, status: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class Ambiguous(GatewayError):
    """A create whose outcome is unknown (timeout, reset, 5xx): the job may exist on the server."""


class Unusable(Permanent):
    """The run cannot go on as configured (a refused key, a redirect, a wrong base URL, no accepted MIME type):
    every further call would fail the same way, so the engine stops with this message."""


class UploadRefused(Permanent):
    """The server refused this upload for a reason of the file itself (4xx): repeating it will not help."""


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """An uploaded file as the service reports it."""

    name: str
    display_name: str | None
    size_bytes: int | None
    sha256_hex: str | None
    expires_at: float | None  # unix time; the service's own expiry, else its backend's default lifetime
    state: FileState | None  # None when the server did not say
    error: str | None = None  # why a FAILED file failed, as the server put it
    create_time: float | None = None  # unix time; with expires_at, the lifetime the server gave the file

    @property
    def lifetime(self) -> float | None:
        """Seconds between the file's creation and its expiry, when both are known."""
        if self.create_time is None or self.expires_at is None:
            return None
        return max(0.0, self.expires_at - self.create_time)

    @property
    def usable(self) -> bool:
        """ACTIVE, or the server did not say: a job may be created from it."""
        return self.state in (None, FileState.ACTIVE)


@dataclass(frozen=True, slots=True)
class RemoteJob:
    """A batch job as the service reports it, with its request counts when the service gave them."""

    name: str
    display_name: str | None
    state: JobState
    result_file: str | None
    request_count: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    pending: int | None = None
    error: str | None = None
    create_time: float | None = None  # unix time: when the service made the job
    end_time: float | None = None  # unix time, of an ended job: create-to-end is the duration
    input_file: str | None = None  # the uploaded file the job was created from
    results_inline: bool = False  # its output comes with the job, not in a result file
    state_text: str = ""  # the state in the service's own words (logs and the checkpoint keep it)

    @property
    def ended(self) -> bool:
        """True once the server will not change this job any more."""
        return self.state.ended

    @property
    def state_label(self) -> str:
        """The state as the service spelled it (the enum member's name when it did not)."""
        return self.state_text or self.state.name


RetryLogger = Callable[[str], None]


class BatchBackend(Protocol):
    """A batch service as the engine, rebuild, adopt and cleanup use it (one model, one account).

    Reads (get, list, download, upload) are retried inside the backend; `create` is sent exactly once and raises
    `Ambiguous` when its outcome is unknown. Errors are the `GatewayError` kinds above.
    """

    list_page_size: int  # jobs per page of `list_jobs_page`
    on_retry: RetryLogger | None  # told of each retry of a read; set once, by the engine that owns the backend

    async def aclose(self) -> None:
        """Release connections and files."""
        ...

    async def model_known(self) -> bool:
        """True when the service knows the run's model."""
        ...

    async def model_names(self) -> list[str]:
        """The model ids the service offers for batch jobs (empty when it will not say)."""
        ...

    async def model_job_kinds(self) -> set[str]:
        """The kinds of batch job ("generate", "embed") the run's model offers (empty when it will not say)."""
        ...

    async def upload(self, path: Path, display_name: str) -> RemoteFile:
        """Upload one input file; `UploadRefused` when the service refuses the file itself."""
        ...

    async def get_file(self, name: str) -> RemoteFile | None:
        """The file, or None when the service no longer has it."""
        ...

    async def list_files(self) -> list[RemoteFile]:
        """Every uploaded file of the account."""
        ...

    async def delete_file(self, name: str) -> None:
        """Delete an uploaded file; a file already gone is fine."""
        ...

    async def download(self, file_name: str, destination: Path) -> None:
        """Write a result file to `destination`; `Permanent` with code 403 or 404 when the service lacks it."""
        ...

    async def save_inline_results(self, job_name: str, destination: Path) -> int:
        """Write a job's inline results to `destination` as result-file lines; returns how many."""
        ...

    async def create(self, file_name: str, display_name: str) -> RemoteJob:
        """Create a batch job from an uploaded file: sent once, never retried."""
        ...

    async def create_embeddings(self, file_name: str, display_name: str) -> RemoteJob:
        """Create an embeddings batch job from an uploaded file: sent once, never retried."""
        ...

    async def get_job(self, name: str) -> RemoteJob | None:
        """One job, or None when the service does not know it."""
        ...

    async def list_jobs_page(self, page_token: str | None) -> tuple[list[RemoteJob], str | None]:
        """One page of the account's jobs and the next page's token (None after the last)."""
        ...

    async def cancel(self, name: str) -> None:
        """Ask the service to cancel a job (best effort on its side)."""
        ...
