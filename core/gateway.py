"""The Gemini Developer API backend (a core.backend.BatchBackend), through the google-genai SDK (async, v1beta).

The only module that knows the service's spellings: JOB_STATE_* / BATCH_STATE_* names, `files/...` and
`batches/...` names, the 48-hour upload lifetime. It turns SDK and transport errors into the engine's own:
rate-limited, transient, permanent, ambiguous.
Calls that are safe to repeat (get, list, download, upload) are retried here with tenacity; creates never are.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import warnings
from collections.abc import Awaitable, Callable
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

from .api_trace import ApiTrace
from .backend import (
    Ambiguous,
    FileState,
    GatewayError,
    JobState,
    Permanent,
    Quota,
    RateLimited,
    RemoteFile,
    RemoteJob,
    RetryLogger,
    Transient,
    Unusable,
    UploadRefused,
)
from .config import API_VERSION, Settings

if TYPE_CHECKING:
    from google.genai import errors as genai_errors
    from google.genai import types

log = logging.getLogger(__name__)

JSONL_MIME = "application/jsonl"
# The service has refused each of these at some time (python-genai #1547: "jsonl"; google-gemini/cookbook #1008:
# "application/jsonl"); an upload refused for its MIME type tries the next one once, and the one that works is kept.
JSONL_MIME_TYPES = ("application/jsonl", "jsonl", "text/plain")
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


def _experimental_warning() -> type[Warning]:
    from google.genai import _common

    return getattr(_common, "ExperimentalWarning", UserWarning)


def _httpx() -> Any:
    import httpx2

    return httpx2


# The service's job states (the SDK's JobState names; batches.get/list say BATCH_STATE_* and are renamed).
_JOB_STATES = {
    "JOB_STATE_UNSPECIFIED": JobState.UNSPECIFIED,
    "JOB_STATE_QUEUED": JobState.QUEUED,
    "JOB_STATE_PENDING": JobState.PENDING,
    "JOB_STATE_RUNNING": JobState.RUNNING,
    "JOB_STATE_SUCCEEDED": JobState.SUCCEEDED,
    "JOB_STATE_FAILED": JobState.FAILED,
    "JOB_STATE_CANCELLED": JobState.CANCELLED,
    "JOB_STATE_EXPIRED": JobState.EXPIRED,
}
_FILE_STATES = {"PROCESSING": FileState.PROCESSING, "ACTIVE": FileState.ACTIVE, "FAILED": FileState.FAILED}
# How long the Files API keeps an upload; used only when the server gives no expirationTime (its own wins).
FILE_LIFETIME = 48 * 3600.0
_EMBED_METHODS = frozenset({"asyncBatchEmbedContent", "embedContent"})  # what models.get lists for them
_GENERATE_METHODS = frozenset({"batchGenerateContent", "generateContent"})
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


def job_state(text: str) -> JobState:
    """The engine's JobState of a service state name (JOB_STATE_* or BATCH_STATE_*)."""
    return _JOB_STATES.get(_BATCH_TO_JOB_STATE.get(text, text), JobState.OTHER)


def file_state(text: str | None) -> FileState | None:
    """The engine's FileState of a Files API state name; None when the server did not say."""
    return None if text is None else _FILE_STATES.get(text, FileState.UNSPECIFIED)


def _expiry(expires_at: float | None, create_time: float | None) -> float | None:
    """The server's expirationTime; when it gave none, the Files API's documented lifetime from createTime."""
    if expires_at is None and create_time is not None:
        return create_time + FILE_LIFETIME
    return expires_at


