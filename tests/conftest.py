"""Shared fixtures: a fake API key, the in-process emulator, input folders, engine settings."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from .inputs import write_batch_files as write_batch_files  # the tests import it from here
from .reliability.support import FIGURES

FIGURES_FILE_ENV = "GEMBATCH_FIGURES_FILE"
_WORKER_FIGURES = "gembatch_reliability_figures"

FAKE_KEY = "FAKEKEY-gembatch-test-0123456789-not-real"


@pytest.fixture(autouse=True)
def fake_api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with a recognisable fake key and never with a real one."""
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    return FAKE_KEY


@pytest.fixture
def folder_fsync_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fsync of a folder fails with EIO (a rename went through; making it durable does not)."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.fixture
def emulator() -> Iterator[object]:
    """A fast emulator on 127.0.0.1 (port 0) with short job durations."""
    from gembatch.core.emulator import Emulator, EmulatorSettings

    settings = EmulatorSettings(pending_seconds=0.1, running_seconds=0.2, running_seconds_per_request=0.0)
    with Emulator(settings) as emu:
        yield emu


def pytest_configure(config: pytest.Config) -> None:
    """A pytest-xdist worker starts with SIGINT ignored, and its children would inherit that: give it Python's
    usual Ctrl-C, so the tests see (and the processes they start inherit) what a terminal gives."""
    if hasattr(config, "workerinput"):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker: hand this worker's reliability figures to the controller."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output[_WORKER_FIGURES] = dict(FIGURES)


def pytest_testnodedown(node, error) -> None:
    """In the pytest-xdist controller: add a finished worker's figures (peaks and maxima are maxima, not sums)."""
    for name, value in getattr(node, "workeroutput", {}).get(_WORKER_FIGURES, {}).items():
        FIGURES[name] = max(FIGURES[name], value) if ("max" in name or "peak" in name) else FIGURES[name] + value


def pytest_terminal_summary(terminalreporter) -> None:
    """Print what the reliability tests tried (kills, faults, bad inputs) and what they found."""
    if not FIGURES or getattr(terminalreporter.config, "workeroutput", None) is not None:
        return
    terminalreporter.section("reliability figures")
    for name, value in sorted(FIGURES.items()):
        terminalreporter.write_line(f"{name}: {value}")
    target = os.environ.get(FIGURES_FILE_ENV)
    if target:
        Path(target).write_text(json.dumps(dict(sorted(FIGURES.items())), indent=1) + "\n", encoding="utf-8")
