"""Shared fixtures: a fake API key, the in-process emulator, input folders, engine settings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

FAKE_KEY = "FAKEKEY-gembatch-test-0123456789-not-real"


@pytest.fixture(autouse=True)
def fake_api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with a recognisable fake key and never with a real one."""
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    return FAKE_KEY


def write_batch_files(folder: Path, files: int, requests: int, *, prefix: str = "part", pad: int = 0) -> list[Path]:
    """`files` JSONL inputs of `requests` lines each, keys unique across the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in range(1, files + 1):
        lines = []
        for r in range(1, requests + 1):
            text = f"question {f}.{r}" + " lorem" * pad
            lines.append(json.dumps({"key": f"{prefix}-{f}-{r}",
                                     "request": {"contents": [{"parts": [{"text": text}]}]}}))
        path = folder / f"{prefix}_{f:03d}.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


@pytest.fixture
def emulator() -> Iterator[object]:
    """A fast emulator on 127.0.0.1 (port 0) with short job durations."""
    from gembatch.core.emulator import Emulator, EmulatorSettings

    settings = EmulatorSettings(pending_seconds=0.1, running_seconds=0.2, running_seconds_per_request=0.0)
    with Emulator(settings) as emu:
        yield emu
