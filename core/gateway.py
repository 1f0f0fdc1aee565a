"""The one module that talks to the Gemini API, through the google-genai SDK (async client, v1beta).

It turns SDK and transport errors into the engine's own: rate-limited, transient, permanent, ambiguous.
Calls that are safe to repeat (get, list, download, upload) are retried here with tenacity; creates never are.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .events import Quota

if TYPE_CHECKING:
    from google.genai import errors as genai_errors
    from google.genai import types

log = logging.getLogger(__name__)

API_VERSION = "v1beta"
JSONL_MIME = "application/jsonl"
LIST_PAGE_SIZE = 100

T = TypeVar("T")


def _import_sdk() -> None:
    """Import google-genai and its HTTP client (~0.5 s): deferred to the first API call, so that a restart loads
    its checkpoint (and the TUI paints) without waiting for it, and done in a worker thread by `Gateway._ready`."""
    import httpx2  # noqa: F401
    from google import genai  # noqa: F401
    from google.genai import errors, types  # noqa: F401


def _types() -> Any:
    from google.genai import types

    return types


def _errors() -> Any:
    from google.genai import errors

    return errors


def _httpx() -> Any:
    import httpx2

    return httpx2


class GatewayError(Exception):
    """Base of the errors the engine sees; `str()` never contains the API key."""

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


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """An uploaded file as the Files API reports it."""

    name: str
    display_name: str | None
    size_bytes: int | None
    sha256_hex: str | None
    expires_at: float | None
    state: str | None


@dataclass(frozen=True, slots=True)
class RemoteJob:
    """A batch job as the Batches API reports it, with batchStats when the raw JSON carried them."""

    name: str
    display_name: str | None
    state: str  # "JOB_STATE_…"
    result_file: str | None
    request_count: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    pending: int | None = None
    error: str | None = None
    create_time: float | None = None  # unix time, from metadata.createTime
    end_time: float | None = None  # unix time, from metadata.endTime (ended jobs): create-to-end is the duration
    input_file: str | None = None  # "files/…" the job was created from (metadata.inputConfig.fileName)

    @property
    def ended(self) -> bool:
        """True once the server will not change this job any more."""
        return self.state in ENDED_JOB_STATES


ENDED_JOB_STATES = frozenset(
    {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
)
_BATCH_TO_JOB_STATE = {
    "BATCH_STATE_UNSPECIFIED": "JOB_STATE_UNSPECIFIED",
    "BATCH_STATE_PENDING": "JOB_STATE_PENDING",
    "BATCH_STATE_RUNNING": "JOB_STATE_RUNNING",
    "BATCH_STATE_SUCCEEDED": "JOB_STATE_SUCCEEDED",
    "BATCH_STATE_FAILED": "JOB_STATE_FAILED",
    "BATCH_STATE_CANCELLED": "JOB_STATE_CANCELLED",
    "BATCH_STATE_EXPIRED": "JOB_STATE_EXPIRED",
}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)s\s*$")


def classify_quota(text: str) -> Quota:
    """Which quota a QuotaFailure id/metric (or a message) names."""
    low = text.lower()
    if "concurrent" in low:
        return Quota.CONCURRENT_JOBS
    if "token" in low:
        return Quota.ENQUEUED_TOKENS
    if "minute" in low or "create_requests" in low or "requests" in low:
        return Quota.CREATES_PER_MINUTE
    return Quota.UNKNOWN


def parse_rate_limit(error: genai_errors.APIError) -> RateLimited:
    """Read QuotaFailure and RetryInfo (and Retry-After) out of a 429 when present; require neither."""
    quota = Quota.UNKNOWN
    retry_after: float | None = None
    body = error.details if isinstance(error.details, dict) else {}
    details = body.get("error", {}).get("details", []) if isinstance(body.get("error"), dict) else []
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("google.rpc.QuotaFailure"):
            for violation in detail.get("violations", []) or []:
                named = " ".join(str(violation.get(k, "")) for k in ("quotaId", "quotaMetric"))
                if (found := classify_quota(named)) is not Quota.UNKNOWN:
                    quota = found
                    break
        elif kind.endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                retry_after = float(match.group(1))
    if retry_after is None:
        retry_after = _retry_after_header(error)
    return RateLimited(f"429 {error.status or 'RESOURCE_EXHAUSTED'}: {_short(error.message)}", quota, retry_after)


def _retry_after_header(error: genai_errors.APIError) -> float | None:
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _short(text: str | None, limit: int = 300) -> str:
    text = (text or "").replace("\n", " ").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _timestamp(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    return None


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def _rfc3339(value: Any) -> float | None:
    """Unix time of a proto3 JSON timestamp ("2025-12-10T18:27:01.407650525Z"); None when absent or odd."""
    match = _RFC3339.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    base, fraction, zone = match.groups()
    try:
        seconds = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)).timestamp()
    except ValueError:
        return None
    return seconds + (float("0." + fraction) if fraction else 0.0)


def _sha256_hex(value: str | None) -> str | None:
    """The Files API gives sha256Hash as base64 of the digest; accept hex too."""
    if not value:
        return None
    if re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return value.lower()
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    if len(raw) == 32:
        return raw.hex()
    if re.fullmatch(rb"[0-9a-fA-F]{64}", raw):
        return raw.decode().lower()
    return None


def _remote_file(f: types.File) -> RemoteFile:
    return RemoteFile(
        name=f.name or "",
        display_name=f.display_name,
        size_bytes=f.size_bytes,
        sha256_hex=_sha256_hex(f.sha256_hash),
        expires_at=_timestamp(f.expiration_time),
        state=f.state.name if f.state is not None else None,
    )


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def job_from_operation(op: dict[str, Any]) -> RemoteJob:
    """A RemoteJob from the raw Operation JSON (which, unlike the SDK's BatchJob, keeps batchStats)."""
    meta = op.get("metadata") or {}
    stats = meta.get("batchStats") or {}
    output = meta.get("output") or {}
    state = str(meta.get("state", "BATCH_STATE_UNSPECIFIED"))
    error = op.get("error")
    return RemoteJob(
        name=str(op.get("name") or meta.get("name") or ""),
        display_name=meta.get("displayName"),
        state=_BATCH_TO_JOB_STATE.get(state, state),
        result_file=output.get("responsesFile"),
        request_count=_int(stats.get("requestCount")),
        succeeded=_int(stats.get("successfulRequestCount", 0)),
        failed=_int(stats.get("failedRequestCount", 0)),
        pending=_int(stats.get("pendingRequestCount", 0)),
        error=_short(error.get("message")) if isinstance(error, dict) else None,
        create_time=_rfc3339(meta.get("createTime")),
        end_time=_rfc3339(meta.get("endTime")),
        input_file=(meta.get("inputConfig") or {}).get("fileName"),
    )


def _job_from_sdk(job: types.BatchJob) -> RemoteJob:
    return RemoteJob(
        name=job.name or "",
        display_name=job.display_name,
        state=job.state.name if job.state is not None else "JOB_STATE_UNSPECIFIED",
        result_file=job.dest.file_name if job.dest is not None else None,
        create_time=_timestamp(job.create_time),
        end_time=_timestamp(job.end_time),
    )


def _translate(exc: BaseException, *, may_have_taken_effect: bool) -> GatewayError:
    """Map an SDK or transport exception onto the engine's error kinds."""
    if isinstance(exc, GatewayError):
        return exc
    genai_errors, httpx2 = _errors(), _httpx()
    if isinstance(exc, genai_errors.APIError):
        code = int(exc.code or 0)
        message = f"{code} {exc.status or ''}: {_short(exc.message)}".strip()
        if code == 429:
            return parse_rate_limit(exc)
        if 400 <= code < 500 and code != 408:
            return Permanent(message, code, exc.status)
        if may_have_taken_effect:
            return Ambiguous(message)
        return Transient(message, _retry_after_header(exc))
    if isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout | httpx2.PoolTimeout):
        return Transient(f"cannot connect: {type(exc).__name__}")  # the request never left
    if isinstance(exc, httpx2.TransportError | TimeoutError | ConnectionError):
        text = f"no answer: {type(exc).__name__}"
        return Ambiguous(text) if may_have_taken_effect else Transient(text)
    if isinstance(exc, KeyError | ValueError) and not may_have_taken_effect:
        # The SDK raises KeyError('file') / ValueError on a malformed upload answer (python-genai #1590).
        return Transient(f"malformed answer: {type(exc).__name__}: {_short(str(exc))}")
    raise exc


