"""Embeddings batches through the real SDK's batches.create_embeddings: file and inline input, results as
embeddings, the same life cycle, quotas, faults and list/get as generate jobs."""

from __future__ import annotations

import json
import math
import warnings

import pytest
from gembatch.core.emulator import Emulator
from gembatch.core.emulator.answers import embedding_values
from google.genai import errors, types

from .conftest import fast_settings, jsonl, make_client, raw_get, upload, wait_done

EMBED_MODEL = "gemini-embedding-001"


def embed_jsonl(n: int, prefix: str = "e", **request: object) -> bytes:
    """n embedding request lines as the Batch API guide writes them: {"key", "request": {"content": ...}}."""
    lines = [json.dumps({"key": f"{prefix}-{i}", "request": {"content": {"parts": [{"text": f"text {i}"}]},
                                                             **request}}) for i in range(n)]
    return ("\n".join(lines) + "\n").encode()


def create_embeddings(client, src: object, display_name: str = "embed-job") -> types.BatchJob:
    with warnings.catch_warnings():  # the SDK marks create_embeddings experimental
        warnings.simplefilter("ignore")
        return client.batches.create_embeddings(model=EMBED_MODEL, src=src, config={"display_name": display_name})


def _lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def test_file_input_answers_one_embedding_per_key(emu: Emulator, client) -> None:
    data = embed_jsonl(4, taskType="RETRIEVAL_DOCUMENT")
    f = upload(client, data)
    job = create_embeddings(client, {"file_name": f.name})
    assert job.state is not None and job.state.name == "JOB_STATE_PENDING"
    assert job.display_name == "embed-job" and job.model == f"models/{EMBED_MODEL}"
    created = [e for e in emu.journal() if e.kind == "batches.create"]
    assert [e.path.split("?")[0] for e in created] == [f"/v1beta/models/{EMBED_MODEL}:asyncBatchEmbedContent"]
    done = wait_done(client, job.name)
    assert done.state.name == "JOB_STATE_SUCCEEDED"
    out = _lines(client.files.download(file=done.dest.file_name))
    assert [line["key"] for line in out] == [f"e-{i}" for i in range(4)]
    vectors = [line["response"]["embedding"]["values"] for line in out]
    assert all(len(v) == emu.settings.embedding_dimensions for v in vectors)
    assert vectors[0] == embedding_values("text 0", emu.settings.embedding_dimensions)  # deterministic
    assert vectors[0] != vectors[1]
    assert abs(math.sqrt(sum(x * x for x in vectors[0])) - 1.0) < 1e-3
    raw = raw_get(client, job.name)
    assert raw["metadata"]["@type"].endswith(".EmbedContentBatch")
    assert raw["metadata"]["batchStats"] == {"requestCount": "4", "successfulRequestCount": "4"}
    assert raw["response"]["@type"].endswith(".EmbedContentBatchOutput")


def test_output_dimensionality_and_requests_without_content(client) -> None:
    lines = [{"key": "short", "request": {"content": {"parts": [{"text": "a"}]}, "output_dimensionality": 3}},
             {"key": "camel", "request": {"content": {"parts": [{"text": "b"}]}, "outputDimensionality": 5}},
             {"key": "too-big", "request": {"content": {"parts": [{"text": "c"}]}, "outputDimensionality": 5000}},
             {"key": "generate", "request": {"contents": [{"parts": [{"text": "not an embed request"}]}]}}]
    f = upload(client, ("\n".join(json.dumps(line) for line in lines) + "\n").encode())
    done = wait_done(client, create_embeddings(client, {"file_name": f.name}).name)
    out = {line["key"]: line for line in _lines(client.files.download(file=done.dest.file_name))}
    assert len(out["short"]["response"]["embedding"]["values"]) == 3
    assert len(out["camel"]["response"]["embedding"]["values"]) == 5
    assert out["too-big"]["error"]["code"] == 3 and "output_dimensionality" in out["too-big"]["error"]["message"]
    assert out["generate"]["error"]["code"] == 3 and "content" in out["generate"]["error"]["message"]
    stats = raw_get(client, done.name)["metadata"]["batchStats"]
    assert stats == {"requestCount": "4", "successfulRequestCount": "2", "failedRequestCount": "2"}


