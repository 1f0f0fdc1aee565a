"""Batches through the real SDK: create (file and inline), get, list pages, cancel, delete, results, states."""

from __future__ import annotations

import asyncio
import io
import json
import time

import httpx2
import pytest
from gembatch.core.emulator import Emulator
from google.genai import errors

from .conftest import KEY, fast_settings, jsonl, make_client, raw_get, upload, wait_done

MODEL = "gemini-2.5-flash"


def _lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def test_create_get_download_both_paths(emu: Emulator, client) -> None:
    data = jsonl(5)
    f = upload(client, data)
    job = client.batches.create(model=MODEL, src=f.name, config={"display_name": "job-a"})
    assert job.name is not None and job.name.startswith("batches/")
    assert len(job.name.removeprefix("batches/")) == 36
    assert job.state is not None and job.state.name == "JOB_STATE_PENDING"
    assert job.display_name == "job-a" and job.model == "models/gemini-2.5-flash"
    done = wait_done(client, job.name)
    assert done.state.name == "JOB_STATE_SUCCEEDED"
    assert done.end_time is not None
    result = done.dest.file_name
    assert result == "files/batch-" + job.name.removeprefix("batches/")
    sdk_bytes = client.files.download(file=result)
    rest = httpx2.get(f"{emu.base_url}/download/v1beta/{result}:download?alt=media",
                      headers={"x-goog-api-key": KEY})
    assert rest.status_code == 200 and rest.content == sdk_bytes
    out = _lines(sdk_bytes)
    assert [line["key"] for line in out] == [line["key"] for line in _lines(data)]
    first = out[0]["response"]
    assert first["candidates"][0]["content"]["role"] == "model"
    assert {"usageMetadata", "modelVersion", "responseId"} <= first.keys()
    raw = raw_get(client, job.name)
    assert raw["done"] is True
    assert raw["metadata"]["batchStats"] == {"requestCount": "5", "successfulRequestCount": "5"}
    assert raw["response"]["responsesFile"] == result


def test_create_inline(client) -> None:
    src = [{"contents": [{"parts": [{"text": "Tell me a joke"}], "role": "user"}], "metadata": {"key": "k1"},
            "config": {"temperature": 0.5, "system_instruction": "be brief"}},
           {"contents": "plain string contents", "metadata": {"key": "k2"}}]
    job = client.batches.create(model=MODEL, src=src, config={"display_name": "inline"})
    done = wait_done(client, job.name)
    responses = done.dest.inlined_responses
    assert [r.metadata for r in responses] == [{"key": "k1"}, {"key": "k2"}]
    assert "Tell me a joke" in responses[0].response.text


