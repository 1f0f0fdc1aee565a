"""The engine against the service as users meet it (the field reports in gemini-batch-protocol.md), each behaviour
alone and all together: one job per input, complete results, the documented exit, and no loop (calls counted)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gembatch.core.engine as engine_module
import pytest
from gembatch.core.engine import RunRefused
from gembatch.core.exit_codes import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE
from gembatch.core.model import Stage

from ..conftest import FAKE_KEY, write_batch_files
from .helpers import assert_one_job_per_attempt, assert_results_match_inputs, engine_settings, jobs_by_file, run_engine


def calls(emulator, kind: str, status: int | None = None) -> list:
    return [e for e in emulator.journal() if e.kind == kind and (status is None or e.status == status)]


def one_job_per_file(emulator, files: int) -> None:
    assert_one_job_per_attempt(emulator)
    per_file = jobs_by_file(emulator)
    assert len(per_file) == files
    assert all(len(jobs) == 1 for jobs in per_file.values()), {k: len(v) for k, v in per_file.items()}


async def test_uploads_still_processing_are_waited_for_before_the_create(tmp_path: Path, emulator) -> None:
    emulator.settings.file_processing_seconds = 0.6
    write_batch_files(tmp_path / "in", files=4, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url)

    code, _, _ = await run_engine(settings)

    assert code == EXIT_OK
    one_job_per_file(emulator, 4)
    assert not calls(emulator, "batches.create", 400), "a create named a file that was not ACTIVE yet"
    assert len(calls(emulator, "upload.start")) == 4
    assert calls(emulator, "files.get"), "the engine never looked at its uploads' state"


async def test_failed_precondition_on_a_create_is_not_yet_never_a_failed_batch(tmp_path: Path, emulator,
                                                                             monkeypatch) -> None:
    """The server said ACTIVE, the create still says FAILED_PRECONDITION (lag between the two): try again later."""
    emulator.settings.file_processing_seconds = 1.0
    write_batch_files(tmp_path / "in", files=2, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url)
    monkeypatch.setattr(engine_module, "_PROCESSING_CHECKS", (0.2,))

    async def claims_active(self, rec) -> None:  # a look that believes the file is ready at once
        rec.upload_active = True

    monkeypatch.setattr(engine_module.Engine, "_check_upload_ready", claims_active)

    code, engine, _ = await run_engine(settings)

    assert code == EXIT_OK
    one_job_per_file(emulator, 2)
    refused = calls(emulator, "batches.create", 400)
    assert refused, "the emulator never refused a create for a PROCESSING file"
    assert len(refused) <= 2 * 8  # bounded: a look every 0.2 s for about a second
    assert all(rec.stage is Stage.DOWNLOADED and rec.attempt == 1 for rec in engine.records.values())


async def test_an_upload_the_server_marks_failed_is_uploaded_once_more_then_the_batch_fails(tmp_path: Path,
                                                                                          emulator) -> None:
    emulator.settings.file_failed_rate = 1.0
    write_batch_files(tmp_path / "in", files=3, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url)

    code, engine, _ = await run_engine(settings)

    assert code == EXIT_INCOMPLETE
    assert len(calls(emulator, "upload.start")) == 6  # each file twice, no more
    assert not calls(emulator, "batches.create")
    for rec in engine.records.values():
        assert rec.stage is Stage.FAILED
        assert "FAILED on the server" in (rec.last_error or "")


async def test_inline_results_of_a_file_job_are_saved_as_its_results_file(tmp_path: Path, emulator) -> None:
    emulator.settings.inline_results_max_requests = 1000
    write_batch_files(tmp_path / "in", files=3, requests=7)
    settings = engine_settings(tmp_path, emulator.base_url)

    code, engine, _ = await run_engine(settings)

    assert code == EXIT_OK
    one_job_per_file(emulator, 3)
    assert assert_results_match_inputs(settings.input_dir, settings.output_dir) == 3
    for rec in engine.records.values():
        assert rec.results_inline and rec.attempt == 1
        lines = [json.loads(x) for x in Path(rec.result_path).read_text().splitlines()]
        assert all("response" in line or "error" in line for line in lines)
    assert not calls(emulator, "files.download")


async def test_a_refused_mime_type_is_tried_once_and_the_next_one_kept(tmp_path: Path, emulator) -> None:
    emulator.settings.refused_mime_types = {"application/jsonl"}
    write_batch_files(tmp_path / "in", files=4, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url, upload_concurrency=1)

    code, _, recorder = await run_engine(settings)

    assert code == EXIT_OK
    one_job_per_file(emulator, 4)
    starts = calls(emulator, "upload.start")
    refused = [e for e in emulator.journal() if e.kind.startswith("upload.") and e.status == 400]
    assert len(refused) == 1, "the refused type was sent more than once"
    assert len(starts) == 5
    assert any("MIME type application/jsonl refused" in line for line in recorder.lines())


async def test_no_accepted_mime_type_stops_the_run_with_exit_2(tmp_path: Path, emulator) -> None:
    emulator.settings.refused_mime_types = {"application/jsonl", "jsonl", "text/plain"}
    write_batch_files(tmp_path / "in", files=5, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url, upload_concurrency=1)

    code, _, recorder = await run_engine(settings, timeout=30)

    assert code == EXIT_USAGE
    assert len(calls(emulator, "upload.start")) <= 3 + 3  # each type once (a second worker may have started)
    assert not calls(emulator, "batches.create")
    assert any("accepts none of the JSONL MIME types" in line for line in recorder.lines())


async def test_a_result_file_that_answers_403_for_a_while_is_fetched_once_it_is_there(tmp_path: Path,
                                                                                      emulator) -> None:
    assert emulator.settings.missing_file_status == 403  # the service's answer for a missing file
    emulator.settings.result_file_delay_seconds = 1.0
    write_batch_files(tmp_path / "in", files=2, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url)
    code, engine, _ = await run_engine(settings, timeout=60)

    assert code == EXIT_OK
    one_job_per_file(emulator, 2)
    downloads = calls(emulator, "files.download")
    assert any(e.status == 403 for e in downloads)
    assert len(downloads) <= 2 * 3
    assert all(rec.attempt == 1 for rec in engine.records.values())


async def test_a_result_file_gone_for_good_403_counts_as_an_expiry(tmp_path: Path, emulator) -> None:
    emulator.settings.result_file_delay_seconds = 3600.0  # never readable in this test
    write_batch_files(tmp_path / "in", files=1, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url, result_gone_after=0.0, max_attempts=1)

    code, engine, _ = await run_engine(settings, timeout=30)

    assert code == EXIT_INCOMPLETE
    rec = next(iter(engine.records.values()))
    assert rec.stage is Stage.EXPIRED and "gone from the server" in (rec.last_error or "")
    assert len(calls(emulator, "files.download")) <= 2


async def test_uploads_are_deleted_once_results_are_saved_and_a_run_over_the_cap_finishes(tmp_path: Path,
                                                                                        emulator) -> None:
    paths = write_batch_files(tmp_path / "in", files=8, requests=20)
    size = max(p.stat().st_size for p in paths)
    emulator.settings.storage_cap_bytes = size * 3  # the server holds three inputs at most
    settings = engine_settings(tmp_path, emulator.base_url)  # the engine does not know the cap

    code, engine, _ = await run_engine(settings, timeout=90)

    assert code == EXIT_OK
    one_job_per_file(emulator, 8)
    assert assert_results_match_inputs(settings.input_dir, settings.output_dir) == 8
    uploaded = [f for f in emulator.files() if f["source"] == "UPLOADED"]
    assert all(f["deleted"] for f in uploaded), "an input upload was left on the server"
    assert all(rec.upload_name is None and rec.upload_expires_at is None for rec in engine.records.values())


async def test_the_engine_holds_uploads_back_under_its_storage_cap(tmp_path: Path, emulator) -> None:
    paths = write_batch_files(tmp_path / "in", files=8, requests=20)
    size = max(p.stat().st_size for p in paths)
    emulator.settings.storage_cap_bytes = size * 3
    settings = engine_settings(tmp_path, emulator.base_url, storage_cap_bytes=size * 3)

    code, _, recorder = await run_engine(settings, timeout=90)

    assert code == EXIT_OK
    one_job_per_file(emulator, 8)
    assert not [e for e in calls(emulator, "upload.start") if e.status == 429], "the engine went over its cap"
    assert len(calls(emulator, "upload.start")) == 8
    assert any("storage cap" in line for line in recorder.lines())


async def test_a_short_upload_lifetime_does_not_make_every_upload_look_expired(tmp_path: Path, emulator) -> None:
    emulator.settings.file_ttl_seconds = 30.0  # far below the engine's 3600 s margin
    write_batch_files(tmp_path / "in", files=3, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url)

    code, _, _ = await run_engine(settings, timeout=30)

    assert code == EXIT_OK
    one_job_per_file(emulator, 3)
    assert len(calls(emulator, "upload.start")) == 3


async def test_a_mistyped_model_is_refused_before_any_upload_with_the_closest_names(tmp_path: Path,
                                                                                    emulator) -> None:
    write_batch_files(tmp_path / "in", files=2, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url, model="gemini-2.5-flahs")

    with pytest.raises(RunRefused) as refused:
        await run_engine(settings)

    assert refused.value.exit_code == EXIT_USAGE
    assert "gemini-2.5-flahs" in str(refused.value) and "gemini-2.5-flash" in str(refused.value)
    assert not calls(emulator, "upload.start")


@pytest.mark.parametrize("order", ["oldest", "shuffled"])
async def test_polling_cost_stays_bounded_whatever_the_list_order(tmp_path: Path, emulator, order: str) -> None:
    from google import genai
    from google.genai import types

    client = genai.Client(api_key=FAKE_KEY, http_options=types.HttpOptions(base_url=emulator.base_url,
                                                                            api_version="v1beta"))
    request = [{"contents": [{"parts": [{"text": "x"}]}]}]
    emulator.settings.max_concurrent_jobs = 0
    for i in range(450):  # another script's jobs: 4.5 pages of them
        client.batches.create(model="gemini-2.5-flash", src=request, config={"display_name": f"other-{i}"})
    emulator.settings.max_concurrent_jobs = 100
    emulator.settings.batches_list_order = order
    emulator.settings.running_seconds = 1.0
    emulator.reset_journal()
    write_batch_files(tmp_path / "in", files=3, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url, poll_interval=0.2)

    code, _, _ = await run_engine(settings, timeout=60)

    assert code == EXIT_OK
    mine = {k: v for k, v in jobs_by_file(emulator).items() if not k.startswith("other-")}
    assert len(mine) == 3 and all(len(v) == 1 for v in mine.values())
    polls = [e for e in emulator.journal() if e.kind in ("batches.list", "batches.get")]
    starts = [i for i, e in enumerate(polls) if e.kind == "batches.list" and "pageToken" not in e.path]
    assert starts
    budget, active = 1 + 2, 3  # ceil(3 / 100) + 2 pages, then only pages that hold one of ours
    for a, b in zip(starts, [*starts[1:], len(polls)], strict=True):
        cycle = polls[a:b]
        lists = sum(1 for e in cycle if e.kind == "batches.list")
        gets = sum(1 for e in cycle if e.kind == "batches.get")
        assert lists <= budget + active and gets <= active, f"a poll made {lists} list and {gets} get calls"


async def test_flat_batch_stats_do_not_matter(tmp_path: Path, emulator) -> None:
    emulator.settings.flat_batch_stats = True
    write_batch_files(tmp_path / "in", files=3, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url)

    code, _, _ = await run_engine(settings)

    assert code == EXIT_OK
    one_job_per_file(emulator, 3)
    assert assert_results_match_inputs(settings.input_dir, settings.output_dir) == 3


async def test_every_field_report_at_once(tmp_path: Path, emulator) -> None:
    """Processing uploads, bare 429s, 403s, a refused MIME type, a storage cap, short lifetimes, inline results,
    another list order and flat progress, together: one job per file, every key answered once, exit 0."""
    paths = write_batch_files(tmp_path / "in", files=12, requests=10)
    size = max(p.stat().st_size for p in paths)
    s = emulator.settings
    s.file_processing_seconds = 0.3
    s.refused_mime_types = {"application/jsonl"}
    s.storage_cap_bytes = size * 5
    s.file_ttl_seconds = 60.0
    s.inline_results_max_requests = 10
    s.batches_list_order = "shuffled"
    s.flat_batch_stats = True
    s.max_concurrent_jobs = 3
    s.creates_per_minute = 30
    s.result_file_delay_seconds = 0.3
    settings = engine_settings(tmp_path, emulator.base_url)

    code, engine, _ = await run_engine(settings, timeout=120)

    assert code == EXIT_OK
    one_job_per_file(emulator, 12)
    assert assert_results_match_inputs(settings.input_dir, settings.output_dir) == 12
    assert all(rec.attempt == 1 for rec in engine.records.values())
    assert calls(emulator, "batches.create", 429), "the scenario never met a 429"


async def test_a_local_error_on_a_batch_backs_off_and_is_logged_once(tmp_path: Path, emulator,
                                                                    monkeypatch) -> None:
    """The results folder is full (ENOSPC on the rename): no storm, the reason logged once, then it finishes."""
    monkeypatch.setattr(engine_module, "_LOCAL_ERROR_PAUSES", (0.3,))
    write_batch_files(tmp_path / "in", files=2, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url)
    real = engine_module.move_into_place
    failures = Counter[str]()

    def disk_full(temporary: Path, final: Path) -> None:
        if failures[final.name] < 4:
            failures[final.name] += 1
            raise OSError(28, "No space left on device", str(final))
        real(temporary, final)

    monkeypatch.setattr(engine_module, "move_into_place", disk_full)

    code, _, recorder = await run_engine(settings, timeout=30)

    assert code == EXIT_OK
    one_job_per_file(emulator, 2)
    assert len(calls(emulator, "files.download")) == 2 * 5  # four failures and the one that worked, per file
    logged = [line for line in recorder.lines() if "No space left on device" in line]
    assert len(logged) == 2, logged  # once per batch, not once per try


async def test_an_input_deleted_while_its_job_runs_is_not_a_download_storm(tmp_path: Path, emulator,
                                                                           monkeypatch) -> None:
    monkeypatch.setattr(engine_module, "_LOCAL_ERROR_PAUSES", (0.5,))
    emulator.settings.running_seconds = 0.5
    paths = write_batch_files(tmp_path / "in", files=1, requests=5)
    kept = paths[0].read_bytes()
    settings = engine_settings(tmp_path, emulator.base_url)

    def on_event(event) -> None:
        record = getattr(event, "record", None)
        if record is not None and record.stage is Stage.PENDING and paths[0].exists():
            paths[0].unlink()  # the user moves the input away while its job runs
            threading.Timer(2.0, paths[0].write_bytes, (kept,)).start()  # and puts it back

    code, _, recorder = await run_engine(settings, timeout=30, hooks=(on_event,))

    assert code == EXIT_OK
    assert len(calls(emulator, "files.download")) <= 2.0 / 0.5 + 2
    assert len([line for line in recorder.lines() if "FileNotFoundError" in line]) == 1


async def test_an_invalid_port_in_the_base_url_stops_with_exit_2_not_a_hang(tmp_path: Path) -> None:
    write_batch_files(tmp_path / "in", files=1, requests=5)
    settings = engine_settings(tmp_path, "http://127.0.0.1:99999")

    with pytest.raises(RunRefused) as refused:
        await run_engine(settings, timeout=20)
    assert refused.value.exit_code == EXIT_USAGE


async def test_file_names_that_a_header_cannot_carry_are_uploaded(tmp_path: Path, emulator) -> None:
    folder = tmp_path / "in"
    write_batch_files(folder, files=1, requests=5)
    source = next(folder.glob("*.jsonl"))
    source.rename(folder / "données été.jsonl")
    settings = engine_settings(tmp_path, emulator.base_url)

    code, _, _ = await run_engine(settings)

    assert code == EXIT_OK
    assert len(calls(emulator, "upload.start")) == 1
    assert (settings.output_dir / "données été.results.jsonl").exists()


async def test_an_api_key_with_curly_quotes_stops_at_once(tmp_path: Path, emulator) -> None:
    from gembatch.core.headless import build_engine

    write_batch_files(tmp_path / "in", files=2, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url)
    engine = build_engine(settings, "\u201cFAKEKEY-not-real\u201d")
    engine.store.acquire_lock()
    try:
        with pytest.raises(RunRefused) as refused:
            await engine.run()
    finally:
        engine.store.release_lock()
        await engine.gateway.aclose()
    assert refused.value.exit_code == EXIT_USAGE
    assert "FAKEKEY" not in str(refused.value)
    assert not calls(emulator, "upload.start")


class _Redirector(BaseHTTPRequestHandler):
    target = ""

    def _answer(self) -> None:
        self.send_response(307)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


async def test_api_calls_do_not_follow_a_redirect_to_another_origin(tmp_path: Path, emulator) -> None:
    _Redirector.target = emulator.base_url
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        write_batch_files(tmp_path / "in", files=1, requests=5)
        settings = engine_settings(tmp_path, f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(RunRefused) as refused:
            await run_engine(settings, timeout=20)
    finally:
        server.shutdown()
        server.server_close()
    assert refused.value.exit_code == EXIT_USAGE
    assert "redirect" in str(refused.value)
    assert not emulator.journal(), "a call (with the API key) reached the other origin"


async def test_trace_writes_every_call_without_contents_or_the_key(tmp_path: Path, emulator) -> None:
    emulator.settings.inline_results_max_requests = 1000  # answers with contents inside the job itself
    write_batch_files(tmp_path / "in", files=2, requests=3)
    trace = tmp_path / "trace.jsonl"
    settings = engine_settings(tmp_path, emulator.base_url, trace=trace)

    code, _, _ = await run_engine(settings)

    assert code == EXIT_OK
    text = trace.read_text(encoding="utf-8")
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == len(emulator.journal())
    assert {"method", "path", "status", "ms", "response_body"} <= lines[0].keys()
    assert FAKE_KEY not in text and "question" not in text and "Emulated answer" not in text
    creates = [line for line in lines if line["path"].endswith(":batchGenerateContent")]
    assert creates and all(line["request_body"]["batch"]["displayName"] for line in creates)
    assert any("<removed:" in json.dumps(line["response_body"]) for line in lines)


async def test_an_input_name_too_long_for_its_results_is_rejected_up_front(tmp_path: Path, emulator) -> None:
    folder = tmp_path / "in"
    write_batch_files(folder, files=2, requests=5)
    first = sorted(folder.glob("*.jsonl"))[0]
    long_name = "q" * 242 + ".jsonl"  # 248 bytes: fits the folder, its results name would not
    first.rename(folder / long_name)
    settings = engine_settings(tmp_path, emulator.base_url)

    code, _, recorder = await run_engine(settings, timeout=30)

    assert code == EXIT_INCOMPLETE
    assert len(calls(emulator, "upload.start")) == 1  # only the other file
    assert any("too long" in line and "229 bytes" in line for line in recorder.lines())
    assert not calls(emulator, "files.download", 404)


def test_a_run_that_must_stop_exits_2_from_the_command_line(tmp_path: Path, emulator, capfd) -> None:
    """The headless command returns and logs the run's own 2 (not "stopped with work left") when no MIME type
    is accepted."""
    from gembatch.tui.launch import main

    emulator.settings.refused_mime_types = {"application/jsonl", "jsonl", "text/plain"}
    write_batch_files(tmp_path / "in", files=3, requests=5)
    code = main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--base-url",
                 emulator.base_url, "--headless"])
    summary = capfd.readouterr().out
    assert code == EXIT_USAGE
    assert "(exit code 2)" in summary
    log = (tmp_path / "out" / "gembatch.log").read_text(encoding="utf-8")
    assert "accepts none of the JSONL MIME types" in log
    assert not calls(emulator, "batches.create")


async def test_a_key_refused_mid_run_stops_the_run_instead_of_polling_forever(tmp_path: Path, emulator) -> None:
    emulator.settings.running_seconds = 30.0
    write_batch_files(tmp_path / "in", files=2, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url)

    def revoke(event) -> None:  # once both jobs run, the key stops working (revoked in the console)
        record = getattr(event, "record", None)
        if record is not None and record.stage is Stage.PENDING:
            emulator.settings.api_key = "another-key"

    code, _, recorder = await run_engine(settings, timeout=30, hooks=(revoke,))

    assert code == EXIT_USAGE
    assert any("the API key was refused" in line for line in recorder.lines())
    refused = [e for e in emulator.journal() if e.note and e.note.startswith("auth:")]
    assert 1 <= len(refused) <= 4, [(e.kind, e.status, e.note) for e in refused]  # one per worker, not a loop


async def test_a_server_that_says_active_but_refuses_every_create_ends_the_batch(tmp_path: Path, emulator,
                                                                               monkeypatch) -> None:
    import dataclasses

    from gembatch.core.backend import FileState
    from gembatch.core.gateway import Gateway

    emulator.settings.file_processing_seconds = 3600.0  # the create keeps refusing: not ACTIVE
    write_batch_files(tmp_path / "in", files=1, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url)
    monkeypatch.setattr(engine_module, "_PROCESSING_CHECKS", (0.05,))
    monkeypatch.setattr(engine_module, "_MAX_NOT_READY", 3)
    real_get = Gateway.get_file

    async def says_active(self, name: str):  # files.get disagrees with the create: it says ACTIVE
        remote = await real_get(self, name)
        return dataclasses.replace(remote, state=FileState.ACTIVE) if remote is not None else None

    monkeypatch.setattr(Gateway, "get_file", says_active)

    code, engine, _ = await run_engine(settings, timeout=30)

    assert code == EXIT_INCOMPLETE
    assert len(calls(emulator, "batches.create", 400)) == 4  # three refusals waited out, the fourth ends it
    assert next(iter(engine.records.values())).stage is Stage.FAILED
