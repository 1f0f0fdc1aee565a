"""A dropped terminal: the real command in a pseudo-terminal whose master side is closed (what sshd and tmux do)."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import pytest
from gembatch.core.checkpoint_store import CheckpointStore

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="pseudo-terminal behaviour checked on Linux")


def read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {marker!r} on the terminal within {timeout}s")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen


def wait_exit(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the app was still running {timeout}s after the hangup")


def test_sighup_saves_the_checkpoint_and_exits_129(tmp_path: Path) -> None:
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="80", LINES="24")
    pid, master = pty.fork()
    if pid == 0:  # the child: a session leader whose controlling terminal is the pty
        os.execve(sys.executable, [sys.executable, "-m", "gembatch.tui", "--demo", "--output", str(tmp_path)], env)
    try:
        read_until(master, b"Batches", 30)
        time.sleep(1.5)  # mid-run: jobs in flight
        hung_up_at = time.monotonic()
    finally:
        os.close(master)  # the terminal is gone: the kernel sends SIGHUP to the session leader
    code = wait_exit(pid, 30)
    took = time.monotonic() - hung_up_at
    assert code == 129, code
    checkpoints = list(tmp_path.glob("gembatch-demo-*/gembatch.checkpoint.json"))
    assert len(checkpoints) == 1
    store = CheckpointStore(checkpoints[0])
    saved = store.load()
    assert saved is not None and len(saved.records) == 150
    store.acquire_lock()  # released by the app on its way out
    store.release_lock()
    print(f"exit 129 {took:.2f}s after the hangup")