async def test_async_create_get_list(emu: Emulator) -> None:
    client = make_client(emu.base_url)
    aio = client.aio
    f = await aio.files.upload(file=io.BytesIO(jsonl(3)), config={"mime_type": "application/jsonl"})
    while f.state.name == "PROCESSING":  # the upload answers PROCESSING; a create must wait for ACTIVE
        await asyncio.sleep(0.05)
        f = await aio.files.get(name=f.name)
    job = await aio.batches.create(model=MODEL, src=f.name, config={"display_name": "async-job"})
    listed = [j.name async for j in await aio.batches.list(config={"page_size": 10})]
    assert listed == [job.name]
    deadline = time.monotonic() + 10
    while (got := await aio.batches.get(name=job.name)).state.name != "JOB_STATE_SUCCEEDED":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    data = await aio.files.download(file=got.dest.file_name)
    assert [line["key"] for line in _lines(data)] == ["k-0", "k-1", "k-2"]
    raw = json.loads((await client._api_client.async_request("get", job.name, {})).body)
    assert raw["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    await aio.aclose()


def test_list_pages_newest_first(emu: Emulator, client) -> None:
    f = upload(client, jsonl(1))
    made = [client.batches.create(model=MODEL, src=f.name, config={"display_name": f"j{i}"}).name
            for i in range(5)]
    listed = [j.name for j in client.batches.list(config={"page_size": 2})]
    assert listed == list(reversed(made))
    pages = [e.path for e in emu.journal() if e.kind == "batches.list"]
    assert len(pages) == 3
    last = raw_get(client, pages[-1].split("/v1beta/", 1)[1])
    assert "nextPageToken" not in last and len(last["operations"]) == 1
    first = raw_get(client, "batches?pageSize=2")
    assert first["nextPageToken"] and len(first["operations"]) == 2


def test_cancel() -> None:
    with Emulator(fast_settings(pending_seconds=30)) as slow:
        client = make_client(slow.base_url)
        f = upload(client, jsonl(2))
        job = client.batches.create(model=MODEL, src=f.name)
        assert client.batches.cancel(name=job.name) is None
        got = client.batches.get(name=job.name)
        assert got.state.name == "JOB_STATE_CANCELLED" and got.dest is None
        raw = raw_get(client, job.name)
        assert raw["done"] is True and raw["error"]["code"] == 1
        assert raw["metadata"]["endTime"]
        assert "output" not in raw["metadata"]


def test_delete(emu: Emulator, client) -> None:
    f = upload(client, jsonl(2))
    job = client.batches.create(model=MODEL, src=f.name, config={"display_name": "doomed"})
    client.batches.delete(name=job.name)
    with pytest.raises(errors.ClientError) as info:
        client.batches.get(name=job.name)
    assert info.value.code == 404
    assert [j.name for j in client.batches.list(config={"page_size": 10})] == []
    assert emu.jobs()[0]["deleted"] is True
    response = httpx2.post(f"{emu.base_url}/v1beta/{job.name}:delete", headers={"x-goog-api-key": KEY})
    assert response.status_code == 404


def test_post_delete_form(emu: Emulator, client) -> None:
    f = upload(client, jsonl(1))
    job = client.batches.create(model=MODEL, src=f.name)
    response = httpx2.post(f"{emu.base_url}/v1beta/{job.name}:delete", headers={"x-goog-api-key": KEY})
    assert response.status_code == 200 and response.json() == {}
    assert emu.jobs()[0]["deleted"] is True


def test_failed_and_expired_on_demand() -> None:
    with Emulator(fast_settings(pending_seconds=30)) as slow:
        client = make_client(slow.base_url)
        f = upload(client, jsonl(2))
        a = client.batches.create(model=MODEL, src=f.name).name
        b = client.batches.create(model=MODEL, src=f.name).name
        slow.fail_job(a, message="boom")
        slow.expire_job(b)
        assert client.batches.get(name=a).state.name == "JOB_STATE_FAILED"
        assert client.batches.get(name=b).state.name == "JOB_STATE_EXPIRED"
        raw = raw_get(client, a)
        assert raw["done"] is True and raw["error"]["message"] == "boom"
        assert raw["metadata"]["batchStats"] == {"requestCount": "2", "failedRequestCount": "2"}
        with pytest.raises(ValueError):
            slow.fail_job(a)


def test_fail_next_jobs_and_job_ttl() -> None:
    with Emulator(fast_settings(job_ttl_seconds=0.2, pending_seconds=0.1, running_seconds=5)) as emu:
        client = make_client(emu.base_url)
        f = upload(client, jsonl(2))
        expiring = client.batches.create(model=MODEL, src=f.name).name
        emu.settings.job_ttl_seconds = 3600
        emu.settings.running_seconds = 0.1
        emu.fail_next_jobs(1)
        failing = client.batches.create(model=MODEL, src=f.name).name
        fine = client.batches.create(model=MODEL, src=f.name).name
        assert wait_done(client, expiring).state.name == "JOB_STATE_EXPIRED"
        assert wait_done(client, failing).state.name == "JOB_STATE_FAILED"
        assert wait_done(client, fine).state.name == "JOB_STATE_SUCCEEDED"
        assert [j["state"] for j in emu.jobs()] == [
            "BATCH_STATE_EXPIRED", "BATCH_STATE_FAILED", "BATCH_STATE_SUCCEEDED"]


def test_request_errors_and_stats() -> None:
    with Emulator(fast_settings(request_error_rate=0.3, seed=3)) as emu:
        client = make_client(emu.base_url)
        data = jsonl(40) + b"not json\n"
        f = upload(client, data)
        job = client.batches.create(model=MODEL, src=f.name)
        done = wait_done(client, job.name)
        out = _lines(client.files.download(file=done.dest.file_name))
        assert len(out) == 41
        errors_ = [line for line in out if "error" in line]
        assert 3 <= len(errors_) <= 30
        assert all(line["error"]["code"] == 3 and "details" not in line["error"] for line in errors_)
        assert "key" not in out[-1]
        stats = raw_get(client, job.name)["metadata"]["batchStats"]
        assert stats["failedRequestCount"] == str(len(errors_))
        assert stats["successfulRequestCount"] == str(41 - len(errors_))


def test_running_progress_in_batch_stats() -> None:
    with Emulator(fast_settings(pending_seconds=0.05, running_seconds=0.6)) as emu:
        client = make_client(emu.base_url)
        f = upload(client, jsonl(10))
        job = client.batches.create(model=MODEL, src=f.name)
        assert raw_get(client, job.name)["metadata"]["batchStats"] == {"requestCount": "10",
                                                                         "pendingRequestCount": "10"}
        time.sleep(0.4)
        raw = raw_get(client, job.name)
        assert raw["metadata"]["state"] == "BATCH_STATE_RUNNING" and "done" not in raw
        stats = raw["metadata"]["batchStats"]
        assert 0 < int(stats["successfulRequestCount"]) < 10
        assert int(stats["successfulRequestCount"]) + int(stats["pendingRequestCount"]) == 10
        assert emu.jobs()[0]["state"] == "BATCH_STATE_RUNNING"


def test_expired_upload_refused_at_create(emu: Emulator, client) -> None:
    f = upload(client, jsonl(2))
    emu.expire_file(f.name)
    with pytest.raises(errors.ClientError) as info:
        client.batches.create(model=MODEL, src=f.name)
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    assert emu.jobs() == []
    assert emu.journal()[-1].note == "input:file-gone"


def test_job_outlives_its_deleted_input(emu: Emulator, client) -> None:
    f = upload(client, jsonl(3))
    job = client.batches.create(model=MODEL, src=f.name)
    client.files.delete(name=f.name)
    done = wait_done(client, job.name)
    assert len(_lines(client.files.download(file=done.dest.file_name))) == 3


def test_result_file_delay() -> None:
    with Emulator(fast_settings(result_file_delay_seconds=0.5)) as emu:
        client = make_client(emu.base_url)
        f = upload(client, jsonl(1))
        done = wait_done(client, client.batches.create(model=MODEL, src=f.name).name)
        with pytest.raises(errors.ClientError) as info:
            client.files.download(file=done.dest.file_name)
        assert info.value.code == 403  # a lagging result file looks missing, as the service answers missing files
        time.sleep(0.6)
        assert client.files.download(file=done.dest.file_name)


def test_long_result_ids_and_optional_bug(emu: Emulator, client) -> None:
    f = upload(client, jsonl(1))
    done = wait_done(client, client.batches.create(model=MODEL, src=f.name).name)
    name = done.dest.file_name
    assert client.files.get(name=name).source.name == "GENERATED"
    emu.settings.long_file_id_bug = True
    with pytest.raises(errors.ClientError) as info:
        client.files.get(name=name)
    assert info.value.code == 400 and "more than 40 characters" in info.value.message
    assert client.files.download(file=name)
