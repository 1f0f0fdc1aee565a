"""The emulator's JSON against the real recorded responses quoted in the protocol doc (3.2, 8.3.2, 8.3.3, 2.1).

Both are read through the SDK's own converters, and must populate the same fields; the raw key sets must match.
"""

from __future__ import annotations

import time
from typing import Any

from gembatch.core.emulator import Emulator
from google.genai import types
from google.genai.batches import _BatchJob_from_mldev

from .conftest import fast_settings, jsonl, make_client, raw_get, upload, wait_done

MODEL = "gemini-2.5-flash"

# Section 3.2: the create response (inline source), recorded from the real service.
REAL_CREATE = {
    "name": "batches/4m855v7q30kc7gtzcigdg9m72o87s08w33vp",
    "metadata": {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "model": "models/gemini-2.5-flash",
        "displayName": "test-batch-job",
        "createTime": "2025-12-10T18:27:01.407650525Z",
        "updateTime": "2025-12-10T18:27:01.407650525Z",
        "batchStats": {"requestCount": "3", "pendingRequestCount": "3"},
        "state": "BATCH_STATE_PENDING",
        "name": "batches/4m855v7q30kc7gtzcigdg9m72o87s08w33vp",
    },
}
# Section 8.3.3: running.
REAL_RUNNING = {
    "name": "batches/4m855v7q30kc7gtzcigdg9m72o87s08w33vp",
    "metadata": {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "model": "models/gemini-2.5-flash", "displayName": "test-batch-job",
        "createTime": "2025-12-10T18:27:01.407650525Z", "updateTime": "2025-12-10T18:27:38.619743501Z",
        "batchStats": {"requestCount": "3", "pendingRequestCount": "3"},
        "state": "BATCH_STATE_RUNNING", "name": "batches/4m855v7q30kc7gtzcigdg9m72o87s08w33vp",
    },
}
# Section 8.3.2: a file batch that succeeded.
REAL_FILE_SUCCEEDED = {
    "name": "batches/leg9wy9p5df66syjxke2eq4xfjqcwp47ejv3",
    "metadata": {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "model": "models/gemini-2.5-flash",
        "displayName": "my batch name",
        "inputConfig": {"fileName": "files/frh6ua11nk3o"},
        "output": {"responsesFile": "files/batch-leg9wy9p5df66syjxke2eq4xfjqcwp47ejv3"},
        "createTime": "2026-01-06T11:09:11.943530657Z",
        "endTime": "2026-01-06T11:10:19.736868930Z",
        "updateTime": "2026-01-06T11:10:19.736868797Z",
        "batchStats": {"requestCount": "2", "successfulRequestCount": "2"},
        "state": "BATCH_STATE_SUCCEEDED",
        "name": "batches/leg9wy9p5df66syjxke2eq4xfjqcwp47ejv3",
    },
    "done": True,
    "response": {"@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput",
                 "responsesFile": "files/batch-leg9wy9p5df66syjxke2eq4xfjqcwp47ejv3"},
}
# Section 2.1: the File of a finalize response.
REAL_FILE = {
    "name": "files/frh6ua11nk3o",
    "displayName": "my-input",
    "mimeType": "application/jsonl",
    "sizeBytes": "204",
    "createTime": "2026-01-06T11:09:11.943530657Z",
    "updateTime": "2026-01-06T11:09:11.943530657Z",
    "expirationTime": "2026-01-08T11:09:11.943530657Z",
    "sha256Hash": "c2hhMjU2LW9mLXRoZS1maWxl",
    "uri": "https://generativelanguage.googleapis.com/v1beta/files/frh6ua11nk3o",
    "state": "ACTIVE",
    "source": "UPLOADED",
}


def _job_fields(raw: dict[str, Any]) -> set[str]:
    job = types.BatchJob._from_response(response=_BatchJob_from_mldev(raw), kwargs={})
    return set(job.model_dump(exclude_none=True))


def _file_fields(raw: dict[str, Any]) -> set[str]:
    return set(types.File._from_response(response=raw, kwargs={}).model_dump(exclude_none=True))


def _keys(raw: dict[str, Any]) -> tuple[set[str], set[str], set[str]]:
    meta = raw["metadata"]
    return set(raw), set(meta), set(meta["batchStats"])


def test_inline_create_response_matches_real() -> None:
    with Emulator(fast_settings(pending_seconds=5)) as emu:
        client = make_client(emu.base_url)
        src = [{"contents": f"question {i}", "metadata": {"key": f"req_{i}"}} for i in range(3)]
        job = client.batches.create(model=MODEL, src=src, config={"display_name": "test-batch-job"})
        assert _job_fields(raw_get(client, job.name)) == _job_fields(REAL_CREATE)
        assert _keys(raw_get(client, job.name)) == _keys(REAL_CREATE)


def test_running_response_matches_real() -> None:
    with Emulator(fast_settings(pending_seconds=0.05, running_seconds=100)) as emu:
        client = make_client(emu.base_url)
        f = upload(client, jsonl(3))
        job = client.batches.create(model=MODEL, src=f.name, config={"display_name": "test-batch-job"})
        time.sleep(0.1)
        raw = raw_get(client, job.name)
        assert raw["metadata"]["state"] == "BATCH_STATE_RUNNING"
        assert _job_fields(raw) == _job_fields(REAL_RUNNING)
        top, meta, stats = _keys(raw)
        real_top, real_meta, real_stats = _keys(REAL_RUNNING)
        assert (top, meta - {"inputConfig"}, stats) == (real_top, real_meta, real_stats)
        assert raw["metadata"]["updateTime"] > raw["metadata"]["createTime"]


def test_file_succeeded_response_matches_real(emu: Emulator, client) -> None:
    f = upload(client, jsonl(2))
    job = client.batches.create(model=MODEL, src=f.name, config={"display_name": "my batch name"})
    wait_done(client, job.name)
    raw = raw_get(client, job.name)
    assert _job_fields(raw) == _job_fields(REAL_FILE_SUCCEEDED)
    assert _keys(raw) == _keys(REAL_FILE_SUCCEEDED)
    assert raw["response"].keys() == REAL_FILE_SUCCEEDED["response"].keys()
    assert raw["metadata"]["output"].keys() == REAL_FILE_SUCCEEDED["metadata"]["output"].keys()
    assert raw["metadata"]["@type"] == REAL_FILE_SUCCEEDED["metadata"]["@type"]
    real_len = len(REAL_FILE_SUCCEEDED["metadata"]["createTime"])
    assert all(len(raw["metadata"][k]) == real_len for k in ("createTime", "endTime", "updateTime"))


def test_file_json_matches_real(client) -> None:
    f = upload(client, jsonl(2), "my-input")
    raw = raw_get(client, f.name)
    assert set(raw) == set(REAL_FILE)
    assert _file_fields(raw) == _file_fields(REAL_FILE)
    assert isinstance(raw["sizeBytes"], str) and raw["createTime"].endswith("Z")