def _remote_file(f: types.File) -> RemoteFile:
    error = f.error
    created = _timestamp(f.create_time)
    return RemoteFile(
        name=f.name or "",
        display_name=f.display_name,
        size_bytes=f.size_bytes,
        sha256_hex=_sha256_hex(f.sha256_hash),
        expires_at=_expiry(_timestamp(f.expiration_time), created),
        state=file_state(f.state.name if f.state is not None else None),
        error=_short(f"{error.code or ''} {error.message or ''}".strip()) or None if error is not None else None,
        create_time=created,
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
    text = _BATCH_TO_JOB_STATE.get(state, state)
    error = op.get("error")
    return RemoteJob(
        name=str(op.get("name") or meta.get("name") or ""),
        display_name=meta.get("displayName"),
        state=job_state(text),
        state_text=text,
        result_file=output.get("responsesFile"),
        results_inline="inlinedResponses" in output,
        request_count=_int(stats.get("requestCount")),
        succeeded=_int(stats.get("successfulRequestCount", 0)),
        failed=_int(stats.get("failedRequestCount", 0)),
        pending=_int(stats.get("pendingRequestCount", 0)),
        error=_short(error.get("message")) if isinstance(error, dict) else None,
        create_time=_rfc3339(meta.get("createTime")),
        end_time=_rfc3339(meta.get("endTime")),
        input_file=(meta.get("inputConfig") or {}).get("fileName"),
    )


def inline_result_lines(op: dict[str, Any]) -> list[dict[str, Any]]:
    """The inline responses of a job's raw Operation as result-file lines: `{"key", "response"}` or
    `{"key", "error"}` (the key from the item's metadata when the service echoed one)."""
    output = (op.get("metadata") or {}).get("output") or {}
    outer = output.get("inlinedResponses") or {}
    items = outer.get("inlinedResponses", []) if isinstance(outer, dict) else outer
    lines: list[dict[str, Any]] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        line: dict[str, Any] = {}
        metadata = item.get("metadata")
        if isinstance(metadata, dict) and "key" in metadata:
            line["key"] = metadata["key"]
        for part in ("response", "error"):
            if part in item:
                line[part] = item[part]
        lines.append(line)
    return lines


def _job_from_sdk(job: types.BatchJob) -> RemoteJob:
    text = job.state.name if job.state is not None else "JOB_STATE_UNSPECIFIED"
    return RemoteJob(
        name=job.name or "",
        display_name=job.display_name,
        state=job_state(text),
        state_text=text,
        result_file=job.dest.file_name if job.dest is not None else None,
        results_inline=bool(job.dest is not None and job.dest.inlined_responses),
        create_time=_timestamp(job.create_time),
        end_time=_timestamp(job.end_time),
    )


_KEY_REFUSED = ("API_KEY_INVALID", "API key not valid", "API key expired", "unregistered callers")


def _redirect_target(exc: genai_errors.APIError) -> str:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    location = headers.get("location") if headers is not None else None
    return str(location) if location else "another address"


def _translate(exc: BaseException, *, may_have_taken_effect: bool, about_file: bool = False) -> GatewayError:
    """Map an SDK or transport exception onto the engine's error kinds.

    `about_file`: the call names one file (get, delete, download), where 403 and 404 mean "no such file"
    (the service answers 403 PERMISSION_DENIED for a missing or expired file: python-genai #1218)."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, ExceptionGroup) and exc.exceptions:  # the transport's connect attempts, grouped
        return _translate(exc.exceptions[0], may_have_taken_effect=may_have_taken_effect, about_file=about_file)
    genai_errors, httpx2 = _errors(), _httpx()
    if isinstance(exc, genai_errors.APIError):
        code = int(exc.code or 0)
        message = f"{code} {exc.status or ''}: {_short(exc.message)}".strip()
        if code == 429:
            return parse_rate_limit(exc)
        if 300 <= code < 400:  # redirects are not followed: the API key must not travel to another origin
            return Unusable(f"{code}: the server redirects to {_redirect_target(exc)}; API calls do not follow "
                            "redirects (the API key would go along): point --base-url at the final address",
                            code, exc.status)
        if code == 401 or any(mark in str(exc.details) for mark in _KEY_REFUSED) or (
                code == 403 and not about_file):
            return Unusable(f"the API key was refused: {message}", code, exc.status)
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
    if isinstance(exc, httpx2.InvalidURL | httpx2.UnsupportedProtocol | OverflowError):
        return Unusable(f"the base URL cannot be used: {type(exc).__name__}: {_short(str(exc))}", 0)
    if isinstance(exc, UnicodeError):
        return Unusable(f"a request could not be encoded (is the API key plain ASCII?): {type(exc).__name__}", 0)
    if isinstance(exc, KeyError | ValueError) and not may_have_taken_effect:
        # A malformed answer: the SDK raises KeyError / ValueError. Repeating the call gets the same answer
        # (the advice of python-genai #1590 to retry it was withdrawn), so it is permanent for this call.
        return Permanent(f"malformed answer: {type(exc).__name__}: {_short(str(exc))}", 0)
    raise exc


class _WaitForServerHint(wait_exponential_jitter):
    """Exponential backoff with jitter, but never shorter than the server's RetryInfo / Retry-After."""

    def __call__(self, retry_state: RetryCallState) -> float:
        backoff = super().__call__(retry_state)
        outcome = retry_state.outcome
        hint = getattr(outcome.exception(), "retry_after", None) if outcome is not None else None
        return max(backoff, float(hint)) if hint else backoff


class Gateway:
    """The Gemini Developer API's Files and Batches for one model; the API key stays inside the SDK client."""

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
        trace: ApiTrace | None = None,
    ) -> None:
        self.model = model
        self.list_page_size = LIST_PAGE_SIZE
        self._timeout = timeout
        self._max_retries = max(1, max_retries)
        self._retry_max_wait = retry_max_wait
        self.on_retry = on_retry
        self._base_url = base_url
        self._api_key: str | None = api_key  # handed to the SDK client when it is made, then dropped
        self._http: Any = None
        self._client: Any = None
        self._trace = trace
        self.mime_types: list[str] = list(JSONL_MIME_TYPES)  # the first is the one in use; refused ones drop out
        self._model_actions: list[str] | None = None  # the run's model's methods, once models.get answered

    def _make_client(self) -> None:
        import httpx2
        from google import genai
        from google.genai import types

        # Our own httpx2 client: the same transport with or without aiohttp installed
        # (the aiohttp path re-sends a request after a dropped connection, which could duplicate a create).
        # Redirects are not followed: a proxy answering 307 to another origin would receive the API key there.
        hooks = self._trace.event_hooks() if self._trace is not None else None
        self._http = httpx2.AsyncClient(timeout=self._timeout, follow_redirects=False, event_hooks=hooks)
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
        """Close the HTTP connections and the trace file."""
        if self._http is not None:
            await self._http.aclose()
        if self._trace is not None:
            self._trace.close()

    async def _safe(self, what: str, call: Callable[[], Awaitable[T]], *, about_file: bool = False) -> T:
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
                    raise _translate(exc, may_have_taken_effect=False, about_file=about_file) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- models ------------------------------------------------------------------------------

    async def model_known(self) -> bool:
        """True when the server knows the run's model (models.get); False on 404."""
        try:
            model = await self._safe(f"get model {self.model}", lambda: self._aio.models.get(model=self.model))
        except Permanent as exc:
            # Only Google's own NOT_FOUND envelope says "no such model"; a proxy without the route says nothing.
            if exc.code == 404 and exc.status == "NOT_FOUND" and not isinstance(exc, Unusable):
                return False
            raise
        self._model_actions = list(model.supported_actions or [])
        return True

    async def model_job_kinds(self) -> set[str]:
        """The kinds of batch job ("generate", "embed") the run's model offers, read from the methods the server
        lists for it (models.get `supportedGenerationMethods`, as `model_known` read them); empty when it does not
        say."""
        if self._model_actions is None:
            model = await self._safe(f"get model {self.model}", lambda: self._aio.models.get(model=self.model))
            self._model_actions = list(model.supported_actions or [])
        actions = set(self._model_actions)
        return ({"embed"} if actions & _EMBED_METHODS else set()) | (
            {"generate"} if actions & _GENERATE_METHODS else set())

    async def model_names(self) -> list[str]:
        """The model ids the server lists that can run batch jobs (empty when it will not say)."""

        async def call() -> list[str]:
            pager = await self._aio.models.list(config=_types().ListModelsConfig(page_size=100))
            names = []
            async for model in pager:
                actions = model.supported_actions or []
                if not actions or {"batchGenerateContent", "generateContent", "asyncBatchEmbedContent"} & set(actions):
                    names.append((model.name or "").removeprefix("models/"))
            return [name for name in names if name]

        try:
            return await self._safe("list models", call)
        except GatewayError:
            return []

    # ---- files -------------------------------------------------------------------------------

    async def upload(self, path: Path, display_name: str) -> RemoteFile:
        """Upload a JSONL file (resumable, streamed in 8 MiB chunks by the SDK).

        A refusal of the MIME type tries each other JSONL type once; the type that works is kept for the run.
        Any other 4xx is `UploadRefused` (permanent for this file); `Unusable` when no type is accepted."""
        while True:
            mime = self.mime_types[0]
            try:
                return await self._safe(f"upload {path.name}", lambda m=mime: self._upload_as(path, display_name, m))
            except Unusable:
                raise
            except Permanent as exc:
                if "mime type" in str(exc).lower() and exc.code == 400:
                    if self.mime_types and self.mime_types[0] == mime:
                        self.mime_types.pop(0)
                    if not self.mime_types:
                        raise Unusable(f"the server accepts none of the JSONL MIME types "
                                       f"{', '.join(JSONL_MIME_TYPES)}: {exc}", exc.code, exc.status) from None
                    if self.on_retry is not None:
                        self.on_retry(f"upload {path.name}: MIME type {mime} refused ({exc}); "
                                      f"trying {self.mime_types[0]}")
                    continue
                raise UploadRefused(str(exc), exc.code, exc.status) from None

    async def _upload_as(self, path: Path, display_name: str, mime: str) -> RemoteFile:
        # An open file, not a path: for a path the SDK sends the local file name in an X-Goog-Upload-File-Name
        # header, which cannot carry a non-ASCII or newline name (and the server needs no local name).
        handle = await asyncio.to_thread(path.open, "rb")
        try:
            uploaded = await self._aio.files.upload(
                file=handle,
                config=_types().UploadFileConfig(display_name=display_name, mime_type=mime),
            )
        finally:
            await asyncio.to_thread(handle.close)
        return _remote_file(uploaded)

    async def get_file(self, name: str) -> RemoteFile | None:
        """The file, or None when the server no longer has it (403 or 404)."""
        try:
            return await self._safe(f"get {name}", lambda: self._file_get(name), about_file=True)
        except Permanent as exc:
            if exc.code in (403, 404) and not isinstance(exc, Unusable):
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
        """Delete an uploaded file; a file already gone (403 or 404) is fine."""
        try:
            await self._safe(f"delete {name}", lambda: self._aio.files.delete(name=name), about_file=True)
        except Permanent as exc:
            if exc.code not in (403, 404) or isinstance(exc, Unusable):
                raise

    async def download(self, file_name: str, destination: Path) -> None:
        """Stream a result file to `destination` (which the caller renames into place when checked).

        A file the server does not have raises Permanent with code 403 or 404."""

        async def call() -> None:
            await self._aio.files.download(file=file_name, destination=str(destination))

        await self._safe(f"download {file_name}", call, about_file=True)

    async def save_inline_results(self, job_name: str, destination: Path) -> int:
        """Write a job's inline responses to `destination` as result-file lines; returns how many."""
        response = await self._safe(f"get {job_name}",
                                    lambda: self._aio._api_client.async_request("get", job_name, {}))
        lines = inline_result_lines(json.loads(response.body or "{}"))

        def write() -> None:
            with destination.open("w", encoding="utf-8") as out:
                for line in lines:
                    out.write(json.dumps(line, ensure_ascii=False) + "\n")

        await asyncio.to_thread(write)
        return len(lines)

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
            raise _translate(exc, may_have_taken_effect=True, about_file=True) from None
        return _job_from_sdk(job)

    async def create_embeddings(self, file_name: str, display_name: str) -> RemoteJob:
        """Create an embeddings batch job (asyncBatchEmbedContent) from an uploaded file of embedding requests:
        sent exactly once, never retried here, errors translated as for `create`."""
        await self._ready()
        types = _types()
        config = types.CreateEmbeddingsBatchJobConfig(
            display_name=display_name,
            http_options=types.HttpOptions(retry_options=types.HttpRetryOptions(attempts=1)),
        )
        try:
            with warnings.catch_warnings():  # the SDK marks create_embeddings experimental, on every call
                warnings.simplefilter("ignore", _experimental_warning())
                job = await self._aio.batches.create_embeddings(
                    model=self.model, src=types.EmbeddingsBatchJobSource(file_name=file_name), config=config)
        except Exception as exc:
            raise _translate(exc, may_have_taken_effect=True, about_file=True) from None
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

    async def count_tokens(self, request: dict[str, Any], model: str | None = None) -> int:
        """The service's token count of one batch request (countTokens with the whole GenerateContentRequest,
        so a systemInstruction and tools count too); retried like any read."""
        name = model or self.model
        name = name if name.startswith("models/") else f"models/{name}"
        body = {"generateContentRequest": {**request, "model": name}}
        if "content" in request and "contents" not in request:  # an embedding request: its one Content counts
            body = {"contents": [request["content"]]}

        async def call() -> int:
            response = await self._aio._api_client.async_request("post", f"{name}:countTokens", body)
            return int(json.loads(response.body or "{}").get("totalTokens", 0))

        return await self._safe(f"count tokens with {name}", call)


def open_gemini(settings: Settings, api_key: str, *, model: str, base_url: str | None,
                trace: ApiTrace | None) -> Gateway:
    """The Gemini Developer API backend for core/compose.py, with the run's timeouts and retries."""
    return Gateway(api_key=api_key, model=model, base_url=base_url, timeout=settings.transfer.request_timeout,
                   max_retries=settings.transfer.max_retries, retry_max_wait=settings.transfer.retry_max_wait,
                   trace=trace)
