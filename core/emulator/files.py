"""files.get, files.list, files.delete and files.download (generated files only, streamed from disk)."""

from __future__ import annotations

from typing import Any

from . import lifecycle
from .calls import Call, Methods, Reply, page_size
from .errors import invalid_argument, missing_file
from .store import FileRecord, paginate
from .uploads import MAX_FILE_ID
from .wire import file_json

FILES_PAGE_DEFAULT, FILES_PAGE_MAX = 10, 100


class FileMethods(Methods):
    """The Files API calls other than upload."""

    def _live_file(self, call: Call, request: str) -> FileRecord:
        file_id = call.params["file_id"]
        name = f"files/{file_id}"
        call.resource = name
        if len(file_id) > MAX_FILE_ID and self.settings().long_file_id_bug and request:
            raise invalid_argument(
                f"* {request}.name: File ID (name excluding 'files/') cannot be more than 40 characters.\n",
                note="bug:long-file-id")
        with self.store.lock:
            lifecycle.advance(self.store, call.now)
            record = self.store.live_file(name, call.now)
        if record is None:
            raise missing_file(name, self.settings().missing_file_status)
        call.display_name, call.sha256 = record.display_name, record.sha256_hex
        return record

    def files_get(self, call: Call) -> Reply:
        """The File (403 or 404, per missing_file_status, once deleted or expired)."""
        return Reply(json=file_json(self._live_file(call, "GetFileRequest"), self.base_url(), call.now))

    def files_delete(self, call: Call) -> Reply:
        """Delete a file; answers {}."""
        record = self._live_file(call, "DeleteFileRequest")
        with self.store.lock:
            record.deleted = True
        return Reply(json={})

    def files_download(self, call: Call) -> Reply:
        """The raw bytes of a generated file."""
        record = self._live_file(call, "")
        if record.source != "GENERATED":
            raise invalid_argument(
                f"File {record.name} cannot be downloaded: only generated files can be downloaded.")
        return Reply(json=None, stream=record.path, stream_size=record.size_bytes,
                     headers={"Content-Type": "application/octet-stream"})

    def files_list(self, call: Call) -> Reply:
        """One page of live files, newest first."""
        size = page_size(call, FILES_PAGE_DEFAULT, FILES_PAGE_MAX)
        base = self.base_url()
        with self.store.lock:
            lifecycle.advance(self.store, call.now)
            page, token = paginate(self.store.live_files(call.now), lambda f: (-f.serial,), size,
                                   call.query.get("pageToken"))
            out: dict[str, Any] = {}
            if page:
                out["files"] = [file_json(f, base, call.now) for f in page]
        if token:
            out["nextPageToken"] = token
        return Reply(json=out)