class _WaitForServerHint(wait_exponential_jitter):
    """Exponential backoff with jitter, but never shorter than the server's RetryInfo / Retry-After."""

    def __call__(self, retry_state: RetryCallState) -> float:
        backoff = super().__call__(retry_state)
        outcome = retry_state.outcome
        hint = getattr(outcome.exception(), "retry_after", None) if outcome is not None else None
        return max(backoff, float(hint)) if hint else backoff


RetryLogger = Callable[[str], None]


class Gateway:
    """Async access to Files and Batches for one model; the API key stays inside the SDK client."""

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 6,
        retry_max_wait: float = 120.0,
        on_retry: RetryLogger | None = None,
    ) -> None:
        self.model = model
        self._timeout = timeout
        self._max_retries = max(1, max_retries)
        self._retry_max_wait = retry_max_wait
        self.on_retry = on_retry
        self._base_url = base_url
        self._api_key: str | None = api_key  # handed to the SDK client when it is made, then dropped
        self._http: Any = None
        self._client: Any = None

    def _make_client(self) -> None:
        import httpx2
        from google import genai
        from google.genai import types

        # Our own httpx2 client: the same transport with or without aiohttp installed
        # (the aiohttp path re-sends a request after a dropped connection, which could duplicate a create).
        self._http = httpx2.AsyncClient(timeout=self._timeout, follow_redirects=True)
        options = types.HttpOptions(
            api_version=API_VERSION,
            timeout=int(self._timeout * 1000),
            httpx_async_client=self._http,
        )
        if self._base_url:
            options.base_url = self._base_url
        self._client = genai.Client(api_key=self._api_key, http_options=options)
        self._api_key = None

    @property
    def _aio(self) -> Any:
        if self._client is None:
            self._make_client()
        return self._client.aio

    async def _ready(self) -> None:
        """Make the SDK client on first use, its import in a worker thread (the event loop keeps running)."""
        if self._client is None:
            await asyncio.to_thread(_import_sdk)
            if self._client is None:
                self._make_client()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        if self._http is not None:
            await self._http.aclose()

    async def _safe(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run a call that is safe to repeat, retrying transient failures and 429s with backoff."""

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.upcoming_sleep
            if self.on_retry is not None:
                self.on_retry(f"{what}: {exc}; retry {state.attempt_number} in {wait:.1f}s")

        await self._ready()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_retries),
            wait=_WaitForServerHint(initial=1.0, max=self._retry_max_wait, jitter=1.0),
            retry=retry_if_exception_type((Transient, RateLimited)),
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                try:
                    return await call()
                except Exception as exc:
                    raise _translate(exc, may_have_taken_effect=False) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- files -------------------------------------------------------------------------------

    async def upload(self, path: Path, display_name: str) -> RemoteFile:
        """Upload a JSONL file (resumable, streamed in 8 MiB chunks by the SDK)."""

        async def call() -> RemoteFile:
            uploaded = await self._aio.files.upload(
                file=str(path),
                config=_types().UploadFileConfig(display_name=display_name, mime_type=JSONL_MIME),
            )
            return _remote_file(uploaded)

        return await self._safe(f"upload {path.name}", call)

    async def get_file(self, name: str) -> RemoteFile | None:
        """The file, or None when the server no longer has it."""
        try:
            return await self._safe(f"get {name}", lambda: self._file_get(name))
        except Permanent as exc:
            if exc.code in (403, 404):
                return None
            raise

    async def _file_get(self, name: str) -> RemoteFile:
        return _remote_file(await self._aio.files.get(name=name))

    async def list_files(self) -> list[RemoteFile]:
        """Every file of the project (paged)."""

        async def call() -> list[RemoteFile]:
            pager = await self._aio.files.list(config=_types().ListFilesConfig(page_size=100))
            return [_remote_file(f) async for f in pager]

        return await self._safe("list files", call)

    async def delete_file(self, name: str) -> None:
        """Delete an uploaded file; a file already gone is fine."""
        try:
            await self._safe(f"delete {name}", lambda: self._aio.files.delete(name=name))
        except Permanent as exc:
            if exc.code != 404:
                raise

    async def download(self, file_name: str, destination: Path) -> None:
        """Stream a result file to `destination` (which the caller renames into place when checked)."""

        async def call() -> None:
            await self._aio.files.download(file=file_name, destination=str(destination))

        await self._safe(f"download {file_name}", call)

    # ---- batches -----------------------------------------------------------------------------

    async def create(self, file_name: str, display_name: str) -> RemoteJob:
        """Create a batch job from an uploaded file: sent exactly once, never retried here."""
        await self._ready()
        types = _types()
        config = types.CreateBatchJobConfig(
            display_name=display_name,
            http_options=types.HttpOptions(retry_options=types.HttpRetryOptions(attempts=1)),
        )
        try:
            job = await self._aio.batches.create(model=self.model, src=file_name, config=config)
        except Exception as exc:
            raise _translate(exc, may_have_taken_effect=True) from None
        return _job_from_sdk(job)

    async def get_job(self, name: str) -> RemoteJob | None:
        """One job with its batchStats, or None when the server does not know it."""
        try:
            return await self._safe(f"get {name}", lambda: self._raw_get_job(name))
        except Permanent as exc:
            if exc.code == 404:
                return None
            raise

    async def _raw_get_job(self, name: str) -> RemoteJob:
        response = await self._aio._api_client.async_request("get", name, {})
        return job_from_operation(json.loads(response.body or "{}"))

    async def list_jobs_page(self, page_token: str | None) -> tuple[list[RemoteJob], str | None]:
        """One page of batches.list (newest first), raw so that batchStats come along."""
        query: dict[str, Any] = {"pageSize": LIST_PAGE_SIZE}
        if page_token:
            query["pageToken"] = page_token

        async def call() -> tuple[list[RemoteJob], str | None]:
            response = await self._aio._api_client.async_request("get", f"batches?{urlencode(query)}", {})
            body = json.loads(response.body or "{}")
            jobs = [job_from_operation(op) for op in body.get("operations", []) or []]
            return jobs, body.get("nextPageToken") or None

        return await self._safe("list batches", call)

    async def cancel(self, name: str) -> None:
        """Ask the server to cancel a job (best effort on its side)."""
        await self._safe(f"cancel {name}", lambda: self._aio.batches.cancel(name=name))
