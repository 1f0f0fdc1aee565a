"""The resumable upload protocol: start, chunks (offset-checked), finalize; bytes stream to disk.

While bytes arrive they are hashed and their request lines counted, so a 1 GiB upload costs no more than a
1 MiB buffer. Any error on a chunk ends the session (the server answers it with `X-Goog-Upload-Status: final`).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .calls import Call, Methods, Reply, json_body, pick
from .errors import ApiError, already_exists, invalid_argument, not_found, unsupported_mime_type
from .quotas import STORAGE, LineCounter, quota_error
from .store import FileRecord, random_id
from .wire import file_json

CHUNK_GRANULARITY = 8 * 1024 * 1024
_BLOCK = 1024 * 1024
MAX_FILE_ID = 40
_FILE_ID = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_MIB = 1024 * 1024
PROCESSING_FAILED_ERROR = {"code": 13, "message": "The file could not be processed (emulated)."}


@dataclass(eq=False)
class UploadSession:
    """A resumable upload between its start and its finalize; `lock` serialises its chunks."""

    upload_id: str
    name: str
    display_name: str | None
    mime_type: str
    declared_size: int | None
    path: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    received: int = 0
    closed: bool = False
    hasher: Any = field(default_factory=hashlib.sha256)
    counter: LineCounter = field(default_factory=LineCounter)

    def append(self, read: Callable[[int], bytes], length: int) -> None:
        """Stream `length` bytes from `read` onto the end of the file, 1 MiB at a time."""
        with self.path.open("ab") as out:
            remaining = length
            while remaining > 0:
                block = read(min(remaining, _BLOCK))
                if not block:
                    raise ConnectionError("the client went away in the middle of a chunk")
                out.write(block)
                self.hasher.update(block)
                self.counter.feed(block)
                remaining -= len(block)
                self.received += len(block)

    def sha256_hex(self) -> str:
        """The hex sha256 of every byte received so far."""
        return str(self.hasher.hexdigest())


class UploadMethods(Methods):
    """upload.start and upload.chunk."""

    def upload_start(self, call: Call) -> Reply:
        """Open a resumable session; answer its absolute URL in X-Goog-Upload-URL."""
        if (call.headers.get("X-Goog-Upload-Command") or "").strip().lower() != "start":
            raise invalid_argument("Only resumable uploads are supported: send X-Goog-Upload-Command: start.")
        meta = pick(json_body(call), "file") or {}
        settings = self.settings()
        display_name = pick(meta, "displayName", "display_name")
        if display_name is not None and (not isinstance(display_name, str) or len(display_name) > 512):
            raise invalid_argument("* CreateFileRequest.file.display_name: must be at most 512 characters.")
        mime = call.headers.get("X-Goog-Upload-Header-Content-Type") or pick(meta, "mimeType", "mime_type")
        declared_text = call.headers.get("X-Goog-Upload-Header-Content-Length") or pick(
            meta, "sizeBytes", "size_bytes")
        declared: int | None = None
        if declared_text not in (None, ""):
            try:
                declared = int(str(declared_text))
            except ValueError:
                raise invalid_argument(f"Invalid upload size: {declared_text!r}") from None
        if declared is not None and declared > settings.max_file_bytes:
            raise invalid_argument(
                f"File size {declared} bytes exceeds the limit of {settings.max_file_bytes} bytes per file.",
                note="limit:file-size")
        name = meta.get("name") if isinstance(meta, dict) else None
        with self.store.lock:
            if name:
                file_id = str(name).removeprefix("files/")
                if len(file_id) > MAX_FILE_ID or not _FILE_ID.match(file_id):
                    raise invalid_argument(
                        f"* CreateFileRequest.file.name: Invalid file name {name!r}: the id (after 'files/') "
                        "must be 1-40 lowercase letters, digits or dashes, and not start or end with a dash.")
                name = f"files/{file_id}"
                if self.store.name_taken(name, call.now):
                    raise already_exists(f"File {name} already exists.")
            else:
                name = self.store.new_file_name()
            self._check_storage(declared or 0, call.now)
            session = UploadSession(
                upload_id=random_id(40), name=name, display_name=display_name,
                mime_type=str(mime or "application/octet-stream"), declared_size=declared,
                path=self.store.new_path("upload"),
            )
            session.path.touch()
            self.store.sessions[session.upload_id] = session
        call.display_name, call.resource = display_name, name
        upload_url = (f"{call.host_url}/upload/{call.params['ver']}/files"
                      f"?upload_id={session.upload_id}&upload_protocol=resumable")
        return Reply(json=None, headers={
            "X-Goog-Upload-URL": upload_url,
            "X-Goog-Upload-Status": "active",
            "X-Goog-Upload-Chunk-Granularity": str(CHUNK_GRANULARITY),
        })

    def _check_storage(self, adding: int, now: float) -> None:
        # The service's exact answer over the 20 GB cap is unknown (a guess): a 429 shaped like the batch ones.
        settings = self.settings()
        cap = settings.storage_cap_bytes
        if cap and self.store.uploaded_bytes(now) + adding > cap:
            raise quota_error(STORAGE, cap, None, details=settings.quota_error_details)

    def upload_chunk(self, call: Call) -> Reply:
        """Take one chunk at the expected offset; on finalize, keep the file and answer {"file": File}."""
        with self.store.lock:
            session = self.store.sessions.get(call.query.get("upload_id", ""))
        if session is None or session.closed:
            raise not_found("No active upload session with this upload_id.")
        commands = {c.strip().lower() for c in (call.headers.get("X-Goog-Upload-Command") or "").split(",")}
        with session.lock:
            if session.closed:
                raise not_found("No active upload session with this upload_id.")
            call.display_name, call.resource = session.display_name, session.name
            if "query" in commands:
                return Reply(json=None, headers={"X-Goog-Upload-Status": "active",
                                                 "X-Goog-Upload-Size-Received": str(session.received)})
            try:
                return self._take_chunk(call, session, commands)
            except (ApiError, ConnectionError):
                self._close_session(session)
                raise

    def _take_chunk(self, call: Call, session: UploadSession, commands: set[str]) -> Reply:
        if "cancel" in commands:
            self._close_session(session)
            return Reply(json=None, headers={"X-Goog-Upload-Status": "cancelled"})
        if not commands & {"upload", "finalize"}:
            raise invalid_argument("X-Goog-Upload-Command must be upload, finalize, query or cancel.")
        offset_text = call.headers.get("X-Goog-Upload-Offset")
        if offset_text is not None and offset_text.strip() != str(session.received):
            raise invalid_argument(
                f"Invalid X-Goog-Upload-Offset {offset_text.strip()}: the server has received "
                f"{session.received} bytes.", note="upload:bad-offset")
        length = call.body.remaining
        limit = self.settings().max_file_bytes
        if session.declared_size is not None and session.received + length > session.declared_size:
            raise invalid_argument(
                f"Upload exceeds the declared size of {session.declared_size} bytes.", note="upload:too-long")
        if session.received + length > limit:
            raise invalid_argument(f"File exceeds the limit of {limit} bytes per file.", note="limit:file-size")
        if length:
            session.append(call.body.read, length)
        if "finalize" not in commands:
            return Reply(json=None, headers={"X-Goog-Upload-Status": "active"})
        return self._finalize(call, session)

    def _finalize(self, call: Call, session: UploadSession) -> Reply:
        if session.declared_size is not None and session.received != session.declared_size:
            raise invalid_argument(
                f"Upload finalized after {session.received} bytes but {session.declared_size} were declared.",
                note="upload:too-short")
        settings = self.settings()
        refused = {m.strip().lower() for m in settings.refused_mime_types}
        if session.mime_type.strip().lower() in refused:  # the service refuses at finalize (python-genai #1547)
            raise unsupported_mime_type(session.mime_type)
        session.counter.finish()
        sha = session.sha256_hex()
        processing = max(0.0, settings.file_processing_seconds
                         + settings.file_processing_seconds_per_mib * session.received / _MIB)
        failed = self.faults.file_fails()
        with self.store.lock:
            if self.store.live_file(session.name, call.now) is not None:
                raise already_exists(f"File {session.name} already exists.")
            self._check_storage(session.received, call.now)
            record = FileRecord(
                serial=self.store.next_serial(), name=session.name, display_name=session.display_name,
                mime_type=session.mime_type, size_bytes=session.received, sha256_hex=sha,
                create_time=call.now, expiration_time=call.now + settings.file_ttl_seconds,
                source="UPLOADED", path=session.path, request_count=session.counter.requests,
                token_estimate=session.counter.tokens, available_at=call.now, active_at=call.now + processing,
                error=dict(PROCESSING_FAILED_ERROR) if failed else None,
            )
            self.store.add_file(record)
            session.closed = True
            self.store.sessions.pop(session.upload_id, None)
        call.sha256 = sha
        return Reply(json={"file": file_json(record, self.base_url(), call.now)},
                     headers={"X-Goog-Upload-Status": "final"})

    def _close_session(self, session: UploadSession) -> None:
        session.closed = True
        with self.store.lock:
            self.store.sessions.pop(session.upload_id, None)
        session.path.unlink(missing_ok=True)
