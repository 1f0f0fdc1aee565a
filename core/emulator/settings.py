"""Every knob of the emulator in one dataclass, readable from a TOML scenario file.

Settings may be changed while the emulator runs (tests flip quotas and faults mid-run): the server reads
`emulator.settings` on every call. A job's timing is fixed when it is created.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = frozenset({
    "upload.start", "upload.chunk",
    "files.get", "files.list", "files.delete", "files.download",
    "batches.create", "batches.get", "batches.list", "batches.cancel", "batches.delete",
    "models.get", "models.list", "models.countTokens",
})
LOST_ANSWER_MODES = ("close", "delay")
QUOTA_ERROR_DETAILS = ("help", "none", "full")
MISSING_FILE_STATUSES = (403, 404)
BATCHES_LIST_ORDERS = ("newest", "oldest", "shuffled")
# Models the service offers today, plus every name the project's tests, demo and prices use.
KNOWN_MODELS = frozenset({
    "gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite", "gemini-2.0-flash", "gemini-2.0-flash-lite",
    "gemini-3-pro-preview", "gemini-3-flash-preview", "gemini-3-pro-image-preview",
    "gemini-2.5-flash-preview-09-2025", "gemini-2.5-flash-lite-preview-09-2025",
    "gemini-embedding-001",
})
_GIB = 1024**3


def _knob(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class EmulatorSettings:
    """The emulator's behaviour: address, lifecycle timing, limits, quotas and faults (0/None = off)."""

    host: str = _knob("127.0.0.1", "address to bind")
    port: int = _knob(0, "port to bind; 0 picks a free port")
    api_key: str | None = _knob(None, "the only API key accepted; unset accepts any non-empty key")
    seed: int = _knob(0, "seed of every random choice (faults, per-request errors): same seed, same run")

    file_ttl_seconds: float = _knob(172800.0, "seconds an uploaded or result file lives (Google: 48 h)")
    max_file_bytes: int = _knob(2 * _GIB, "largest file an upload may declare or send (Google: 2 GB)")
    storage_cap_bytes: int = _knob(
        20 * _GIB, "total bytes of live uploaded files (Google: 20 GB/project; a deleted file frees its bytes at "
                   "once); an upload over it gets 429 RESOURCE_EXHAUSTED shaped by quota_error_details (a guess: "
                   "the service's exact error is unknown); 0 = no cap")

    pending_seconds: float = _knob(0.5, "seconds a new job stays PENDING")
    running_seconds: float = _knob(1.0, "fixed part of the seconds a job stays RUNNING")
    running_seconds_per_request: float = _knob(0.005, "extra RUNNING seconds per request of the job")
    job_ttl_seconds: float = _knob(172800.0, "a job still unfinished this many seconds after create EXPIRES")
    request_error_rate: float = _knob(0.0, "share of result lines that are errors instead of responses")
    job_fail_rate: float = _knob(0.0, "share of jobs that end FAILED instead of SUCCEEDED")
    result_file_delay_seconds: float = _knob(
        0.0, "seconds after SUCCEEDED before the result file can be read (missing until then: "
             "missing_file_status)")
    partial_output_on_expiry: bool = _knob(
        False, "an EXPIRED job keeps a result file of the requests it finished (unconfirmed on Google's side)")

    max_concurrent_jobs: int | None = _knob(100, "unfinished jobs per project (Google: 100); 0 = no limit")
    enqueued_token_limit: int | None = _knob(
        None, "tokens of PENDING+RUNNING jobs per model (estimate: ceil(line bytes / 4)); 0 = no limit")
    creates_per_minute: int | None = _knob(None, "accepted creates in any sliding 60 s; 0 = no limit")
    create_window_seconds: float = _knob(
        60.0, "length of the sliding creates-per-minute window (shorter: time-scaled benchmarks)")

    server_error_rate: float = _knob(0.0, "share of calls answered 500/503 instead (nothing takes effect)")
    server_error_kinds: set[str] | None = field(default=None, metadata={
        "help": "limit server errors to these call kinds (comma-separated, e.g. batches.create,files.get)"})
    slow_seconds: float = _knob(0.0, "delay before every answer, in seconds")
    lost_create_rate: float = _knob(0.0, "share of accepted creates whose answer is lost (the job exists)")
    lost_create_mode: str = _knob("close", "how a create answer is lost: close (drop the connection) or delay")
    lost_create_delay_seconds: float = _knob(30.0, "delay of a lost create answer in delay mode")
    lost_answer_rate: float = _knob(0.0, "share of other successful calls whose answer is lost")
    lost_answer_kinds: set[str] | None = field(default=None, metadata={
        "help": "limit lost answers to these call kinds (comma-separated)"})
    lost_answer_mode: str = _knob("close", "how other answers are lost: close or delay")
    lost_answer_delay_seconds: float = _knob(30.0, "delay of a lost answer in delay mode")
    long_file_id_bug: bool = _knob(
        False, "reproduce Google's 400 on files.get/delete of 42-char files/batch-... ids")

    # The service as users meet it (gemini-batch-protocol.md, "Corrections and field reports").
    file_processing_seconds: float = _knob(
        0.3, "seconds an upload stays PROCESSING after finalize; a create naming it meanwhile gets 400 "
             "FAILED_PRECONDITION (field report: large JSONL uploads; the wording is recorded, the time a guess)")
    file_processing_seconds_per_mib: float = _knob(
        0.05, "extra PROCESSING seconds per MiB of the upload (a guess: larger files take longer)")
    file_failed_rate: float = _knob(
        0.0, "share of uploads that end FAILED (with an `error`) instead of ACTIVE after processing (a guess)")
    quota_error_details: str = _knob(
        "help", "details of batch and storage 429s: help (the generic message and one google.rpc.Help, as "
                "recorded: langchain4j #3942, python-genai #1901), none (no details), full (QuotaFailure + "
                "RetryInfo, friendly)")
    missing_file_status: int = _knob(
        403, "status of files.get/delete/download of a missing, deleted or expired file: 403 PERMISSION_DENIED "
             "(recorded: python-genai #1218) or 404 NOT_FOUND (friendly); batches keep 404")
    models: set[str] = field(default_factory=lambda: set(KNOWN_MODELS), metadata={"help": (
        "model ids that exist (comma-separated); others get 404 NOT_FOUND on create and models.get (wording a "
        "guess after the service's generateContent answer); empty ('' or []) accepts any")})
    refused_mime_types: set[str] = field(default_factory=lambda: {"jsonl"}, metadata={"help": (
        "upload MIME types refused at finalize with 400 'Unsupported MIME type: <type>' (recorded: python-genai "
        "#1547 for jsonl, cookbook #1008 for application/jsonl); empty ('' or []) refuses none")})
    inline_results_max_requests: int = _knob(
        0, "a SUCCEEDED file-input job of at most this many requests answers inlinedResponses instead of a "
           "responsesFile (unconfirmed gateway report); 0 = off")
    batches_list_order: str = _knob(
        "newest", "batches.list order: newest, oldest or shuffled (seeded, stable; the real order is "
                  "undocumented)")
    flat_batch_stats: bool = _knob(
        False, "RUNNING jobs report no progress in batchStats (all pending) until they end (field report)")
    embedding_dimensions: int = _knob(
        8, "size of the vectors of an embeddings job (asyncBatchEmbedContent) for requests with no "
           "outputDimensionality (the service's is 3072 for gemini-embedding-001; small keeps tests quick)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, source: str = "settings") -> None:
        """Raise ValueError naming the first bad value."""
        for name in ("request_error_rate", "job_fail_rate", "server_error_rate", "lost_create_rate",
                     "lost_answer_rate", "file_failed_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{source}: {name} must be between 0 and 1, got {value!r}")
        for name in ("lost_create_mode", "lost_answer_mode"):
            if getattr(self, name) not in LOST_ANSWER_MODES:
                raise ValueError(f"{source}: {name} must be one of {LOST_ANSWER_MODES}, got {getattr(self, name)!r}")
        for name in ("server_error_kinds", "lost_answer_kinds"):
            unknown = sorted(set(getattr(self, name) or ()) - KINDS)
            if unknown:
                raise ValueError(f"{source}: {name} has unknown kinds {unknown}; known: {sorted(KINDS)}")
        for name, choices in (("quota_error_details", QUOTA_ERROR_DETAILS),
                              ("missing_file_status", MISSING_FILE_STATUSES),
                              ("batches_list_order", BATCHES_LIST_ORDERS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{source}: {name} must be one of {choices}, got {getattr(self, name)!r}")
        for name in ("file_processing_seconds", "file_processing_seconds_per_mib", "inline_results_max_requests"):
            if getattr(self, name) < 0:
                raise ValueError(f"{source}: {name} must not be negative, got {getattr(self, name)!r}")
        if not 0 < self.embedding_dimensions <= 3072:
            raise ValueError(f"{source}: embedding_dimensions must be 1..3072, got {self.embedding_dimensions!r}")
        if not self.create_window_seconds > 0:
            raise ValueError(f"{source}: create_window_seconds must be above 0, got {self.create_window_seconds!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"{source}: port must be 0..65535, got {self.port}")

    @classmethod
    def from_toml(cls, path: str | Path) -> EmulatorSettings:
        """Settings from a scenario file whose keys are field names; an unknown key is an error."""
        path = Path(path)
        with path.open("rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{path}: not valid TOML: {exc}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ValueError(f"{path}: unknown emulator setting {key!r}; known: {', '.join(sorted(known))}")
            values[key] = coerce(key, value, source=str(path))
        settings = cls()
        for key, value in values.items():
            setattr(settings, key, value)
        settings.validate(str(path))
        return settings


def friendly_service() -> dict[str, Any]:
    """The friendly variant of every service behaviour (the emulator before the field reports), for tests that
    need it: `EmulatorSettings(**friendly_service(), pending_seconds=...)`. Realistic is the default."""
    return {
        "file_processing_seconds": 0.0, "file_processing_seconds_per_mib": 0.0, "file_failed_rate": 0.0,
        "quota_error_details": "full", "missing_file_status": 404, "models": set(), "refused_mime_types": set(),
        "inline_results_max_requests": 0, "batches_list_order": "newest", "flat_batch_stats": False,
    }


def field_types() -> dict[str, Any]:
    """The resolved type of every settings field."""
    return typing.get_type_hints(EmulatorSettings)


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if isinstance(annotation, types.UnionType):
        args = [a for a in annotation.__args__ if a is not type(None)]
        return args[0], len(args) != len(annotation.__args__)
    return annotation, False


def coerce(name: str, value: Any, source: str) -> Any:
    """A TOML value checked (and converted where lossless) against the type of field `name`."""
    base, optional = _base_type(field_types()[name])
    if value is None and optional:
        return None
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base is str:
        ok = isinstance(value, str)
    else:  # set[str]
        ok = isinstance(value, list | set | tuple) and all(isinstance(v, str) for v in value)
        value = set(value) if ok else value
    if not ok:
        raise ValueError(f"{source}: setting {name!r} must be {_type_name(base)}, got {value!r}")
    return value


def parse_text(name: str, text: str) -> Any:
    """A command-line value for field `name` ("none"/"off" unsets an optional one)."""
    base, optional = _base_type(field_types()[name])
    if optional and text.strip().lower() in ("none", "off", ""):
        return None
    try:
        if base is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no", "on"):
                raise ValueError(text)
            return lowered in ("true", "1", "yes", "on")
        if base is int:
            return int(text)
        if base is float:
            return float(text)
        if base is str:
            return text
        return {part.strip() for part in text.split(",") if part.strip()}
    except ValueError:
        raise ValueError(f"--{name.replace('_', '-')}: expected {_type_name(base)}, got {text!r}") from None


def _type_name(base: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        base, "a list of strings")
