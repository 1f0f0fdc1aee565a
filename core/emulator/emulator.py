"""The Emulator: start/stop the server, and the hooks tests use to look inside and to force events."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from . import lifecycle
from .api import Api
from .calls import Context
from .faults import Faults
from .journal import Journal, JournalEntry
from .server import HttpServer, ServerContext
from .settings import EmulatorSettings
from .store import JobRecord, Store


def log_line(entry: JournalEntry) -> str:
    """One human-readable line per call, as the CLI prints it."""
    clock = time.strftime("%H:%M:%S", time.localtime(entry.at)) + f".{int(entry.at * 1000) % 1000:03d}"
    extra = " ".join(part for part in (entry.resource, f"[{entry.note}]" if entry.note else None) if part)
    return f"{clock} {entry.status} {entry.method} {entry.path} {entry.kind}{' ' + extra if extra else ''}"


class Emulator:
    """A local Gemini Batch Mode API server on 127.0.0.1 that the real google-genai SDK can use."""

    def __init__(self, settings: EmulatorSettings | None = None, *,
                 log: Callable[[str], None] | None = None) -> None:
        self.settings = settings if settings is not None else EmulatorSettings()
        self._log = log
        self._journal = Journal(self._on_entry if log is not None else None)
        self._store = Store()
        self._faults = Faults(lambda: self.settings)
        self._api = Api(Context(self._store, lambda: self.settings, self._faults, lambda: self.base_url))
        self._stopping = threading.Event()
        self._http: HttpServer | None = None
        self._base_url: str | None = None

    def _on_entry(self, entry: JournalEntry) -> None:
        if self._log is not None:
            self._log(log_line(entry))

    # ---- running ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """http://HOST:PORT of the running emulator."""
        if self._base_url is None:
            raise RuntimeError("the emulator is not started")
        return self._base_url

    def start(self) -> str:
        """Bind and serve in a background thread; returns the base URL."""
        if self._http is not None:
            raise RuntimeError("the emulator is already started")
        self._store.open()
        context = ServerContext(api=self._api, faults=self._faults, journal=self._journal,
                                settings=lambda: self.settings, base_url=lambda: self.base_url,
                                stopping=self._stopping)
        self._stopping.clear()
        self._http = HttpServer(self.settings.host, self.settings.port, context)
        host = self.settings.host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        self._base_url = f"http://{host}:{self._http.port}"
        self._http.start()
        return self._base_url

    def stop(self) -> None:
        """Stop serving, drop open connections and delete the stored file contents."""
        if self._http is None:
            return
        self._stopping.set()
        self._http.stop()
        self._http = None
        self._store.close()

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- looking inside --------------------------------------------------------------------

    def journal(self) -> list[JournalEntry]:
        """A copy of every call so far, oldest first."""
        return self._journal.entries()

    def reset_journal(self) -> None:
        """Forget the calls so far."""
        self._journal.reset()

    def jobs(self) -> list[dict[str, Any]]:
        """Every batch job ever created (deleted ones too), oldest first."""
        now = time.time()
        with self._store.lock:
            self._advance(now)
            return [self._job_dict(job, now) for job in sorted(self._store.jobs.values(), key=lambda j: j.serial)]

    def _advance(self, now: float) -> None:
        """Settle ended jobs (only while running: results are written to the emulator's folder)."""
        if self._http is not None:
            lifecycle.advance(self._store, now)

    @staticmethod
    def _job_dict(job: JobRecord, now: float) -> dict[str, Any]:
        status = lifecycle.status(job, now)
        return {
            "name": job.name, "display_name": job.display_name, "model": job.model,
            "input_file": job.input_file, "sha256": job.sha256, "state": status.state,
            "request_count": job.request_count, "tokens": job.tokens, "create_time": job.create_time,
            "end_time": status.end_time, "deleted": job.deleted, "result_file": job.result_file,
            "succeeded": status.succeeded, "failed": status.failed,
            "kind": "generate" if job.embedding_dimensions is None else "embed",
        }

    def files(self) -> list[dict[str, Any]]:
        """Every file ever stored (deleted and expired ones too), oldest first."""
        now = time.time()
        with self._store.lock:
            self._advance(now)
            return [{
                "name": f.name, "display_name": f.display_name, "size_bytes": f.size_bytes,
                "sha256": f.sha256_hex, "state": f.state(now), "create_time": f.create_time,
                "expiration_time": f.expiration_time, "source": f.source, "deleted": f.deleted,
                "expired": now >= f.expiration_time, "request_count": f.request_count,
                "tokens": f.token_estimate,
            } for f in sorted(self._store.files.values(), key=lambda f: f.serial)]

    # ---- forcing events --------------------------------------------------------------------

    def expire_file(self, name: str) -> None:
        """Make a file expire now: get answers 403 (or 404) and a create naming it is refused."""
        name = name if name.startswith("files/") else f"files/{name}"
        now = time.time()
        with self._store.lock:
            record = self._store.live_file(name, now)
            if record is None:
                raise KeyError(f"no live file {name}")
            record.expiration_time = now

    def fail_job(self, name: str, message: str = lifecycle.FAILED_MESSAGE) -> None:
        """End an unfinished job FAILED now, with `message` as its error."""
        self._end_job(name, lifecycle.FAILED, message)

    def expire_job(self, name: str) -> None:
        """End an unfinished job EXPIRED now (as if it had waited past the job TTL)."""
        self._end_job(name, lifecycle.EXPIRED, None)

    def _end_job(self, name: str, state: str, message: str | None) -> None:
        name = name if name.startswith("batches/") else f"batches/{name}"
        now = time.time()
        with self._store.lock:
            self._advance(now)
            job = self._store.jobs.get(name)
            if job is None:
                raise KeyError(f"no job {name}")
            if job.end_state is not None:
                raise ValueError(f"{name} already ended {job.end_state}")
            lifecycle.end(self._store, job, state, now, message)

    def fail_next_jobs(self, n: int) -> None:
        """The next `n` jobs created will end FAILED when they would have succeeded."""
        with self._store.lock:
            self._store.fail_next += n


def stderr_log(line: str) -> None:
    """Write one log line to stderr."""
    print(line, file=sys.stderr, flush=True)
