"""The emulator's state: files (content on disk), batch jobs and upload sessions, under one lock."""

from __future__ import annotations

import base64
import binascii
import secrets
import shutil
import string
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import invalid_argument
from .quotas import CreateWindow

if TYPE_CHECKING:
    from .uploads import UploadSession

T = TypeVar("T")
_ID_ALPHABET = string.ascii_lowercase + string.digits
FILE_ID_LENGTH = 12  # like real ids, e.g. files/frh6ua11nk3o
BATCH_ID_LENGTH = 36  # like real ids; result files are files/batch-{36 chars}


def random_id(length: int) -> str:
    """Lowercase letters and digits, as Google's generated ids."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


@dataclass(eq=False)
class FileRecord:
    """One file, uploaded or generated; its content lives at `path`."""

    serial: int
    name: str
    display_name: str | None
    mime_type: str
    size_bytes: int
    sha256_hex: str
    create_time: float
    expiration_time: float
    source: str  # "UPLOADED" or "GENERATED"
    path: Path
    request_count: int = 0
    token_estimate: int = 0
    available_at: float = 0.0  # generated files: readable from then on
    deleted: bool = False
    on_disk: bool = True
    active_at: float = 0.0  # uploads: PROCESSING until then, then ACTIVE (or FAILED when `error` is set)
    error: dict[str, Any] | None = None  # the File's `error` once processing has failed

    def live(self, now: float) -> bool:
        """Not deleted, not past its TTL and already available."""
        return not self.deleted and self.available_at <= now < self.expiration_time

    def state(self, now: float) -> str:
        """PROCESSING, ACTIVE or FAILED, as `state` on the wire."""
        if now < self.active_at:
            return "PROCESSING"
        return "FAILED" if self.error is not None else "ACTIVE"


@dataclass(eq=False)
class JobRecord:
    """One batch job: what was asked, its timing (fixed at create) and, once ended, its outcome."""

    serial: int
    name: str
    display_name: str | None
    model: str  # "models/..."
    input_file: str | None
    sha256: str | None
    inline_requests: list[dict[str, Any]] | None
    request_count: int
    tokens: int
    create_time: float
    pending_seconds: float
    running_seconds: float
    ttl_seconds: float
    planned_failure: bool
    error_rate: float
    seed: int
    result_delay: float
    file_ttl: float
    partial_output_on_expiry: bool = False  # an EXPIRED job keeps a result file of the requests it finished
    input_path: Path | None = None  # a private link to the input content, dropped when the job ends
    priority: str | None = None
    end_state: str | None = None  # BATCH_STATE_* once ended
    end_time: float | None = None
    end_error: dict[str, Any] | None = None
    succeeded: int = 0
    failed: int = 0
    result_file: str | None = None
    inline_responses: list[dict[str, Any]] | None = None
    deleted: bool = False
    error_lines: list[int] | None = field(default=None, repr=False)
    inline_output: bool = False  # a file-input job whose results come inline (inline_results_max_requests)
    flat_stats: bool = False  # batchStats show no progress while RUNNING (flat_batch_stats)
    embedding_dimensions: int | None = None  # an embeddings job (asyncBatchEmbedContent): its vectors' default size

    @property
    def job_id(self) -> str:
        """The id without "batches/"."""
        return self.name.removeprefix("batches/")


class Store:
    """Files, jobs and upload sessions; every access holds `lock`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._root: Path | None = None
        self._serial = 0
        self.files: dict[int, FileRecord] = {}
        self._newest_by_name: dict[str, FileRecord] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.active: set[str] = set()  # names of jobs not yet ended
        self.sessions: dict[str, UploadSession] = {}
        self.create_window = CreateWindow()
        self.fail_next = 0
        self._last_sweep = 0.0

    # ---- disk ------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the temporary folder that holds file contents."""
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="gembatch-emulator-"))

    def close(self) -> None:
        """Remove the temporary folder and everything in it."""
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def new_path(self, kind: str) -> Path:
        """A fresh path in the emulator's folder for a file's content."""
        if self._root is None:
            raise RuntimeError("the emulator is not started")
        return self._root / f"{kind}-{self.next_serial()}-{random_id(8)}"

    # ---- ids -------------------------------------------------------------------------------

    def next_serial(self) -> int:
        """1, 2, 3, ...: creation order of every record."""
        self._serial += 1
        return self._serial

    def new_file_name(self) -> str:
        """An unused generated file name."""
        while True:
            name = f"files/{random_id(FILE_ID_LENGTH)}"
            if not self.name_taken(name):
                return name

    def new_job_name(self) -> str:
        """An unused batch name."""
        while True:
            name = f"batches/{random_id(BATCH_ID_LENGTH)}"
            if name not in self.jobs:
                return name

    def name_taken(self, name: str, now: float | None = None) -> bool:
        """Whether a live file or an open upload session already has this name."""
        if any(s.name == name and not s.closed for s in self.sessions.values()):
            return True
        record = self._newest_by_name.get(name)
        return record is not None and not record.deleted and (now is None or now < record.expiration_time)

    # ---- files -----------------------------------------------------------------------------

    def add_file(self, record: FileRecord) -> None:
        """Keep a new file."""
        self.files[record.serial] = record
        self._newest_by_name[record.name] = record

    def live_file(self, name: str, now: float) -> FileRecord | None:
        """The live file of that name, if any."""
        record = self._newest_by_name.get(name)
        return record if record is not None and record.live(now) else None

    def live_files(self, now: float) -> list[FileRecord]:
        """Live files, newest first."""
        return sorted((f for f in self.files.values() if f.live(now)), key=lambda f: -f.serial)

    def uploaded_bytes(self, now: float) -> int:
        """Bytes of live uploaded files (what the storage cap counts)."""
        return sum(f.size_bytes for f in self.files.values() if f.source == "UPLOADED" and f.live(now))

    def sweep(self, now: float) -> None:
        """Drop the content of deleted and expired files from disk (at most once a second)."""
        if now - self._last_sweep < 1.0:
            return
        self._last_sweep = now
        for record in self.files.values():
            if record.on_disk and (record.deleted or now >= record.expiration_time):
                record.path.unlink(missing_ok=True)
                record.on_disk = False

    # ---- jobs ------------------------------------------------------------------------------

    def visible_job(self, name: str) -> JobRecord | None:
        """The job of that name unless deleted."""
        job = self.jobs.get(name)
        return None if job is None or job.deleted else job

    def visible_jobs(self) -> list[JobRecord]:
        """Jobs not deleted, newest first."""
        return sorted((j for j in self.jobs.values() if not j.deleted), key=lambda j: -j.serial)


def paginate(items: list[T], key_of: Callable[[T], tuple[int, ...]], page_size: int,
             token: str | None) -> tuple[list[T], str | None]:
    """One page of items in ascending `key_of` order and the token of the next page (None on the last page).

    The token names the key of the last item served, so items created or deleted between pages do not shift
    the pages, and no item is served twice in one walk.
    """
    items = sorted(items, key=key_of)
    if token:
        try:
            text = base64.urlsafe_b64decode(token.encode() + b"==").decode()
            if not text.startswith("after:"):
                raise ValueError(text)
            after = tuple(int(part) for part in text.removeprefix("after:").split("."))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise invalid_argument(f"Invalid page token: {token}") from None
        items = [item for item in items if key_of(item) > after]
    page = items[:page_size]
    if len(items) <= page_size:
        return page, None
    raw = ("after:" + ".".join(str(k) for k in key_of(page[-1]))).encode()
    return page, base64.urlsafe_b64encode(raw).decode().rstrip("=")
