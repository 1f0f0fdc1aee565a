"""HTTP: routes, API-key check, faults, journal, and a ThreadingHTTPServer that runs in a background thread."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from .api import Api
from .calls import Call, Reply
from .errors import ApiError, invalid_key, missing_key, not_found
from .faults import Faults
from .journal import Journal, JournalEntry
from .settings import EmulatorSettings

_VER = r"(?P<ver>v1[a-z0-9]*)"
_FILE = r"(?P<file_id>[^/:]+)"
_JOB = r"(?P<job_id>[^/:]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(pattern), kind)
    for method, pattern, kind in (
        ("POST", rf"^/upload/{_VER}/files$", "upload.start"),
        ("GET", rf"^/{_VER}/files$", "files.list"),
        ("GET", rf"^/(?:download/)?{_VER}/files/{_FILE}:download$", "files.download"),
        ("GET", rf"^/{_VER}/files/{_FILE}$", "files.get"),
        ("DELETE", rf"^/{_VER}/files/{_FILE}$", "files.delete"),
        ("POST", rf"^/{_VER}/models/(?P<model>[^/:]+):(?P<method>batchGenerateContent|asyncBatchEmbedContent)$",
         "batches.create"),
        ("GET", rf"^/{_VER}/models/(?P<model>[^/:]+)$", "models.get"),
        ("POST", rf"^/{_VER}/models/(?P<model>[^/:]+):countTokens$", "models.countTokens"),
        ("GET", rf"^/{_VER}/models$", "models.list"),
        ("GET", rf"^/{_VER}/batches$", "batches.list"),
        ("GET", rf"^/{_VER}/batches/{_JOB}$", "batches.get"),
        ("DELETE", rf"^/{_VER}/batches/{_JOB}$", "batches.delete"),
        ("POST", rf"^/{_VER}/batches/{_JOB}:delete$", "batches.delete"),
        ("POST", rf"^/{_VER}/batches/{_JOB}:cancel$", "batches.cancel"),
    )
]
_BLOCK = 1024 * 1024


def route(method: str, path: str, query: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(call kind, path parameters); kind "unknown" when nothing matches."""
    for route_method, pattern, kind in _ROUTES:
        match = pattern.match(path)
        if match and method == route_method:
            if kind == "upload.start" and "upload_id" in query:
                kind = "upload.chunk"
            return kind, match.groupdict()
    return "unknown", {}


def redact(raw_path: str) -> str:
    """The request path with any `key=` query value hidden."""
    split = urlsplit(raw_path)
    if not split.query:
        return raw_path
    pairs = [(k, "REDACTED" if k == "key" else v) for k, v in parse_qsl(split.query, keep_blank_values=True)]
    return f"{split.path}?{urlencode(pairs)}"


@dataclass
class ServerContext:
    """What request handlers need from the emulator."""

    api: Api
    faults: Faults
    journal: Journal
    settings: Callable[[], EmulatorSettings]
    base_url: Callable[[], str]
    stopping: threading.Event


class _Body:
    """The request body, read at most Content-Length bytes, in blocks."""

    def __init__(self, rfile: Any, length: int) -> None:
        self._rfile = rfile
        self.remaining = max(0, length)

    def read(self, size: int) -> bytes:
        size = min(size, self.remaining)
        if size <= 0:
            return b""
        data = self._rfile.read(size)
        self.remaining -= len(data)
        if not data:
            self.remaining = 0
        return bytes(data)

    def read_all(self) -> bytes:
        return self.read(self.remaining)

    def drain(self) -> None:
        while self.remaining and self.read(_BLOCK):
            pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "gembatch-emulator"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence http.server's own log; the journal listener logs calls."""

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def _serve(self) -> None:
        ctx = self.server.context
        started = time.time()
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        body = _Body(self.rfile, length)
        kind, params = route(self.command, path, query)
        host = self.headers.get("Host")
        call = Call(method=self.command, kind=kind, params=params, query=query, headers=self.headers, body=body,
                    host_url=f"http://{host}" if host else ctx.base_url(), now=started)
        lost: tuple[str, float] | None = None
        note: str | None = None
        try:
            settings = ctx.settings()
            if settings.slow_seconds > 0:
                ctx.stopping.wait(settings.slow_seconds)
            call.now = time.time()
            if kind == "unknown":
                raise not_found(f"Method not found: {self.command} {path}")
            if kind != "upload.chunk":  # the SDK sends no key with upload chunks
                self._check_key(settings, query)
            fault = ctx.faults.server_error(kind)
            if fault is not None:
                raise fault
            reply = ctx.api.handle(call)
            lost = ctx.faults.lost_answer(kind)
        except ApiError as exc:
            reply = Reply(status=exc.code, json=exc.body())
            note = exc.note
        except ConnectionError:
            self.close_connection = True
            ctx.journal.add(self._entry(started, 0, call, "client-went-away"))
            return
        except Exception as exc:  # a bug in the emulator: answer 500 and say so on stderr
            traceback.print_exc(file=sys.stderr)
            reply = Reply(status=500, json=ApiError(500, "INTERNAL", f"Emulator bug: {exc!r}").body())
            note = "emulator-bug"
        if kind == "upload.chunk" and reply.status != 200:
            reply.headers["X-Goog-Upload-Status"] = "final"  # ends the SDK's chunk loop at once
        if body.remaining > 64 * _BLOCK:
            self.close_connection = True  # too much unread body to drain; drop the connection after answering
        else:
            body.drain()
        if lost is not None:
            note = "fault:lost-answer"
        ctx.journal.add(self._entry(started, 0 if lost is not None else reply.status, call, note))
        if lost is not None:
            mode, delay = lost
            if mode == "close" or ctx.stopping.wait(delay):
                self.close_connection = True
                return
        self._send(reply)

    def _check_key(self, settings: EmulatorSettings, query: dict[str, str]) -> None:
        key = (self.headers.get("x-goog-api-key") or query.get("key") or "").strip()
        if not key:
            raise missing_key()
        if settings.api_key and key != settings.api_key:
            raise invalid_key()

    def _entry(self, started: float, status: int, call: Call, note: str | None) -> JournalEntry:
        return JournalEntry(at=started, method=self.command, path=redact(self.path), status=status, kind=call.kind,
                            display_name=call.display_name, sha256=call.sha256, resource=call.resource, note=note)

    def _send(self, reply: Reply) -> None:
        try:
            if reply.stream is not None:
                self._send_file(reply)
                return
            data = b"" if reply.json is None else json.dumps(reply.json).encode()
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.json is not None:
                self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send_file(self, reply: Reply) -> None:
        assert reply.stream is not None
        try:
            source = reply.stream.open("rb")
        except FileNotFoundError:
            self._send(Reply(status=404, json=not_found().body()))
            return
        with source:
            self.send_response(200)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(reply.stream_size))
            self.end_headers()
            while block := source.read(_BLOCK):
                self.wfile.write(block)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], context: ServerContext) -> None:
        super().__init__(address, _Handler)
        self.context = context
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def track(self, connection: socket.socket, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def drop_connections(self) -> None:
        """Shut every open connection (idle keep-alive ones included) so no handler outlives the server."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class HttpServer:
    """The listening socket and its serving thread."""

    def __init__(self, host: str, port: int, context: ServerContext) -> None:
        self._server = _Server((host, port), context)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="gembatch-emulator", daemon=True)

    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, drop open connections, close the socket."""
        self._server.shutdown()
        self._server.drop_connections()
        self._server.server_close()
        self._thread.join(timeout=5)
