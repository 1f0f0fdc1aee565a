"""Faults on demand (5xx, lost answers, slow answers), reproducible by seed; API-key checks."""

from __future__ import annotations

import time

import httpx2
import pytest
from gembatch.core.emulator import Emulator
from google.genai import errors

from .conftest import KEY, fast_settings, jsonl, make_client, upload

MODEL = "gemini-2.5-flash"


def test_server_errors_limited_to_kinds() -> None:
    with Emulator(fast_settings(server_error_rate=1.0, server_error_kinds={"batches.create"})) as emu:
        client = make_client(emu.base_url)
        f = upload(client, jsonl(1))  # uploads are not faulted
        with pytest.raises(errors.ServerError) as info:
            client.batches.create(model=MODEL, src=f.name)
        assert info.value.code in (500, 503)
        assert info.value.details["error"]["status"] in ("INTERNAL", "UNAVAILABLE")
        assert emu.jobs() == []
        assert emu.journal()[-1].note == "fault:5xx"
        emu.settings.server_error_rate = 0.0
        client.batches.create(model=MODEL, src=f.name)


def test_server_errors_are_seeded() -> None:
    def outcomes(seed: int) -> list[int]:
        with Emulator(fast_settings(server_error_rate=0.5, seed=seed)) as emu, httpx2.Client() as http:
            for _ in range(20):
                http.get(f"{emu.base_url}/v1beta/batches?pageSize=1", headers={"x-goog-api-key": KEY})
            return [e.status for e in emu.journal()]

    first = outcomes(1)
    assert first == outcomes(1)
    assert {200} < set(first) <= {200, 500, 503}
    assert first != outcomes(2)


def test_lost_create_close_takes_effect() -> None:
    with Emulator(fast_settings(lost_create_rate=1.0)) as emu:
        client = make_client(emu.base_url)
        f = upload(client, jsonl(2))
        with pytest.raises(Exception) as info:
            client.batches.create(model=MODEL, src=f.name, config={"display_name": "lost-1"})
        assert not isinstance(info.value, errors.APIError)
        assert isinstance(info.value, httpx2.TransportError)
        jobs = emu.jobs()
        assert [j["display_name"] for j in jobs] == ["lost-1"]
        entry = emu.journal()[-1]
        assert (entry.kind, entry.status, entry.note, entry.resource) == (
            "batches.create", 0, "fault:lost-answer", jobs[0]["name"])
        emu.settings.lost_create_rate = 0.0
        client.batches.create(model=MODEL, src=f.name)  # the client recovers on a new connection
        assert len(emu.jobs()) == 2


def test_lost_create_delay_longer_than_timeout() -> None:
    settings = fast_settings(lost_create_rate=1.0, lost_create_mode="delay", lost_create_delay_seconds=3)
    with Emulator(settings) as emu:
        client = make_client(emu.base_url, timeout_ms=1_000)
        f = upload(client, jsonl(2))
        started = time.monotonic()
        with pytest.raises(httpx2.TimeoutException):
            client.batches.create(model=MODEL, src=f.name, config={"display_name": "late"})
        assert time.monotonic() - started < 2.5
        assert [j["display_name"] for j in emu.jobs()] == ["late"]


def test_lost_answer_other_kinds() -> None:
    with Emulator(fast_settings(lost_answer_rate=1.0, lost_answer_kinds={"files.get"})) as emu:
        client = make_client(emu.base_url)
        f = upload(client, jsonl(1), wait=False)
        with pytest.raises(httpx2.TransportError):
            client.files.get(name=f.name)
        assert emu.journal()[-1].note == "fault:lost-answer"


def test_slow_answers() -> None:
    with Emulator(fast_settings(slow_seconds=0.3)) as emu:
        client = make_client(emu.base_url)
        started = time.monotonic()
        list(client.batches.list(config={"page_size": 5}))
        assert time.monotonic() - started >= 0.3


def test_api_key_required(emu: Emulator) -> None:
    response = httpx2.get(f"{emu.base_url}/v1beta/batches")
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["status"] == "PERMISSION_DENIED" and response.headers["content-type"].startswith("application/json")
    assert httpx2.get(f"{emu.base_url}/v1beta/batches?key={KEY}").status_code == 200
    assert emu.journal()[0].note == "auth:missing-key"
    assert "REDACTED" in emu.journal()[1].path and KEY not in emu.journal()[1].path


def test_configured_api_key_must_match() -> None:
    with Emulator(fast_settings(api_key="the-right-key")) as emu:
        wrong = make_client(emu.base_url, key="a-wrong-key")
        with pytest.raises(errors.ClientError) as info:
            list(wrong.batches.list(config={"page_size": 1}))
        assert info.value.code == 400 and "API key not valid" in info.value.message
        right = make_client(emu.base_url, key="the-right-key")
        assert list(right.batches.list(config={"page_size": 1})) == []


def test_unknown_route_is_404(emu: Emulator) -> None:
    response = httpx2.get(f"{emu.base_url}/v1beta/tunedModels", headers={"x-goog-api-key": KEY})
    assert response.status_code == 404 and response.json()["error"]["status"] == "NOT_FOUND"


def test_stop_drops_keep_alive_connections() -> None:
    emu = Emulator(fast_settings())
    client = make_client(emu.start())
    assert list(client.batches.list(config={"page_size": 1})) == []
    emu.stop()
    with pytest.raises(httpx2.TransportError):
        list(client.batches.list(config={"page_size": 1}))
