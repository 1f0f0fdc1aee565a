"""Embedding batches end to end: files of embedding requests run as embeddings batch jobs (asyncBatchEmbedContent)
with the never-twice guarantees, results, merge and rebuild of generate runs; the emulator's journal is the witness.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import signal
import warnings
from pathlib import Path

import pytest
from gembatch.core.checkpoint_store import CheckpointStore
from gembatch.core.cli_args import resolve_settings
from gembatch.core.engine import RunRefused
from gembatch.core.exit_codes import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE
from gembatch.core.input_scan import Rejection, ScannedFile, scan_file
from gembatch.core.model import BatchRecord, Stage
from gembatch.core.request_check import EmbedRequestBody, check_request
from google import genai
from google.genai import types

from ..conftest import FAKE_KEY
from ..reliability.support import Workspace, judge, tail
from ..workflow.helpers import run_cli, run_json, upload_active
from .helpers import assert_one_job_per_attempt, engine_settings, jobs_by_file, run_engine

EMBED_MODEL = "gemini-embedding-001"
CREATE_EMBED = f"/v1beta/models/{EMBED_MODEL}:asyncBatchEmbedContent"


def embed_line(key: str, text: str | None = None, **request: object) -> str:
    return json.dumps({"key": key, "request": {"content": {"parts": [{"text": text or f"passage {key}"}]}, **request}})


def generate_line(key: str) -> str:
    return json.dumps({"key": key, "request": {"contents": [{"parts": [{"text": f"question {key}"}]}]}})


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_embed_files(folder: Path, files: int, requests: int, tag: str = "") -> None:
    for f in range(1, files + 1):
        write(folder / f"docs_{f:03d}.jsonl",
              [embed_line(f"{tag}d{f}-{r}", taskType="RETRIEVAL_DOCUMENT") for r in range(1, requests + 1)])


def results_of(path: Path) -> dict[str, dict]:
    return {item["key"]: item for item in map(json.loads, path.read_text().splitlines()) if item}


async def test_embed_files_run_to_the_end_as_embeddings_jobs(tmp_path: Path, emulator) -> None:
    write_embed_files(tmp_path / "in", files=4, requests=6)
    settings = engine_settings(tmp_path, emulator.base_url, model=EMBED_MODEL)

    code, engine, _ = await run_engine(settings)

    assert code == EXIT_OK
    assert all(rec.stage is Stage.DOWNLOADED and rec.job_kind == "embed" for rec in engine.records.values())
    for f in range(1, 5):
        results = results_of(settings.output_dir / f"docs_{f:03d}.results.jsonl")
        assert sorted(results) == sorted(f"d{f}-{r}" for r in range(1, 7))  # every key answered, once
        vectors = [item["response"]["embedding"]["values"] for item in results.values()]
        assert all(len(v) == emulator.settings.embedding_dimensions for v in vectors)
    made = assert_one_job_per_attempt(emulator)
    assert len(made) == 4 and len(jobs_by_file(emulator)) == 4
    creates = [e for e in emulator.journal() if e.kind == "batches.create"]
    assert {e.path.split("?")[0] for e in creates} == {CREATE_EMBED}
    assert {job["kind"] for job in emulator.jobs()} == {"embed"}
    # The service's own account, read through the SDK: one SUCCEEDED job per file, each under our display name.
    client = genai.Client(api_key=FAKE_KEY, http_options=types.HttpOptions(base_url=emulator.base_url,
                                                                          api_version="v1beta"))
    listed = list(client.batches.list(config={"page_size": 2}))
    assert sorted(job.display_name for job in listed) == sorted(rec.display_name for rec in engine.records.values())
    assert {job.state.name for job in listed} == {"JOB_STATE_SUCCEEDED"}
    assert {job.model for job in listed} == {f"models/{EMBED_MODEL}"}
    saved = CheckpointStore(settings.checkpoint_path()).load()
    assert saved is not None and {rec.job_kind for rec in saved.records.values()} == {"embed"}


async def test_a_file_mixing_both_kinds_is_refused_naming_file_and_line(tmp_path: Path, emulator) -> None:
    write_embed_files(tmp_path / "in", files=1, requests=3)
    write(tmp_path / "in" / "mixed.jsonl", [embed_line("m1"), embed_line("m2"), generate_line("m3")])
    settings = engine_settings(tmp_path, emulator.base_url, model=EMBED_MODEL)

    code, engine, recorder = await run_engine(settings)

    assert code == EXIT_INCOMPLETE
    rec = engine.records["mixed"]
    assert rec.stage is Stage.REJECTED
    assert "mixed.jsonl:3: a generate request (`contents`), but line 1 is an embedding request" in rec.last_error
    assert "separate files" in rec.last_error
    assert any("mixed.jsonl:3" in line for line in recorder.lines())
    assert engine.records["docs_001"].stage is Stage.DOWNLOADED
    assert len([e for e in emulator.journal() if e.kind == "upload.start"]) == 1  # the mixed file never left


@pytest.mark.parametrize(("job_kind", "lines", "said"), [
    ("generate", [embed_line("e1"), embed_line("e2")],
     "batch.jsonl:1: an embedding request (`content`), but job_kind is \"generate\" (--job-kind generate): a generate "
     "job would fail every embedding line inside the job, a day later; run it with --job-kind embed or auto"),
    ("embed", [generate_line("g1")],
     "batch.jsonl:1: a generate request (`contents`), but job_kind is \"embed\" (--job-kind embed): an embeddings job "
     "answers only embedding requests (`content`); run it with --job-kind generate or auto"),
], ids=["generate-on-embed-lines", "embed-on-generate-lines"])
async def test_a_chosen_job_kind_refuses_lines_of_the_other_kind(tmp_path: Path, emulator, job_kind: str,
                                                                 lines: list[str], said: str) -> None:
    write(tmp_path / "in" / "batch.jsonl", lines)
    settings = engine_settings(tmp_path, emulator.base_url, job_kind=job_kind)

    code, engine, _ = await run_engine(settings)

    assert code == EXIT_INCOMPLETE
    assert engine.records["batch"].stage is Stage.REJECTED
    assert said in engine.records["batch"].last_error
    assert not [e for e in emulator.journal() if e.kind in ("upload.start", "batches.create")]


async def test_job_kind_embed_runs_embed_files(tmp_path: Path, emulator) -> None:
    write_embed_files(tmp_path / "in", files=2, requests=2)
    settings = engine_settings(tmp_path, emulator.base_url, model=EMBED_MODEL, job_kind="embed")

    code, engine, _ = await run_engine(settings)

    assert code == EXIT_OK
    assert {rec.job_kind for rec in engine.records.values()} == {"embed"}


def test_the_flag_and_the_file_set_job_kind(tmp_path: Path) -> None:
    config = write(tmp_path / "config.toml", ['job_kind = "embed"'])
    args = ["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--config", str(config)]
    assert resolve_settings(args).job_kind == "embed"
    assert resolve_settings([*args, "--job-kind", "generate"]).job_kind == "generate"
    assert resolve_settings(args[:4]).job_kind == "auto"


async def test_lost_create_answers_of_embed_jobs_are_found_not_repeated(tmp_path: Path, emulator) -> None:
    write_embed_files(tmp_path / "in", files=3, requests=2)
    emulator.settings.lost_create_rate = 1.0  # every create takes effect, and its answer never comes
    settings = engine_settings(tmp_path, emulator.base_url, model=EMBED_MODEL)

    code, engine, _ = await run_engine(settings)

    assert code == EXIT_OK
    made = assert_one_job_per_attempt(emulator)
    assert len(made) == 3
    assert all(rec.stage is Stage.DOWNLOADED for rec in engine.records.values())


async def test_failed_embed_requests_retry_and_merge(tmp_path: Path, emulator, capsys) -> None:
    write_embed_files(tmp_path / "in", files=2, requests=10)
    emulator.settings.request_error_rate = 0.3
    emulator.settings.seed = 7
    settings = engine_settings(tmp_path, emulator.base_url, model=EMBED_MODEL)
    assert (await run_engine(settings))[0] == EXIT_OK
    failed = sum(1 for path in settings.output_dir.glob("*.results.jsonl")
                 for item in results_of(path).values() if "error" in item)
    assert failed > 0

    code, retry = run_json(capsys, "retry-failures", "--input", tmp_path / "in", "--output", settings.output_dir,
                           "--retry-dir", tmp_path / "retry")
    assert code == 0, retry
    emulator.settings.request_error_rate = 0.0
    again = engine_settings(tmp_path, emulator.base_url, model=EMBED_MODEL, input_dir=tmp_path / "retry",
                            output_dir=tmp_path / "retry-out", checkpoint=tmp_path / "retry-out" / "run.json")
    code, engine, _ = await run_engine(again)
    assert code == EXIT_OK and {rec.job_kind for rec in engine.records.values()} == {"embed"}

    merged = tmp_path / "merged.jsonl"
    code, report = run_json(capsys, "merge", "--input", tmp_path / "in", "--output", settings.output_dir,
                            "--retry-output", tmp_path / "retry-out", "--to", merged)
    assert code == 0, report
    assert report["succeeded"] == 20 and report["failed"] == 0
    assert report["finish_reasons"] == {"EMBEDDING": 20}
    lines = [json.loads(line) for line in merged.read_text().splitlines()]
    assert [line["key"] for line in lines] == [f"d{f}-{r}" for f in (1, 2) for r in range(1, 11)]
    assert all(len(line["response"]["embedding"]["values"]) == 8 for line in lines)


@pytest.mark.parametrize("spec", ["after-intent:2", "after-create:2"])
def test_killed_mid_run_then_restarted_creates_no_duplicate(tmp_path: Path, emulator, spec: str) -> None:
    ws = Workspace(tmp_path / "ws", emulator.base_url)
    write_embed_files(ws.in_dir, files=4, requests=3, tag=spec)
    emulator.settings.max_concurrent_jobs = 2  # creates wait for jobs to end: the kill comes mid-run

    killed = ws.run("--model", EMBED_MODEL, crash_at=spec)
    assert killed.returncode == -signal.SIGKILL, tail(killed.stderr)
    resumed = ws.run("--model", EMBED_MODEL)
    assert resumed.returncode == 0, tail(resumed.stderr)

    verdict = judge(emulator, ws)
    assert verdict.files == 4 and verdict.results_checked == 4
    assert {job["kind"] for job in emulator.jobs()} == {"embed"}


def test_rebuild_from_the_server_keeps_the_kind_of_each_file(tmp_path: Path, emulator) -> None:
    ws = Workspace(tmp_path / "ws", emulator.base_url)
    write_embed_files(ws.in_dir, files=3, requests=2, tag="rebuild")
    emulator.settings.max_concurrent_jobs = 1  # one job made; the other files wait uploaded when the run dies

    killed = ws.run("--model", EMBED_MODEL, crash_at="after-create:1")
    assert killed.returncode == -signal.SIGKILL, tail(killed.stderr)
    for path in ws.out_dir.glob("gembatch.checkpoint*"):  # the checkpoint is lost
        path.unlink()
    rebuilt = ws.run("--model", EMBED_MODEL, "--rebuild-from-server")
    assert rebuilt.returncode == 0, tail(rebuilt.stderr)

    verdict = judge(emulator, ws)
    assert verdict.files == 3 and verdict.results_checked == 3
    assert {job["kind"] for job in emulator.jobs()} == {"embed"}


def test_a_checkpoint_record_without_job_kind_reads_as_generate() -> None:
    old = {"batch_id": "a", "source": "/in/a.jsonl", "stage": "uploaded"}
    assert BatchRecord.from_dict(old).job_kind == "generate"
    embed = BatchRecord.from_dict({**old, "job_kind": "embed"})
    assert BatchRecord.from_dict(embed.to_dict()).job_kind == "embed"


def test_the_scan_detects_the_kind_and_checks_embed_requests_against_their_own_schema(tmp_path: Path) -> None:
    embed = scan_file(write(tmp_path / "e.jsonl", [embed_line("a", outputDimensionality=3),
                                                   embed_line("b", task_type="CLUSTERING")]))
    assert isinstance(embed, ScannedFile) and embed.job_kind == "embed"
    generate = scan_file(write(tmp_path / "g.jsonl", [generate_line("a")]))
    assert isinstance(generate, ScannedFile) and generate.job_kind == "generate"
    bad = scan_file(write(tmp_path / "bad.jsonl", [embed_line("a"), embed_line("b", taskTyp="CLUSTERING")]))
    assert isinstance(bad, Rejection) and bad.line == 2 and 'did you mean "taskType"?' in bad.reason
    assert check_request({"content": {"parts": [{"text": "x"}]}, "taskType": "RETRIEVAL_QUERY"}).problems == []
    fixed = check_request({"content": "plain text", "output_dimensionality": 4})
    assert fixed.fixed == {"content": {"parts": [{"text": "plain text"}]}, "outputDimensionality": 4}
    assert [p.severity for p in fixed.problems] == ["error", "warning"]


@pytest.mark.parametrize(("model", "lines", "said"), [
    ("gemini-2.5-flash", [embed_line("e1")],
     "the model 'gemini-2.5-flash' cannot run embedding requests, which batch hold"),
    (EMBED_MODEL, [generate_line("g1")],
     f"the model '{EMBED_MODEL}' cannot run generate requests, which batch hold"),
], ids=["embed-files-on-a-generative-model", "generate-files-on-an-embedding-model"])
async def test_a_model_of_the_other_kind_is_refused_before_any_upload(tmp_path: Path, emulator, model: str,
                                                                      lines: list[str], said: str) -> None:
    write(tmp_path / "in" / "batch.jsonl", lines)
    settings = engine_settings(tmp_path, emulator.base_url, model=model)

    with pytest.raises(RunRefused) as refused:
        await run_engine(settings)

    assert refused.value.exit_code == EXIT_USAGE
    assert said in str(refused.value) and "nothing was uploaded" in str(refused.value)
    assert not [e for e in emulator.journal() if e.kind in ("upload.start", "batches.create")]


def test_lint_checks_embed_lines_by_their_own_schema_and_reports_a_mixed_file(tmp_path: Path, capsys) -> None:
    good = write(tmp_path / "good.jsonl", [embed_line("a", taskType="RETRIEVAL_DOCUMENT", title="T"),
                                           embed_line("b", outputDimensionality=16)])
    code, report = run_json(capsys, "lint", good)
    assert code == 0 and report["problems"] == []
    snake = write(tmp_path / "snake.jsonl", [embed_line("a", task_type="CLUSTERING"),
                                             json.dumps({"key": "b", "request": {"content": "plain text"}})])
    code, report = run_json(capsys, "lint", snake, "--fix")
    assert code == 0 and report["summary"]["fixed_lines"] == 2
    fixed = [json.loads(line)["request"] for line in snake.read_text().splitlines()]
    assert fixed == [{"content": {"parts": [{"text": "passage a"}]}, "taskType": "CLUSTERING"},
                     {"content": {"parts": [{"text": "plain text"}]}}]
    mixed = write(tmp_path / "mixed.jsonl", [embed_line("a"), generate_line("b")])
    code, report = run_json(capsys, "lint", mixed)
    assert code == 3
    assert [(p["line"], p["field"]) for p in report["problems"]] == [(2, "request")]
    assert "but line 1 is an embedding request" in report["problems"][0]["message"]


def test_cost_of_embed_files_counts_input_tokens_only(tmp_path: Path, capsys) -> None:
    write_embed_files(tmp_path / "in", files=1, requests=10)
    code, report = run_json(capsys, "cost", "--input", tmp_path / "in", "--model", EMBED_MODEL)
    assert code == 0, report
    estimate = report["estimate"]
    assert estimate["priced_as"] == EMBED_MODEL and estimate["output_usd"] == 0.0
    assert estimate["total_usd"] == pytest.approx(estimate["input_tokens"] * 0.15 / 1e6 * 0.5)


def test_the_embed_request_body_holds_every_field_the_sdk_sends() -> None:
    """EmbedRequestBody has each field the SDK's converters put in an embed request for the Gemini API."""
    from google.genai import batches

    config = inspect.getsource(batches._EmbedContentConfig_to_mldev)
    sent = set(re.findall(r"\['requests\[\]', '(\w+)'\]", config))
    assert sent == {"taskType", "title", "outputDimensionality"}
    assert "'request', 'content'" in inspect.getsource(batches._EmbedContentBatch_to_mldev)
    body = {info.alias for info in EmbedRequestBody.model_fields.values()}
    assert sent | {"content"} <= body


