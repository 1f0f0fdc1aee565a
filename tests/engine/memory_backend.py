"""A batch service held in dicts: a second `core.backend.BatchBackend` for tests, with no emulator and no SDK.

Jobs go PENDING -> RUNNING -> SUCCEEDED on their own clock (`pending_for`, `running_for` seconds), or stay where
they are while `hold` is set and move on `finish(name)`. Results answer every key of the uploaded file.
Registering it is one line in core/compose.py's table: `BACKENDS["memory"] = opener(backend)`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gembatch.core.api_trace import ApiTrace
from gembatch.core.backend import (
    BatchBackend,
    FileState,
    GatewayError,
    JobState,
    Permanent,
    RemoteFile,
    RemoteJob,
    RetryLogger,
)
from gembatch.core.compose import BackendOpener
from gembatch.core.config import Settings

FILE_LIFETIME = 24 * 3600.0  # this service keeps uploads a day


@dataclass
class StoredFile:
    """An upload or a result file of the memory service."""

    name: str
    display_name: str | None
    content: bytes
    created: float
    kind: str  # "upload" or "result"


@dataclass
class StoredJob:
    """A batch job of the memory service; its state follows its age unless held."""

    name: str
    display_name: str
    input_file: str
    created: float  # time.monotonic() at create
    create_time: float  # unix time at create
    keys: list[str]
    settled: JobState | None = None  # set by cancel, or by `finish` while held
    result_file: str | None = None
    end_time: float | None = None


@dataclass
class MemoryBackend:
    """Files and batch jobs in dicts; every call counted in `calls`."""

    pending_for: float = 0.05
    running_for: float = 0.05
    hold: bool = False  # jobs do not move by themselves: `finish(name)` ends them
    list_page_size: int = 3  # small, so that the engine's list walks turn pages
    on_retry: RetryLogger | None = None
    files: dict[str, StoredFile] = field(default_factory=dict)
    jobs: dict[str, StoredJob] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    create_errors: list[GatewayError] = field(default_factory=list)  # raised by the next creates, in order
    closed: bool = False

    # ---- the protocol --------------------------------------------------------------------------

    async def aclose(self) -> None:
        self.closed = True

    async def model_known(self) -> bool:
        self.calls["model_known"] += 1
        return True

    async def model_names(self) -> list[str]:
        return ["memory-model"]

    async def model_job_kinds(self) -> set[str]:
        return {"generate"}  # so the engine refuses embedding files before any upload

    async def upload(self, path: Path, display_name: str) -> RemoteFile:
        self.calls["upload"] += 1
        content = await asyncio.to_thread(path.read_bytes)
        name = f"mem-upload-{len(self.files) + 1}"
        self.files[name] = StoredFile(name, display_name, content, time.time(), "upload")
        return self._remote_file(self.files[name])

    async def get_file(self, name: str) -> RemoteFile | None:
        self.calls["get_file"] += 1
        stored = self.files.get(name)
        return self._remote_file(stored) if stored is not None else None

    async def list_files(self) -> list[RemoteFile]:
        self.calls["list_files"] += 1
        return [self._remote_file(stored) for stored in self.files.values()]

    async def delete_file(self, name: str) -> None:
        self.calls["delete_file"] += 1
        self.files.pop(name, None)

    async def download(self, file_name: str, destination: Path) -> None:
        self.calls["download"] += 1
        stored = self.files.get(file_name)
        if stored is None:
            raise Permanent(f"404: no file {file_name}", 404)
        await asyncio.to_thread(destination.write_bytes, stored.content)

    async def save_inline_results(self, job_name: str, destination: Path) -> int:
        raise Permanent(f"{job_name}: this service writes result files, never inline results", 400)

    async def create_embeddings(self, file_name: str, display_name: str) -> RemoteJob:
        self.calls["create_embeddings"] += 1
        raise Permanent("400: the memory backend runs no embedding jobs", 400)

    async def create(self, file_name: str, display_name: str) -> RemoteJob:
        self.calls["create"] += 1
        if self.create_errors:
            raise self.create_errors.pop(0)
        source = self.files.get(file_name)
        if source is None or source.kind != "upload":
            raise Permanent(f"400: no upload {file_name}", 400)
        keys = [json.loads(line)["key"] for line in source.content.splitlines() if line.strip()]
        name = f"mem-job-{len(self.jobs) + 1}"
        self.jobs[name] = StoredJob(name, display_name, file_name, time.monotonic(), time.time(), keys)
        return self._remote_job(self.jobs[name])

    async def get_job(self, name: str) -> RemoteJob | None:
        self.calls["get_job"] += 1
        stored = self.jobs.get(name)
        return self._remote_job(stored) if stored is not None else None

    async def list_jobs_page(self, page_token: str | None) -> tuple[list[RemoteJob], str | None]:
        self.calls["list_jobs_page"] += 1
        newest_first = list(reversed(self.jobs.values()))
        start = int(page_token or 0)
        page = newest_first[start:start + self.list_page_size]
        following = start + self.list_page_size
        return [self._remote_job(stored) for stored in page], (str(following) if following < len(newest_first)
                                                                else None)

    async def cancel(self, name: str) -> None:
        self.calls["cancel"] += 1
        stored = self.jobs.get(name)
        if stored is not None and not self._state(stored).ended:
            stored.settled = JobState.CANCELLED

    # ---- driving it from a test ------------------------------------------------------------------

    def finish(self, name: str, state: JobState = JobState.SUCCEEDED) -> None:
        """End a (held) job now."""
        stored = self.jobs[name]
        stored.settled = state

    def jobs_by_display_name(self) -> Counter[str]:
        """How many jobs each display name has."""
        return Counter(stored.display_name for stored in self.jobs.values())

    # ---- internals -------------------------------------------------------------------------------

    def _state(self, stored: StoredJob) -> JobState:
        if stored.settled is not None:
            return stored.settled
        if self.hold:
            return JobState.PENDING
        age = time.monotonic() - stored.created
        if age < self.pending_for:
            return JobState.PENDING
        if age < self.pending_for + self.running_for:
            return JobState.RUNNING
        return JobState.SUCCEEDED

    def _remote_job(self, stored: StoredJob) -> RemoteJob:
        state = self._state(stored)
        if state is JobState.SUCCEEDED and stored.result_file is None:
            stored.result_file = f"mem-result-{stored.name}"
            stored.end_time = time.time()
            lines = [json.dumps({"key": key, "response": {
                "candidates": [{"content": {"role": "model", "parts": [{"text": f"answer to {key}"}]},
                                "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7}}})
                for key in stored.keys]
            self.files[stored.result_file] = StoredFile(stored.result_file, None,
                                                        ("\n".join(lines) + "\n").encode(), time.time(), "result")
        done = len(stored.keys) if state is JobState.SUCCEEDED else 0
        return RemoteJob(
            name=stored.name, display_name=stored.display_name, state=state,
            result_file=stored.result_file if state is JobState.SUCCEEDED else None,
            request_count=len(stored.keys), succeeded=done, failed=0, pending=len(stored.keys) - done,
            create_time=stored.create_time, end_time=stored.end_time if state.ended else None,
            input_file=stored.input_file, state_text=state.value,
        )

    @staticmethod
    def _remote_file(stored: StoredFile) -> RemoteFile:
        return RemoteFile(name=stored.name, display_name=stored.display_name, size_bytes=len(stored.content),
                          sha256_hex=hashlib.sha256(stored.content).hexdigest(),
                          expires_at=stored.created + FILE_LIFETIME, state=FileState.ACTIVE,
                          create_time=stored.created)


def opener(backend: MemoryBackend) -> BackendOpener:
    """An opener for core/compose.py's table that hands out `backend` (the test keeps it to look inside)."""

    def open_memory(settings: Settings, api_key: str, *, model: str, base_url: str | None,
                    trace: ApiTrace | None) -> BatchBackend:
        return backend

    return open_memory
