"""`.ci/run`'s install of Chromium for the --serve browser test: without root and without a sudo that needs no
password, CI stops with a clear message (exit 1) instead of an unexplained abort under `set -e`. The script runs
from a copy, with stand-ins for id, sudo, apt-get and python3 on PATH, so nothing is installed or built."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "run"
MESSAGE = "CI needs Debian's chromium for the browser test: install it (apt-get install chromium) or run as root"


def stand_in(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\necho \"{name} $*\" >> \"$CALLS\"\n{body}\n")
    path.chmod(0o755)


def run_ci(tmp_path: Path, *, uid: int, sudo_ok: bool, apt_ok: bool) -> tuple[subprocess.CompletedProcess[str], str]:
    """`.ci/run` (a copy) with Chromium missing; returns its result and the stand-ins' calls, one a line."""
    project = tmp_path / "project"
    (project / ".ci").mkdir(parents=True)
    shutil.copy(SCRIPT, project / ".ci" / "run")
    stand_ins = tmp_path / "bin"
    stand_ins.mkdir()
    stand_in(stand_ins, "id", f"echo {uid}")
    # A sudo that needs a password fails at once with -n; a passwordless one runs the command after -n.
    stand_in(stand_ins, "sudo", 'shift; exec "$@"' if sudo_ok else "echo 'sudo: a password is required' >&2; exit 1")
    stand_in(stand_ins, "apt-get", "exit 0" if apt_ok else "echo 'E: could not get lock' >&2; exit 100")
    stand_in(stand_ins, "python3", "exit 42")  # the step after the install: reached means the install passed
    calls = tmp_path / "calls"
    calls.touch()
    environment = {**os.environ, "PATH": f"{stand_ins}:{os.environ['PATH']}", "CALLS": str(calls),
                   "GEMBATCH_CHROMIUM": str(tmp_path / "no-chromium")}
    result = subprocess.run(["bash", str(project / ".ci" / "run")], capture_output=True, text=True, timeout=60,
                            env=environment, stdin=subprocess.DEVNULL)
    return result, calls.read_text()


def test_without_root_and_without_passwordless_sudo_ci_says_what_it_needs(tmp_path: Path) -> None:
    result, calls = run_ci(tmp_path, uid=1000, sudo_ok=False, apt_ok=True)
    assert result.returncode == 1
    assert MESSAGE in result.stderr
    assert "apt-get" not in calls and "python3" not in calls  # stopped before anything else


def test_a_failed_install_is_said_too(tmp_path: Path) -> None:
    result, calls = run_ci(tmp_path, uid=1000, sudo_ok=True, apt_ok=False)
    assert result.returncode == 1
    assert "CI needs Debian's chromium for the browser test: installing it failed" in result.stderr
    assert "python3" not in calls


@pytest.mark.parametrize(("uid", "sudo_ok"), [(0, False), (1000, True)])
def test_as_root_or_with_passwordless_sudo_it_installs_and_goes_on(tmp_path: Path, uid: int, sudo_ok: bool) -> None:
    result, calls = run_ci(tmp_path, uid=uid, sudo_ok=sudo_ok, apt_ok=True)
    assert result.returncode == 42  # the stand-in python3: CI went on past the install
    assert "CI needs" not in result.stderr
    assert "apt-get install -y -qq chromium" in calls
    assert ("sudo -n" in calls) == (uid != 0)
