"""Shared fixtures: a fake API key, the in-process emulator, input folders, engine settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .inputs import write_batch_files as write_batch_files  # the tests import it from here

FAKE_KEY = "FAKEKEY-gembatch-test-0123456789-not-real"


@pytest.fixture(autouse=True)
def fake_api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with a recognisable fake key and never with a real one."""
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    return FAKE_KEY


@pytest.fixture
def emulator() -> Iterator[object]:
    """A fast emulator on 127.0.0.1 (port 0) with short job durations."""
    from gembatch.core.emulator import Emulator, EmulatorSettings

    settings = EmulatorSettings(pending_seconds=0.1, running_seconds=0.2, running_seconds_per_request=0.0)
    with Emulator(settings) as emu:
        yield emu