def test_inline_input_answers_inlined_embed_content_responses(client) -> None:
    src = {"inlined_requests": {"contents": ["first text", "second text"],
                                "config": {"task_type": "RETRIEVAL_QUERY", "output_dimensionality": 4}}}
    done = wait_done(client, create_embeddings(client, src).name)
    items = done.dest.inlined_embed_content_responses
    assert items is not None and len(items) == 2
    assert [len(item.response.embedding.values) for item in items] == [4, 4]
    assert items[0].response.embedding.values == embedding_values("first text", 4)


def test_small_file_job_answers_inline_when_asked(emu: Emulator, client) -> None:
    emu.settings.inline_results_max_requests = 10
    f = upload(client, embed_jsonl(2))
    done = wait_done(client, create_embeddings(client, {"file_name": f.name}).name)
    items = done.dest.inlined_embed_content_responses
    assert [item.metadata for item in items] == [{"key": "e-0"}, {"key": "e-1"}]
    assert all(len(item.response.embedding.values) == 8 for item in items)


def test_embed_and_generate_jobs_share_list_get_and_quotas(emu: Emulator, client) -> None:
    emu.settings.max_concurrent_jobs = 2
    emu.settings.pending_seconds = 30.0
    gen = client.batches.create(model="gemini-2.5-flash", src=upload(client, jsonl(2)).name,
                                config={"display_name": "gen"})
    emb = create_embeddings(client, {"file_name": upload(client, embed_jsonl(2)).name}, "emb")
    with pytest.raises(errors.ClientError) as refused:  # the third unfinished job of either kind is over the limit
        create_embeddings(client, {"file_name": upload(client, embed_jsonl(1)).name}, "emb-2")
    assert refused.value.code == 429
    listed = {job.display_name: job.name for job in client.batches.list(config={"page_size": 10})}
    assert listed == {"gen": gen.name, "emb": emb.name}
    assert {job["display_name"]: job["kind"] for job in emu.jobs()} == {"gen": "generate", "emb": "embed"}
    client.batches.cancel(name=emb.name)
    assert client.batches.get(name=emb.name).state.name == "JOB_STATE_CANCELLED"


def test_lost_create_answer_and_failed_jobs_apply_to_embeddings(emu: Emulator) -> None:
    client = make_client(emu.base_url, timeout_ms=3_000)
    emu.settings.lost_create_rate = 1.0
    f = upload(client, embed_jsonl(2))
    with pytest.raises(Exception):  # noqa: B017 - the transport's own error: the answer never came
        create_embeddings(client, {"file_name": f.name}, "lost")
    made = [job for job in emu.jobs() if job["display_name"] == "lost"]
    assert len(made) == 1  # it took effect all the same
    emu.settings.lost_create_rate = 0.0
    emu.settings.job_fail_rate = 1.0
    failed = wait_done(client, create_embeddings(client, {"file_name": f.name}, "fails").name)
    assert failed.state.name == "JOB_STATE_FAILED"


def test_the_method_must_suit_the_model(client) -> None:
    f = upload(client, embed_jsonl(1))
    with pytest.raises(errors.ClientError) as generative, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client.batches.create_embeddings(model="gemini-2.5-flash", src={"file_name": f.name})
    assert generative.value.code == 404 and "asyncBatchEmbedContent" in str(generative.value)
    with pytest.raises(errors.ClientError) as embedding:
        client.batches.create(model=EMBED_MODEL, src=f.name)
    assert embedding.value.code == 404 and "batchGenerateContent" in str(embedding.value)
    model = client.models.get(model=EMBED_MODEL)
    assert "asyncBatchEmbedContent" in (model.supported_actions or [])


def test_friendly_model_set_accepts_either_method() -> None:
    with Emulator(fast_settings(models=set(), file_processing_seconds=0.0)) as emu:
        client = make_client(emu.base_url)
        f = upload(client, embed_jsonl(1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            job = client.batches.create_embeddings(model="my-tuned-embedder", src={"file_name": f.name})
        done = wait_done(client, job.name)
        assert done.state.name == "JOB_STATE_SUCCEEDED"
