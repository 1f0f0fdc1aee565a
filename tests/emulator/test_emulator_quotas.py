"""The three batch quotas answer 429 RESOURCE_EXHAUSTED with QuotaFailure (and RetryInfo for creates/min)."""

from __future__ import annotations

import re

import pytest
from gembatch.core.emulator import Emulator
from gembatch.core.emulator.quotas import LineCounter, duration, estimate_tokens
from google.genai import errors

from .conftest import fast_settings, jsonl, make_client, upload, wait_done

MODEL = "gemini-2.5-flash"


def _details(exc: errors.APIError) -> dict[str, dict]:
    return {d["@type"].rsplit(".", 1)[-1]: d for d in exc.details["error"]["details"]}


def _violation(exc: errors.APIError) -> dict:
    return _details(exc)["QuotaFailure"]["violations"][0]


def test_concurrent_jobs() -> None:
    with Emulator(fast_settings(max_concurrent_jobs=2, pending_seconds=0.3, quota_error_details="full")) as emu:
        client = make_client(emu.base_url)
        f = upload(client, jsonl(1))
        first = client.batches.create(model=MODEL, src=f.name).name
        client.batches.create(model=MODEL, src=f.name)
        with pytest.raises(errors.ClientError) as info:
            client.batches.create(model=MODEL, src=f.name)
        exc = info.value
        assert exc.code == 429 and exc.status == "RESOURCE_EXHAUSTED"
        violation = _violation(exc)
        assert violation["quotaId"] == "BatchConcurrentJobsPerProject"
        assert violation["quotaMetric"] == "generativelanguage.googleapis.com/batch_concurrent_jobs"
        assert violation["quotaValue"] == "2" and violation["quotaDimensions"]["model"] == MODEL
        assert "RetryInfo" not in _details(exc)
        assert len(emu.jobs()) == 2  # the refused create created nothing
        assert emu.journal()[-1].note == "quota:concurrent-jobs"
        wait_done(client, first)
        wait_done(client, emu.jobs()[1]["name"])
        client.batches.create(model=MODEL, src=f.name)  # room again once jobs ended


def test_enqueued_tokens_per_model() -> None:
    data = jsonl(10)
    tokens = sum(estimate_tokens(line) for line in data.splitlines())
    with Emulator(fast_settings(enqueued_token_limit=tokens * 2 - 1, pending_seconds=5,
                                quota_error_details="full")) as emu:
        client = make_client(emu.base_url)
        f = upload(client, data)
        assert emu.files()[0]["tokens"] == tokens
        client.batches.create(model=MODEL, src=f.name)
        with pytest.raises(errors.ClientError) as info:
            client.batches.create(model=MODEL, src=f.name)
        assert info.value.code == 429
        violation = _violation(info.value)
        assert violation["quotaId"] == "BatchEnqueuedTokensPerModelPerProject"
        assert violation["quotaMetric"] == "generativelanguage.googleapis.com/batch_enqueued_tokens"
        assert "RetryInfo" not in _details(info.value)
        assert emu.journal()[-1].note == "quota:enqueued-tokens"
        client.batches.create(model="gemini-2.5-pro", src=f.name)  # the budget is per model
        emu.settings.enqueued_token_limit = tokens - 1  # a job bigger than the whole budget is refused too
        emu.fail_job(emu.jobs()[0]["name"])
        with pytest.raises(errors.ClientError):
            client.batches.create(model=MODEL, src=f.name)
        assert len(emu.jobs()) == 2


def test_creates_per_minute_with_retry_info() -> None:
    with Emulator(fast_settings(creates_per_minute=2, quota_error_details="full")) as emu:
        client = make_client(emu.base_url)
        f = upload(client, jsonl(1))
        client.batches.create(model=MODEL, src=f.name)
        client.batches.create(model=MODEL, src=f.name)
        with pytest.raises(errors.ClientError) as info:
            client.batches.create(model=MODEL, src=f.name)
        exc = info.value
        assert exc.code == 429
        assert _violation(exc)["quotaId"] == "BatchCreateRequestsPerMinutePerProject"
        retry = _details(exc)["RetryInfo"]["retryDelay"]
        assert re.fullmatch(r"\d+(\.\d+)?s", retry)
        assert 55 < float(retry[:-1]) <= 60
        assert emu.journal()[-1].note == "quota:creates-per-minute"
        emu.settings.creates_per_minute = 0  # off at run time
        client.batches.create(model=MODEL, src=f.name)
        assert len(emu.jobs()) == 3


def test_token_estimate_rule() -> None:
    assert estimate_tokens(b"abcd\n") == 1 and estimate_tokens(b"abcde\r\n") == 2
    counter = LineCounter()
    for piece in (b'{"a":', b' 1}\r', b"\n\n   \n", b"xyzzy"):  # lines split across chunks
        counter.feed(piece)
    counter.finish()
    assert (counter.requests, counter.tokens) == (2, 2 + 2)
    assert duration(12) == "12s" and duration(12.5) == "12.5s" and duration(0.0004) == "0.001s"
