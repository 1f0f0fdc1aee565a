"""`--trace FILE`: every API call of a run as one JSON line, with request and response contents and secrets removed.

Made for a user who meets something new on the real service: the file shows what the service said (method,
path, status, timing, the JSON bodies) without the prompts, the answers or the API key, so it can be shared and
the emulator can learn the behaviour.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode

from .redact import redact

# Keys whose values are what users send or get (prompts, answers, instructions): their size stays, not their text.
CONTENT_KEYS = frozenset({"contents", "candidates", "parts", "systemInstruction", "system_instruction", "text"})
_SECRET_QUERY = frozenset({"key", "api_key", "access_token"})
_KEPT_HEADERS = ("content-type", "x-goog-upload-status", "x-goog-upload-command", "location", "retry-after")
_BODY_LIMIT = 1_000_000  # JSON bodies larger than this are summarised, not copied


def scrub(value: Any) -> Any:
    """`value` with the contents under CONTENT_KEYS replaced by a note of their size."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in CONTENT_KEYS:
                size = len(json.dumps(item, ensure_ascii=False).encode())
                out[key] = f"<removed: {size} bytes>"
            else:
                out[key] = scrub(item)
        return out
    if isinstance(value, list):
        return [scrub(item) for item in value]
    return value


def _path(url: Any) -> str:
    query = [(k, v) for k, v in parse_qsl(str(url.query.decode() if isinstance(url.query, bytes) else url.query))
             if k.lower() not in _SECRET_QUERY]
    return str(url.path) + (f"?{urlencode(query)}" if query else "")


def _json_body(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    if "json" not in content_type.lower():
        return f"<{len(raw)} bytes of {content_type or 'unknown type'}>"
    if len(raw) > _BODY_LIMIT:
        return f"<{len(raw)} bytes of JSON>"
    try:
        return scrub(json.loads(raw))
    except (ValueError, UnicodeDecodeError):
        return f"<{len(raw)} bytes, not JSON>"


class ApiTrace:
    """Writes one JSON line per HTTP exchange through httpx event hooks; `close` ends the file."""

    def __init__(self, path: Path, clock: Any = time.time) -> None:
        self.path = path
        self._clock = clock
        self._out: TextIO | None = path.open("a", encoding="utf-8", buffering=1)
        self.calls = 0

    def event_hooks(self) -> dict[str, list[Any]]:
        """The hooks for an httpx(2) AsyncClient."""
        return {"request": [self._on_request], "response": [self._on_response]}

    async def _on_request(self, request: Any) -> None:
        request.extensions["gembatch_started"] = time.monotonic()

    async def _on_response(self, response: Any) -> None:
        request = response.request
        started = request.extensions.get("gembatch_started")
        content_type = response.headers.get("content-type", "")
        streamed_bytes = "json" not in content_type.lower()
        body: Any
        if streamed_bytes:  # a download or an upload answer without a body: never read it here
            length = response.headers.get("content-length")
            body = f"<{length} bytes of {content_type}>" if length and length != "0" else None
        else:
            body = _json_body(await response.aread(), content_type)
        request_type = request.headers.get("content-type", "")
        entry = {
            "at": round(self._clock(), 3),
            "method": request.method,
            "path": _path(request.url),
            "status": response.status_code,
            "ms": round((time.monotonic() - started) * 1000, 1) if started is not None else None,
            "request_headers": {k: v for k, v in request.headers.items() if k.lower().startswith("x-goog-upload")
                                and k.lower() != "x-goog-upload-file-name"},
            "request_body": _json_body(bytes(request.content), request_type) if _has_body(request) else None,
            "response_headers": {k: v for k, v in response.headers.items() if k.lower() in _KEPT_HEADERS},
            "response_body": body,
        }
        self.write(entry)

    def write(self, entry: dict[str, Any]) -> None:
        """Append one line (secrets removed); a closed trace drops it."""
        if self._out is None:
            return
        self.calls += 1
        self._out.write(redact(json.dumps(entry, ensure_ascii=False)) + "\n")

    def close(self) -> None:
        """Close the file (later calls are not written)."""
        if self._out is not None:
            self._out.close()
            self._out = None


def _has_body(request: Any) -> bool:
    try:
        return bool(request.content)
    except Exception:  # a streaming request body has no `.content`; it is the upload's bytes anyway
        return False
