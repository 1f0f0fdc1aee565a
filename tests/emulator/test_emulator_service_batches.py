"""Batches and models as users meet them, through the real SDK: generic 429 bodies, known models and
models.get, inline results for file input, batches.list orders, flat batchStats, odd keys; with the friendly
variants."""

from __future__ import annotations

import json
import time

import pytest
from gembatch.core.emulator import Emulator
from gembatch.core.emulator.settings import KNOWN_MODELS
from google.genai import errors

from .conftest import fast_settings, make_client, raw_get, upload, wait_done

MODEL = "gemini-2.5-flash"
GENERIC_429 = ("You exceeded your current quota, please check your plan and billing details. For more information "
               "on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current "
               "usage, head to: https://ai.dev/rate-limit. ")
HELP = "type.googleapis.com/google.rpc.Help"


def _lines(keys: list[str]) -> bytes:
    return b"".join(json.dumps({"key": k, "request": {"contents": [{"parts": [{"text": f"q {k}"}]}]}}).encode()
                    + b"\n" for k in keys)


def _refused_create(client, file_name: str) -> errors.ClientError:
    with pytest.raises(errors.ClientError) as info:
        client.batches.create(model=MODEL, src=file_name)
    return info.value


def test_batch_429_is_generic_with_one_help_detail_by_default() -> None:
    with Emulator(fast_settings(max_concurrent_jobs=1, creates_per_minute=2, pending_seconds=5)) as emu:
        assert emu.settings.quota_error_details == "help"
        client = make_client(emu.base_url)
        f = upload(client, _lines(["a"]))
        client.batches.create(model=MODEL, src=f.name)
        exc = _refused_create(client, f.name)
        assert (exc.code, exc.status, exc.message) == (429, "RESOURCE_EXHAUSTED", GENERIC_429)
        assert exc.details["error"]["details"] == [{"@type": HELP, "links": [
            {"description": "Learn more about Gemini API quotas",
             "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]}]
        assert emu.journal()[-1].note == "quota:concurrent-jobs"
        emu.settings.max_concurrent_jobs = 0
        client.batches.create(model=MODEL, src=f.name)
        exc = _refused_create(client, f.name)
        assert exc.message == GENERIC_429 and [d["@type"] for d in exc.details["error"]["details"]] == [HELP]
        assert emu.journal()[-1].note == "quota:creates-per-minute"  # no RetryInfo on the wire, only the note


def test_batch_429_with_no_details() -> None:
    with Emulator(fast_settings(enqueued_token_limit=1, quota_error_details="none")) as emu:
        client = make_client(emu.base_url)
        f = upload(client, _lines(["a"]))
        exc = _refused_create(client, f.name)
        assert exc.code == 429 and exc.message == GENERIC_429
        assert "details" not in exc.details["error"]
        assert emu.journal()[-1].note == "quota:enqueued-tokens"


def test_unknown_model_is_404_on_create_and_models_get() -> None:
    with Emulator(fast_settings()) as emu:
        assert emu.settings.models == set(KNOWN_MODELS) and {"gemini-2.5-pro", "gemini-3-flash-preview"} <= (
            emu.settings.models)
        client = make_client(emu.base_url)
        f = upload(client, _lines(["a"]))
        with pytest.raises(errors.ClientError) as info:
            client.batches.create(model="gemini-2.5-flahs", src=f.name)
        exc = info.value
        assert (exc.code, exc.status) == (404, "NOT_FOUND")
        assert exc.message.startswith("models/gemini-2.5-flahs is not found for API version v1beta, or is not "
                                      "supported for batchGenerateContent.")
        assert emu.jobs() == [] and emu.journal()[-1].note == "model:unknown"
        with pytest.raises(errors.ClientError) as info:
            client.models.get(model="gemini-2.5-flahs")
        assert (info.value.code, info.value.status) == (404, "NOT_FOUND")
        assert emu.journal()[-1].kind == "models.get"
        client.batches.create(model="models/gemini-2.5-pro", src=f.name)
        assert [j["model"] for j in emu.jobs()] == ["models/gemini-2.5-pro"]


async def test_models_get_answers_a_model_resource() -> None:
    with Emulator(fast_settings()) as emu:
        client = make_client(emu.base_url)
        model = await client.aio.models.get(model="gemini-2.5-flash")
        assert model.name == "models/gemini-2.5-flash" and model.display_name == "Gemini 2.5 Flash"
        assert model.input_token_limit == 1_048_576 and model.output_token_limit == 65_536
        assert "batchGenerateContent" in model.supported_actions
        older = await client.aio.models.get(model="models/gemini-2.0-flash")
        assert older.output_token_limit == 8_192
        raw = raw_get(client, "models/gemini-2.5-pro")
        assert raw["supportedGenerationMethods"] == [
            "generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
        with pytest.raises(errors.ClientError) as info:
            await client.aio.models.get(model="gpt-4")
        assert info.value.code == 404
        await client.aio.aclose()


def test_empty_models_accepts_any() -> None:
    with Emulator(fast_settings(models=set())) as emu:
        client = make_client(emu.base_url)
        f = upload(client, _lines(["a"]))
        client.batches.create(model="my-tuned-model", src=f.name)
        assert client.models.get(model="my-tuned-model").name == "models/my-tuned-model"
        assert [j["model"] for j in emu.jobs()] == ["models/my-tuned-model"]


def test_small_file_job_answers_inline() -> None:
    with Emulator(fast_settings(inline_results_max_requests=3, request_error_rate=0.5, seed=1)) as emu:
        client = make_client(emu.base_url)
        small = upload(client, _lines(["a", "b", "c"]))
        big = upload(client, _lines(["d", "e", "f", "g"]))
        inline_job = wait_done(client, client.batches.create(model=MODEL, src=small.name).name)
        file_job = wait_done(client, client.batches.create(model=MODEL, src=big.name).name)
        assert inline_job.state.name == "JOB_STATE_SUCCEEDED" and inline_job.dest.file_name is None
        items = inline_job.dest.inlined_responses
        assert [item.metadata for item in items] == [{"key": "a"}, {"key": "b"}, {"key": "c"}]
        errors_ = [item for item in items if item.error is not None]
        assert all((item.response is None) == (item.error is not None) for item in items)
        assert all(item.response.text.startswith("Emulated answer") for item in items if item.response)
        raw = raw_get(client, inline_job.name)
        output = raw["metadata"]["output"]
        assert list(output) == ["inlinedResponses"] and "responsesFile" not in raw["response"]
        assert [list(item) for item in output["inlinedResponses"]["inlinedResponses"]] == [
            ["error" if item.error else "response", "metadata"] for item in items]
        stats = raw["metadata"]["batchStats"]
        assert int(stats.get("failedRequestCount", 0)) == len(errors_)
        assert int(stats.get("successfulRequestCount", 0)) == 3 - len(errors_)
        assert file_job.dest.file_name == f"files/batch-{file_job.name.removeprefix('batches/')}"
        assert [j["result_file"] for j in emu.jobs()] == [None, file_job.dest.file_name]


def test_file_job_answers_a_file_by_default() -> None:
    with Emulator(fast_settings()) as emu:
        assert emu.settings.inline_results_max_requests == 0
        client = make_client(emu.base_url)
        f = upload(client, _lines(["a"]))
        done = wait_done(client, client.batches.create(model=MODEL, src=f.name).name)
        assert done.dest.file_name is not None and done.dest.inlined_responses is None


def _walk(client, page_size: int = 3) -> list[str]:
    return [j.name for j in client.batches.list(config={"page_size": page_size})]


@pytest.mark.parametrize("order", ["newest", "oldest", "shuffled"])
def test_batches_list_order(order: str) -> None:
    with Emulator(fast_settings(batches_list_order=order, pending_seconds=5, seed=7)) as emu:
        client = make_client(emu.base_url)
        f = upload(client, _lines(["a"]))
        made = [client.batches.create(model=MODEL, src=f.name).name for _ in range(8)]
        walked = _walk(client)
        assert sorted(walked) == sorted(made)  # each job once, none skipped, across three pages
        if order == "newest":
            assert walked == made[::-1]
        elif order == "oldest":
            assert walked == made
        else:
            assert walked not in (made, made[::-1])
            assert _walk(client, page_size=2) == walked  # stable: the same order whatever the page size


def test_shuffled_pages_survive_new_jobs_mid_walk() -> None:
    with Emulator(fast_settings(batches_list_order="shuffled", pending_seconds=5)) as emu:
        client = make_client(emu.base_url)
        f = upload(client, _lines(["a"]))
        made = [client.batches.create(model=MODEL, src=f.name).name for _ in range(6)]
        first = client._api_client.request("get", "batches?pageSize=3", {})
        body = json.loads(first.body)
        later = [client.batches.create(model=MODEL, src=f.name).name for _ in range(3)]
        seen = [op["name"] for op in body["operations"]]
        token = body.get("nextPageToken")
        while token:
            page = json.loads(client._api_client.request("get", f"batches?pageSize=3&pageToken={token}", {}).body)
            seen += [op["name"] for op in page.get("operations", [])]
            token = page.get("nextPageToken")
        assert len(seen) == len(set(seen))  # nothing served twice
        assert set(made) <= set(seen) <= set(made) | set(later)  # nothing that existed throughout is skipped


def test_flat_batch_stats_while_running() -> None:
    with Emulator(fast_settings(flat_batch_stats=True, pending_seconds=0.05, running_seconds=0.6)) as emu:
        client = make_client(emu.base_url)
        f = upload(client, _lines(["a", "b", "c", "d"]))
        job = client.batches.create(model=MODEL, src=f.name)
        time.sleep(0.4)
        raw = raw_get(client, job.name)
        assert raw["metadata"]["state"] == "BATCH_STATE_RUNNING"
        assert raw["metadata"]["batchStats"] == {"requestCount": "4", "pendingRequestCount": "4"}
        assert emu.jobs()[0]["succeeded"] == 0
        wait_done(client, job.name)
        assert raw_get(client, job.name)["metadata"]["batchStats"] == {"requestCount": "4",
                                                                       "successfulRequestCount": "4"}


def test_lone_surrogate_key_never_makes_a_500() -> None:
    with Emulator(fast_settings()) as emu:
        client = make_client(emu.base_url)
        line = b'{"key": "odd-\\ud800", "request": {"contents": [{"parts": [{"text": "hi \\udfff"}]}]}}\n'
        f = upload(client, line + _lines(["fine"]))
        job = client.batches.create(model=MODEL, src=f.name)
        done = wait_done(client, job.name)
        assert done.state.name == "JOB_STATE_SUCCEEDED"
        assert [j.name for j in client.batches.list(config={"page_size": 10})] == [job.name]
        assert [x.name for x in client.files.list(config={"page_size": 10})] == [done.dest.file_name, f.name]
        results = [json.loads(x) for x in client.files.download(file=done.dest.file_name).splitlines()]
        assert [r["key"] for r in results] == ["odd-\ud800", "fine"]
        inline = client.batches.create(model=MODEL, src=[{"contents": [{"parts": [{"text": "x\ud800"}]}]}])
        assert wait_done(client, inline.name).state.name == "JOB_STATE_SUCCEEDED"
        assert all(e.status == 200 for e in emu.journal()), [(e.kind, e.status) for e in emu.journal()]


def test_models_list_names_the_known_models(emu: Emulator, client) -> None:
    emu.settings.models = {"gemini-2.5-flash", "gemini-2.5-pro"}
    names = sorted(m.name for m in client.models.list(config={"page_size": 100}))
    assert names == ["models/gemini-2.5-flash", "models/gemini-2.5-pro"]
    assert all("batchGenerateContent" in (m.supported_actions or []) for m in client.models.list())
