"""The Files API as users meet it, through the real SDK: PROCESSING after upload, FAILED uploads, 403 for
missing files, refused MIME types and the storage cap, each with its friendly variant."""

from __future__ import annotations

import io

import pytest
from gembatch.core.emulator import Emulator, EmulatorSettings
from gembatch.core.emulator.settings import friendly_service
from google.genai import errors

from .conftest import fast_settings, jsonl, make_client, raw_get, upload, wait_done, wait_processed

MODEL = "gemini-2.5-flash"
GENERIC_429 = "You exceeded your current quota, please check your plan and billing details."


def _upload_raw(client, data: bytes, mime_type: str):
    return client.files.upload(file=io.BytesIO(data), config={"mime_type": mime_type})


def test_upload_is_processing_then_active_and_create_waits_for_it() -> None:
    with Emulator(fast_settings()) as emu:
        assert emu.settings.file_processing_seconds == 0.3  # the default
        client = make_client(emu.base_url)
        f = upload(client, jsonl(2), wait=False)
        assert f.state.name == "PROCESSING"
        assert client.files.get(name=f.name).state.name == "PROCESSING"
        assert [x.state.name for x in client.files.list(config={"page_size": 10})] == ["PROCESSING"]
        with pytest.raises(errors.ClientError) as info:
            client.batches.create(model=MODEL, src=f.name)
        exc = info.value
        assert (exc.code, exc.status) == (400, "FAILED_PRECONDITION")
        assert exc.message == (f"The File {f.name.removeprefix('files/')} is not in an ACTIVE state and usage "
                               "is not allowed.")
        assert emu.jobs() == [] and emu.journal()[-1].note == "input:file-not-active"
        active = wait_processed(client, f)
        assert active.state.name == "ACTIVE" and active.error is None
        assert 0.25 <= (active.update_time - active.create_time).total_seconds() <= 0.4
        assert emu.files()[0]["state"] == "ACTIVE"
        assert wait_done(client, client.batches.create(model=MODEL, src=f.name).name).state.name == (
            "JOB_STATE_SUCCEEDED")


def test_larger_uploads_process_longer() -> None:
    with Emulator(fast_settings(file_processing_seconds=0.0, file_processing_seconds_per_mib=2.0)) as emu:
        client = make_client(emu.base_url)
        small = upload(client, jsonl(1), wait=False)
        big = upload(client, jsonl(1, pad=52_000), wait=False)  # about 0.3 MiB: 0.6 s of processing
        assert client.files.get(name=small.name).state.name == "ACTIVE"
        assert big.state.name == "PROCESSING"
        done = wait_processed(client, big)
        expected = 2.0 * big.size_bytes / (1024 * 1024)
        assert abs((done.update_time - done.create_time).total_seconds() - expected) < 0.01
        assert [f["state"] for f in emu.files()] == ["ACTIVE", "ACTIVE"]


def test_friendly_upload_is_active_at_once() -> None:
    with Emulator(fast_settings(file_processing_seconds=0.0, file_processing_seconds_per_mib=0.0)) as emu:
        client = make_client(emu.base_url)
        f = upload(client, jsonl(2), wait=False)
        assert f.state.name == "ACTIVE"
        client.batches.create(model=MODEL, src=f.name)
        assert len(emu.jobs()) == 1


def test_failed_upload_has_an_error_and_cannot_be_used() -> None:
    with Emulator(fast_settings(file_failed_rate=1.0, file_processing_seconds=0.1)) as emu:
        client = make_client(emu.base_url)
        f = upload(client, jsonl(2))
        assert f.state.name == "FAILED"
        assert f.error is not None and f.error.code == 13 and f.error.message
        raw = raw_get(client, f.name)
        assert raw["state"] == "FAILED" and set(raw["error"]) == {"code", "message"}
        with pytest.raises(errors.ClientError) as info:
            client.batches.create(model=MODEL, src=f.name)
        assert (info.value.code, info.value.status) == (400, "FAILED_PRECONDITION")
        assert emu.jobs() == [] and emu.files()[0]["state"] == "FAILED"
        emu.settings.file_failed_rate = 0.0
        assert upload(client, jsonl(2)).state.name == "ACTIVE"


def test_missing_file_is_403_on_get_download_and_delete() -> None:
    with Emulator(fast_settings()) as emu:
        client = make_client(emu.base_url)
        f = upload(client, jsonl(1))
        done = wait_done(client, client.batches.create(model=MODEL, src=f.name).name)
        result = done.dest.file_name
        client.files.delete(name=f.name)
        emu.expire_file(result)
        calls = [
            (lambda: client.files.get(name=f.name), f.name),
            (lambda: client.files.delete(name=f.name), f.name),
            (lambda: client.files.get(name="files/never-was"), "files/never-was"),
            (lambda: client.files.download(file=result), result),
            (lambda: client.files.delete(name=result), result),
        ]
        for call, name in calls:
            with pytest.raises(errors.ClientError) as info:
                call()
            exc = info.value
            assert (exc.code, exc.status) == (403, "PERMISSION_DENIED")
            assert exc.message == (f"You do not have permission to access the File {name.removeprefix('files/')} "
                                   "or it may not exist.")
        assert [e.note for e in emu.journal()[-5:]] == ["file:missing"] * 5
        with pytest.raises(errors.ClientError) as info:
            client.batches.get(name="batches/never-was")
        assert info.value.code == 404  # batches keep 404


