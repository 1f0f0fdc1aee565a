"""A browser tab's app process: its output is drained after the tab went away, and stopping it is a SIGTERM."""

from __future__ import annotations

import asyncio
import shlex
import sys

from gembatch.tui.serve import TabSession
from textual_serve.download_manager import DownloadManager

# A stand-in app: the ready line, 2 MB of data packets (far more than a pipe holds), then exit code 7.
CHATTY_APP = (
    "import sys; out = sys.stdout.buffer; out.write(b'__GANGLION__\\n'); chunk = b'x' * 65536\n"
    "for _ in range(32): out.write(b'D' + len(chunk).to_bytes(4, 'big') + chunk)\n"
    "out.flush(); sys.exit(7)"
)
# A stand-in app that ignores SIGTERM (a hung one).
STUBBORN_APP = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "out = sys.stdout.buffer; out.write(b'__GANGLION__\\n'); out.flush()\n"
    "time.sleep(60)"
)
# A stand-in app that waits until a signal ends it, and says which one.
WAITING_APP = (
    "import signal, sys, time; out = sys.stdout.buffer; out.write(b'__GANGLION__\\n'); out.flush()\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(43))\n"
    "time.sleep(60)"
)


def session_for(script: str, sent: list[bytes], browser_open: bool) -> TabSession:
    async def write_bytes(data: bytes) -> None:
        if not browser_open:
            raise ConnectionResetError("Cannot write to closing transport")
        sent.append(data)

    async def write_str(text: str) -> None:
        return None

    async def close() -> None:
        return None

    command = "exec " + shlex.join([sys.executable, "-c", script])
    return TabSession(command, write_bytes=write_bytes, write_str=write_str, close=close,
                      download_manager=DownloadManager())


async def wait_for_exit(session: TabSession, timeout: float = 15.0) -> int | None:
    deadline = asyncio.get_running_loop().time() + timeout
    while session.exit_code is None and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return session.exit_code


async def test_output_after_the_tab_closed_is_drained_so_the_app_can_finish() -> None:
    sent: list[bytes] = []
    session = session_for(CHATTY_APP, sent, browser_open=False)
    await session.start(80, 24)
    try:
        assert await wait_for_exit(session) == 7  # not blocked on a full pipe
        assert session.browser_gone and sent == []
    finally:
        await session.stop()
    assert session.exit_code == 7  # it had ended: no signal was sent


async def test_output_reaches_an_open_tab() -> None:
    sent: list[bytes] = []
    session = session_for(CHATTY_APP, sent, browser_open=True)
    await session.start(80, 24)
    await wait_for_exit(session)
    await session.stop()
    assert sum(len(data) for data in sent) == 32 * 65536
    assert not session.browser_gone


async def test_stop_is_a_sigterm_and_waits_for_the_app() -> None:
    session = session_for(WAITING_APP, [], browser_open=True)
    await session.start(80, 24)
    await asyncio.sleep(0.5)  # the app is up and waiting
    await asyncio.wait_for(session.stop(), 15)
    assert session.exit_code == 43  # its own SIGTERM handler ran (the app saves its checkpoint there)


async def test_stop_kills_an_app_that_ignores_sigterm_after_the_grace() -> None:
    session = session_for(STUBBORN_APP, [], browser_open=True)
    await session.start(80, 24)
    await asyncio.sleep(0.5)  # the app is up and ignores SIGTERM
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(session.stop(grace=1.0), 15) is True
    assert asyncio.get_running_loop().time() - started >= 0.9
    assert session.exit_code == -9  # SIGKILL
    assert session.kill() is False  # it has ended: nothing more to kill


async def test_stop_kills_nothing_that_stops_in_time() -> None:
    session = session_for(WAITING_APP, [], browser_open=True)
    await session.start(80, 24)
    await asyncio.sleep(0.5)
    assert await asyncio.wait_for(session.stop(grace=10.0), 15) is False
    assert session.exit_code == 43
