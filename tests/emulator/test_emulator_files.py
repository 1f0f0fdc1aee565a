"""Files API through the real SDK: resumable uploads (one and several chunks), get, list, delete, limits."""

from __future__ import annotations

import base64
import hashlib
import io
import time
from datetime import timedelta

import httpx2
import pytest
from gembatch.core.emulator import Emulator
from google.genai import errors

from .conftest import KEY, fast_settings, jsonl, make_client, raw_get, upload


def test_upload_one_chunk(emu: Emulator, client) -> None:
    data = jsonl(3)
    f = upload(client, data, "small", wait=False)
    assert f.name is not None and f.name.startswith("files/")
    assert f.display_name == "small"
    assert f.size_bytes == len(data)
    assert f.mime_type == "application/jsonl"
    assert f.sha256_hash == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert f.state is not None and f.state.name == "PROCESSING"  # ACTIVE only after processing
    assert f.source is not None and f.source.name == "UPLOADED"
    assert f.expiration_time - f.create_time == timedelta(seconds=emu.settings.file_ttl_seconds)
    kinds = [e.kind for e in emu.journal()]
    assert kinds == ["upload.start", "upload.chunk"]
    stored = emu.files()[0]
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored["request_count"] == 3


def test_upload_several_chunks_streams_to_disk(emu: Emulator, client) -> None:
    data = jsonl(60_000, pad=20)  # about 9 MiB: two chunks of the SDK's 8 MiB
    assert len(data) > 8 * 1024 * 1024
    f = upload(client, data, "big")
    assert f.size_bytes == len(data)
    chunks = [e for e in emu.journal() if e.kind == "upload.chunk"]
    assert len(chunks) == 2
    assert chunks[-1].sha256 == hashlib.sha256(data).hexdigest()
    assert chunks[-1].resource == f.name
    stored = emu.files()[0]
    assert stored["request_count"] == 60_000
    assert stored["tokens"] == sum(-(-len(line) // 4) for line in data.splitlines())


async def test_async_upload_get_list_delete(emu: Emulator) -> None:
    client = make_client(emu.base_url)
    aio = client.aio
    data = jsonl(4)
    f = await aio.files.upload(file=io.BytesIO(data), config={"mime_type": "application/jsonl",
                                                              "display_name": "async"})
    got = await aio.files.get(name=f.name)
    assert got.sha256_hash == f.sha256_hash and got.display_name == "async"
    names = [x.name async for x in await aio.files.list(config={"page_size": 1})]
    assert names == [f.name]
    await aio.files.delete(name=f.name)
    with pytest.raises(errors.ClientError) as info:
        await aio.files.get(name=f.name)
    assert info.value.code == 403
    await aio.aclose()


def test_custom_name_and_conflict(client) -> None:
    f = upload(client, jsonl(1), name="my-input-1")
    assert f.name == "files/my-input-1"
    with pytest.raises(errors.ClientError) as info:
        upload(client, jsonl(1), name="my-input-1")
    assert info.value.code == 409 and info.value.status == "ALREADY_EXISTS"
    with pytest.raises(errors.ClientError) as info:
        upload(client, jsonl(1), name="-bad-")
    assert info.value.code == 400


def test_get_list_pages_delete(emu: Emulator, client) -> None:
    made = [upload(client, jsonl(1, prefix=f"f{i}"), f"file-{i}").name for i in range(5)]
    pager = client.files.list(config={"page_size": 2})
    listed = [f.name for f in pager]
    assert listed == list(reversed(made))  # newest first, across three pages
    pages = [e.path for e in emu.journal() if e.kind == "files.list"]
    assert len(pages) == 3
    last = raw_get(client, pages[-1].split("/v1beta/", 1)[1])
    assert "nextPageToken" not in last and len(last["files"]) == 1
    assert client.files.get(name=made[0]).display_name == "file-0"
    client.files.delete(name=made[0])
    with pytest.raises(errors.ClientError) as info:
        client.files.get(name=made[0])
    assert info.value.code == 403 and info.value.status == "PERMISSION_DENIED"
    assert made[0] not in [f.name for f in client.files.list(config={"page_size": 100})]
    assert [f["deleted"] for f in emu.files()] == [True, False, False, False, False]


def test_expired_file_is_gone(emu: Emulator, client) -> None:
    f = upload(client, jsonl(1))
    emu.expire_file(f.name)
    with pytest.raises(errors.ClientError) as info:
        client.files.get(name=f.name)
    assert info.value.code == 403
    assert emu.files()[0]["expired"] is True


def test_file_ttl_setting() -> None:
    with Emulator(fast_settings(file_ttl_seconds=0.3, file_processing_seconds=0.0)) as emu:
        client = make_client(emu.base_url)
        f = upload(client, jsonl(1))
        assert client.files.get(name=f.name).name == f.name
        time.sleep(0.4)
        with pytest.raises(errors.ClientError):
            client.files.get(name=f.name)


def test_file_size_and_storage_limits() -> None:
    with Emulator(fast_settings(max_file_bytes=1000, storage_cap_bytes=1500)) as emu:
        client = make_client(emu.base_url)
        with pytest.raises(errors.ClientError) as info:
            upload(client, b"x" * 1001)
        assert info.value.code == 400
        upload(client, b"x" * 1000)
        with pytest.raises(errors.ClientError) as info:
            upload(client, b"x" * 600)
        assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"
        assert [e.note for e in emu.journal() if e.status != 200] == ["limit:file-size", "quota:storage"]


def test_chunk_offset_is_checked_and_needs_no_key(emu: Emulator) -> None:
    start = httpx2.post(f"{emu.base_url}/upload/v1beta/files", headers={
        "x-goog-api-key": KEY, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": "10", "X-Goog-Upload-Header-Content-Type": "application/jsonl",
    }, json={"file": {"displayName": "raw"}})
    assert start.status_code == 200
    url = start.headers["X-Goog-Upload-URL"]
    assert url.startswith(emu.base_url + "/upload/v1beta/files?upload_id=")
    first = httpx2.post(url, content=b"12345", headers={"X-Goog-Upload-Command": "upload",
                                                        "X-Goog-Upload-Offset": "0"})
    assert first.status_code == 200 and first.headers["X-Goog-Upload-Status"] == "active"
    wrong = httpx2.post(url, content=b"67890", headers={"X-Goog-Upload-Command": "upload, finalize",
                                                        "X-Goog-Upload-Offset": "3"})
    assert wrong.status_code == 400 and wrong.headers["X-Goog-Upload-Status"] == "final"
    assert wrong.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_snake_and_camel_start_bodies(emu: Emulator) -> None:
    for meta in ({"display_name": "snake"}, {"displayName": "camel"}):
        start = httpx2.post(f"{emu.base_url}/upload/v1beta/files", headers={
            "x-goog-api-key": KEY, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
        }, json={"file": {**meta, "mime_type": "application/jsonl", "size_bytes": 2}})
        done = httpx2.post(start.headers["x-goog-upload-url"], content=b"{}",
                           headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"})
        assert done.headers["X-Goog-Upload-Status"] == "final"
        body = done.json()["file"]
        assert body["displayName"] in ("snake", "camel") and body["sizeBytes"] == "2"


def test_uploaded_file_cannot_be_downloaded(client) -> None:
    f = upload(client, jsonl(1))
    with pytest.raises(errors.ClientError) as info:
        client.files.download(file=f.name)
    assert info.value.code == 400
