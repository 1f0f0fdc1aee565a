"""Stopping `--serve` when a tab's app does not stop: the first signal asks every app to stop (SIGTERM); a
second signal, or the grace period without the apps ending, kills the rest (SIGKILL) and the server exits with
the usual code. The server runs in a subprocess with a stand-in app that ignores SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession, CookieJar

TOKEN = "stop-test-token"
SERVER = (
    "import sys\n"
    "from gembatch.tui.serve import TabServer\n"
    "command, port, grace = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])\n"
    f"sys.exit(TabServer(command, '127.0.0.1', port, token={TOKEN!r}, stop_grace=grace).run())\n"
)
# A tab's app that ignores SIGTERM (a hung one): the ready line, its pid in a file, then it waits.
STUBBORN_APP = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "sys.stdout.buffer.write(b'__GANGLION__\\n'); sys.stdout.flush()\n"
    "time.sleep(120)\n"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, not yet reaped by its parent) counts as gone.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return True


class StubbornServer:
    """The server subprocess, its stderr, and its one tab's app (connected by a websocket client)."""

    def __init__(self, tmp_path: Path, grace: float) -> None:
        self.port = free_port()
        self.pid_file = tmp_path / "app.pid"
        self.err_path = tmp_path / "serve.err"
        command = "exec " + shlex.join([sys.executable, "-c", STUBBORN_APP, str(self.pid_file)])
        with self.err_path.open("wb") as err:
            self.process = subprocess.Popen([sys.executable, "-c", SERVER, command, str(self.port), repr(grace)],
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    @property
    def app_pid(self) -> int:
        return int(self.pid_file.read_text())

    async def until(self, done: object, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():  # type: ignore[operator]
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not happen within {timeout:g} s:\n{self.stderr}")
            await asyncio.sleep(0.05)

    async def exit_code(self, timeout: float) -> int:
        await self.until(lambda: self.process.poll() is not None, "the server's exit", timeout)
        return self.process.returncode

    def clean_up(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(self.app_pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def one_tab_open(tmp_path: Path, grace: float) -> AsyncIterator[StubbornServer]:
    """The server with one tab open (through the token's cookie, as a browser), its app running."""
    server = StubbornServer(tmp_path, grace)
    try:
        await server.until(lambda: "serving the UI" in server.stderr or server.process.poll() is not None,
                           "the server's start")
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as client:
            page = await client.get(f"http://127.0.0.1:{server.port}/?token={TOKEN}")
            assert page.status == 200
            socket_ = await client.ws_connect(f"http://127.0.0.1:{server.port}/ws?width=80&height=24")

            async def read_until_closed() -> None:
                async for _ in socket_:  # answers the server's close
                    pass

            reader = asyncio.create_task(read_until_closed())
            await server.until(lambda: server.pid_file.exists() and server.pid_file.read_text().isdigit(),
                               "the tab's app start")
            try:
                yield server
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
    finally:
        server.clean_up()


async def test_an_app_that_ignores_sigterm_is_killed_after_the_grace_and_the_exit_code_is_the_usual(
        tmp_path: Path) -> None:
    async with one_tab_open(tmp_path, grace=2) as server:
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert await server.exit_code(timeout=30) == 128 + signal.SIGTERM, server.stderr
        took = time.monotonic() - started
        assert 1.5 <= took < 20, took  # it waited the grace, not forever
        assert not alive(server.app_pid)
    log = server.stderr
    assert "stopping the apps of 1 browser tab(s)" in log
    assert ("killed 1 tab app that did not stop in 2 s; the checkpoint is safe: the same command resumes"
            in log), log
    assert "its app ended with exit code -9" in log


async def test_a_second_signal_kills_the_apps_that_are_still_stopping(tmp_path: Path) -> None:
    async with one_tab_open(tmp_path, grace=600) as server:
        server.process.send_signal(signal.SIGINT)
        await server.until(lambda: "stopping the apps of 1 browser tab(s)" in server.stderr, "the graceful stop")
        await asyncio.sleep(0.5)
        assert server.process.poll() is None and alive(server.app_pid)  # the first Ctrl-C waits for the app
        server.process.send_signal(signal.SIGINT)
        assert await server.exit_code(timeout=20) == 128 + signal.SIGINT, server.stderr  # the first signal's code
        assert not alive(server.app_pid)
    assert ("killed 1 tab app still stopping at a second SIGINT; the checkpoint is safe: the same command resumes"
            in server.stderr), server.stderr
