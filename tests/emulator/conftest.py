"""Fixtures for the emulator tests: a fast in-process emulator and real google-genai clients pointed at it."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import pytest
from gembatch.core.emulator import Emulator, EmulatorSettings
from google import genai
from google.genai import types

KEY = "test-key-not-real"
TERMINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}


def fast_settings(**overrides: object) -> EmulatorSettings:
    """Short job durations so a job ends well under a second."""
    values: dict[str, object] = {"pending_seconds": 0.1, "running_seconds": 0.2, "running_seconds_per_request": 0.0}
    values.update(overrides)
    return EmulatorSettings(**values)  # type: ignore[arg-type]


def make_client(base_url: str, timeout_ms: int = 10_000, key: str = KEY) -> genai.Client:
    """A real SDK client on the emulator, v1beta, with a timeout."""
    return genai.Client(api_key=key, http_options=types.HttpOptions(
        base_url=base_url, api_version="v1beta", timeout=timeout_ms))


def jsonl(n: int, prefix: str = "k", pad: int = 0) -> bytes:
    """n request lines keyed prefix-0 .. prefix-(n-1)."""
    lines = []
    for i in range(n):
        text = f"question {i}" + " lorem" * pad
        lines.append(json.dumps({"key": f"{prefix}-{i}", "request": {"contents": [{"parts": [{"text": text}]}]}}))
    return ("\n".join(lines) + "\n").encode()


def upload(client: genai.Client, data: bytes, display_name: str = "input", wait: bool = True,
           **config: object) -> types.File:
    """Upload bytes as JSONL through the SDK; with `wait`, poll files.get until the file leaves PROCESSING."""
    f = client.files.upload(file=io.BytesIO(data), config={"mime_type": "application/jsonl",
                                                           "display_name": display_name, **config})
    return wait_processed(client, f) if wait else f


def wait_processed(client: genai.Client, f: types.File, timeout: float = 10.0) -> types.File:
    """Poll files.get until the file is ACTIVE or FAILED, as a client of the real service must."""
    deadline = time.monotonic() + timeout
    while f.state is not None and f.state.name == "PROCESSING":
        if time.monotonic() > deadline:
            raise AssertionError(f"{f.name} still PROCESSING after {timeout}s")
        time.sleep(0.05)
        assert f.name is not None
        f = client.files.get(name=f.name)
    return f


def wait_done(client: genai.Client, name: str, timeout: float = 10.0) -> types.BatchJob:
    """Poll batches.get until the job ends."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.batches.get(name=name)
        if job.state is not None and job.state.name in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} still {job.state} after {timeout}s")
        time.sleep(0.05)


def raw_get(client: genai.Client, path: str) -> dict:
    """The raw JSON of a GET (through the SDK's private request helper, as the engine does)."""
    return json.loads(client._api_client.request("get", path, {}).body)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """A fast emulator on 127.0.0.1, port 0."""
    with Emulator(fast_settings()) as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator) -> Iterator[genai.Client]:
    """A sync SDK client on `emu`."""
    c = make_client(emu.base_url)
    yield c
    c.close()
