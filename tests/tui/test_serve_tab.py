"""A browser tab's app under `--serve` hangs up (SIGHUP, as on a closed terminal) when its server dies."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gembatch.tui.serve import TabSession
from gembatch.tui.serve_tab import TAB_PARENT_ENV
from textual_serve.download_manager import DownloadManager

# A stand-in tab app: it asks to hang up with its server, says it is ready, and notes a SIGHUP when one comes.
TAB_APP = """
import pathlib, signal, sys, time
marker = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGHUP, lambda *_: (marker.write_text("hangup"), sys.exit(0)))
from gembatch.tui.serve_tab import hang_up_with_server
hang_up_with_server()
marker.with_name("ready").write_text("ready")
time.sleep(60)
"""
# A stand-in server: it starts the tab app with its own pid in the environment (as TabSession does), then waits.
SERVER = """
import os, subprocess, sys, time
env = dict(os.environ)
if sys.argv[2] == "tell":
    env["GEMBATCH_SERVE_PARENT"] = str(os.getpid())
child = subprocess.Popen([sys.executable, "-c", sys.argv[3], sys.argv[1]], env=env)
print(child.pid, flush=True)
time.sleep(60)
"""


def wait_for(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


def kill_the_server_of_a_tab(tmp_path: Path, tell: bool) -> str | None:
    """Start a stand-in server and its tab app, SIGKILL the server; what the tab app noted within 5 s."""
    marker = tmp_path / "marker"
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(marker), "tell" if tell else "no", TAB_APP],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    child = int(server.stdout.readline())
    try:
        assert wait_for(tmp_path / "ready", 30)
        server.kill()
        server.wait(10)
        wait_for(marker, 5)
        return marker.read_text() if marker.exists() else None
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
        with contextlib.suppress(ProcessLookupError):  # the tab app left alone is still running
            os.kill(child, signal.SIGKILL)


def test_a_tab_app_hangs_up_when_its_server_is_killed(tmp_path: Path) -> None:
    assert kill_the_server_of_a_tab(tmp_path, tell=True) == "hangup"


def test_an_app_not_started_by_a_server_is_left_alone(tmp_path: Path) -> None:
    assert kill_the_server_of_a_tab(tmp_path, tell=False) is None


def test_a_tab_app_whose_server_is_gone_already_hangs_up_at_once(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    env = {**os.environ, TAB_PARENT_ENV: "999999999"}  # not its parent: the server it names has ended
    done = subprocess.run([sys.executable, "-c", TAB_APP, str(marker)], env=env, timeout=30)
    assert done.returncode == 0 and marker.read_text() == "hangup"
    assert not (tmp_path / "ready").exists()


def test_each_tab_app_is_told_the_servers_pid() -> None:
    async def nothing(_: object) -> None:
        return None

    session = TabSession("true", write_bytes=nothing, write_str=nothing, close=lambda: nothing(None),
                         download_manager=DownloadManager())
    assert session._build_environment(80, 24)[TAB_PARENT_ENV] == str(os.getpid())