def test_missing_file_can_answer_404() -> None:
    with Emulator(fast_settings(missing_file_status=404)) as emu:
        client = make_client(emu.base_url)
        f = upload(client, jsonl(1))
        client.files.delete(name=f.name)
        for call in (lambda: client.files.get(name=f.name), lambda: client.files.delete(name=f.name),
                     lambda: client.files.download(file="files/batch-gone")):
            with pytest.raises(errors.ClientError) as info:
                call()
            assert (info.value.code, info.value.status) == (404, "NOT_FOUND")


def test_jsonl_mime_type_refused_at_finalize_as_a_client_error() -> None:
    with Emulator(fast_settings()) as emu:
        client = make_client(emu.base_url)
        with pytest.raises(errors.ClientError) as info:  # not a KeyError('file')
            _upload_raw(client, jsonl(2), "jsonl")
        exc = info.value
        assert (exc.code, exc.status, exc.message) == (400, "INVALID_ARGUMENT", "Unsupported MIME type: jsonl")
        assert [(e.kind, e.status) for e in emu.journal()] == [("upload.start", 200), ("upload.chunk", 400)]
        assert emu.journal()[-1].note == "upload:mime-type"
        assert emu.files() == []
        assert _upload_raw(client, jsonl(2), "application/jsonl").mime_type == "application/jsonl"


async def test_refused_mime_type_async_and_other_settings() -> None:
    with Emulator(fast_settings(refused_mime_types={"application/jsonl"})) as emu:
        client = make_client(emu.base_url)
        with pytest.raises(errors.ClientError) as info:
            await client.aio.files.upload(file=io.BytesIO(jsonl(1)), config={"mime_type": "application/jsonl"})
        assert info.value.code == 400 and info.value.message == "Unsupported MIME type: application/jsonl"
        f = await client.aio.files.upload(file=io.BytesIO(jsonl(1)), config={"mime_type": "jsonl"})
        assert f.mime_type == "jsonl"
        emu.settings.refused_mime_types = set()
        await client.aio.files.upload(file=io.BytesIO(jsonl(1)), config={"mime_type": "application/jsonl"})
        assert len(emu.files()) == 2
        await client.aio.aclose()


def test_storage_cap_refusal_is_generic_and_deleting_frees_room_at_once() -> None:
    with Emulator(fast_settings(storage_cap_bytes=1500)) as emu:
        client = make_client(emu.base_url)
        first = upload(client, b"x" * 1000)
        with pytest.raises(errors.ClientError) as info:
            upload(client, b"y" * 600)
        exc = info.value
        assert (exc.code, exc.status) == (429, "RESOURCE_EXHAUSTED")
        assert exc.message.startswith(GENERIC_429) and "Quota exceeded for metric" not in exc.message
        assert [d["@type"] for d in exc.details["error"]["details"]] == ["type.googleapis.com/google.rpc.Help"]
        assert emu.journal()[-1].note == "quota:storage"
        client.files.delete(name=first.name)
        upload(client, b"y" * 600)  # at once: no wait for a sweep
        emu.settings.quota_error_details = "full"
        with pytest.raises(errors.ClientError) as info:
            upload(client, b"z" * 1000)
        quota_ids = [v["quotaId"] for d in info.value.details["error"]["details"] for v in d.get("violations", [])]
        assert quota_ids == ["FileStorageBytesPerProject"]



def test_friendly_service_preset_restores_the_old_answers() -> None:
    settings = EmulatorSettings(**{**friendly_service(), "pending_seconds": 0.05, "running_seconds": 0.1,
                                   "max_concurrent_jobs": 1})
    assert friendly_service()["models"] is not settings.models  # a fresh set each call
    with Emulator(settings) as emu:
        client = make_client(emu.base_url)
        f = _upload_raw(client, jsonl(1), "jsonl")  # no MIME type refused
        assert f.state.name == "ACTIVE"  # no PROCESSING
        client.batches.create(model="any-model", src=f.name)  # any model
        with pytest.raises(errors.ClientError) as info:
            client.batches.create(model="any-model", src=f.name)
        kinds = [d["@type"].rsplit(".", 1)[-1] for d in info.value.details["error"]["details"]]
        assert kinds == ["Help", "QuotaFailure"]  # the quota is named
        client.files.delete(name=f.name)
        with pytest.raises(errors.ClientError) as info:
            client.files.get(name=f.name)
        assert info.value.code == 404