def test_adopted_embed_jobs_and_uploads_are_finished_as_embeddings(tmp_path: Path, emulator, capsys) -> None:
    write_embed_files(tmp_path / "in", files=3, requests=2, tag="adopt")
    paths = sorted((tmp_path / "in").glob("*.jsonl"))
    client = genai.Client(api_key=FAKE_KEY, http_options=types.HttpOptions(base_url=emulator.base_url,
                                                                          api_version="v1beta"))
    uploaded = [upload_active(client, str(p), {"mime_type": "application/jsonl", "display_name": p.stem})
                for p in paths[:2]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = client.batches.create_embeddings(model=EMBED_MODEL, src={"file_name": uploaded[0].name},
                                                config={"display_name": f"my script - {paths[0].stem}"})
    report = write(tmp_path / "report.md", [f"- docs 1: {made.name}"])
    settings = engine_settings(tmp_path, emulator.base_url, model=EMBED_MODEL)
    code, _, err = run_cli(capsys, "adopt", "--input", settings.input_dir, "--output", settings.output_dir,
                           "--checkpoint", settings.checkpoint, "--jobs-file", report, "--upload", uploaded[1].name,
                           "--base-url", emulator.base_url, "--model", EMBED_MODEL)
    assert code == EXIT_OK, err
    emulator.reset_journal()

    code, engine, _ = asyncio.run(run_engine(settings))

    assert code == EXIT_OK
    assert engine.records["docs_001"].job_name == made.name
    creates = [e for e in emulator.journal() if e.kind == "batches.create"]
    assert [e.path.split("?")[0] for e in creates] == [CREATE_EMBED] * 2  # docs_002 (adopted upload) and docs_003
    assert {job["input_file"] for job in emulator.jobs()} >= {uploaded[0].name, uploaded[1].name}
    assert len(emulator.jobs()) == 3 and {job["kind"] for job in emulator.jobs()} == {"embed"}
    for path in paths:
        assert len(results_of(settings.output_dir / f"{path.stem}.results.jsonl")) == 2


def test_count_tokens_of_embed_requests_counts_their_content(tmp_path: Path, emulator, capsys) -> None:
    write(tmp_path / "in" / "docs.jsonl", [embed_line(f"k{i}", "twelve chars" * 10) for i in range(4)])
    code, report = run_json(capsys, "cost", "--input", tmp_path / "in", "--model", EMBED_MODEL,
                            "--count-tokens", "2", "--base-url", emulator.base_url)
    assert code == 0, report
    assert report["token_count"]["counted_tokens"] == 4 * 30  # 120 characters of text a request, 4 to a token
    counts = [e for e in emulator.journal() if e.kind == "models.countTokens"]
    assert len(counts) == 2 and {e.status for e in counts} == {200}
