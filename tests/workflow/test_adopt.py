"""`adopt`: a run left half done by another client is taken over and finished with nothing done twice."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from pathlib import Path

from gembatch.core.checkpoint_store import CheckpointStore
from gembatch.core.exit_codes import EXIT_INCOMPLETE as EXIT_PROBLEMS
from gembatch.core.exit_codes import EXIT_OK
from gembatch.core.workflow.adopt import build_parser, match_by_display_name, names_in_report, next_command
from google import genai
from google.genai import types

from ..conftest import FAKE_KEY, write_batch_files
from ..engine.helpers import assert_results_match_inputs, engine_settings, run_engine
from .helpers import run_cli, upload_active


def other_script(emulator, paths: list[Path], uploads: int, jobs: int) -> tuple[list[types.File], list[types.BatchJob]]:
    """What a hand-written script leaves behind: some files uploaded, jobs created for the first few."""
    client = genai.Client(api_key=FAKE_KEY,
                          http_options=types.HttpOptions(base_url=emulator.base_url, api_version="v1beta"))
    uploaded = [upload_active(client, str(p), {"mime_type": "application/jsonl", "display_name": p.stem})
                for p in paths[:uploads]]
    created = [client.batches.create(model="gemini-2.5-flash", src=f.name,
                                     config={"display_name": f"my script run - {p.stem}"})
               for f, p in zip(uploaded[:jobs], paths[:jobs], strict=True)]
    return uploaded, created


def test_a_half_done_run_is_adopted_and_finished_with_no_duplicate(tmp_path: Path, emulator, capsys) -> None:
    paths = write_batch_files(tmp_path / "in", files=6, requests=4)
    uploaded, created = other_script(emulator, paths, uploads=4, jobs=2)
    report = tmp_path / "report.md"
    report.write_text(f"# my run\n- part 1: {created[0].name} (ok)\n- part 2: {created[1].name}\n", encoding="utf-8")
    settings = engine_settings(tmp_path, emulator.base_url)

    code, out, err = run_cli(capsys, "adopt", "--input", settings.input_dir, "--output", settings.output_dir,
                             "--checkpoint", settings.checkpoint, "--jobs-file", report,
                             "--upload", uploaded[2].name, "--upload", uploaded[3].name,
                             "--base-url", emulator.base_url)
    assert code == EXIT_OK, err
    assert "adopted 2 job(s) and 2 upload(s)" in out
    emulator.reset_journal()

    run_code, engine, _ = asyncio.run(run_engine(settings))

    assert run_code == EXIT_OK
    journal = emulator.journal()
    assert sum(e.kind == "upload.start" for e in journal) == 2  # only part_005 and part_006
    assert sum(e.kind == "batches.create" and e.status == 200 for e in journal) == 4  # parts 3 to 6
    jobs_per_file = Counter(job["sha256"] for job in emulator.jobs())
    assert len(jobs_per_file) == 6 and set(jobs_per_file.values()) == {1}
    assert engine.records["part_001"].job_name == created[0].name
    made_from = {job["input_file"] for job in emulator.jobs()}
    assert uploaded[2].name in made_from and uploaded[3].name in made_from  # the adopted uploads were used
    assert engine.records["part_003"].upload_name is None  # and deleted once their results were saved
    assert_results_match_inputs(settings.input_dir, settings.output_dir)


def test_listing_finds_jobs_and_uploads_without_names(tmp_path: Path, emulator, capsys) -> None:
    paths = write_batch_files(tmp_path / "in", files=4, requests=3)
    other_script(emulator, paths, uploads=3, jobs=1)
    settings = engine_settings(tmp_path, emulator.base_url)

    code, out, _ = run_cli(capsys, "adopt", "--input", settings.input_dir, "--output", settings.output_dir,
                           "--checkpoint", settings.checkpoint, "--match-display-names", "--match-uploads",
                           "--base-url", emulator.base_url)

    assert code == EXIT_OK
    assert "adopted 1 job(s) and 2 upload(s)" in out
    emulator.reset_journal()
    assert asyncio.run(run_engine(settings))[0] == EXIT_OK
    assert sum(e.kind == "upload.start" for e in emulator.journal()) == 1
    assert len(emulator.jobs()) == 4


def test_dry_run_writes_nothing_and_unknown_names_exit_3(tmp_path: Path, emulator, capsys) -> None:
    paths = write_batch_files(tmp_path / "in", files=2, requests=3)
    _, created = other_script(emulator, paths, uploads=1, jobs=1)
    settings = engine_settings(tmp_path, emulator.base_url)

    code, out, _ = run_cli(capsys, "adopt", "--input", settings.input_dir, "--output", settings.output_dir,
                           "--checkpoint", settings.checkpoint, "--job", created[0].name,
                           "--job", "batches/doesnotexist", "--dry-run", "--base-url", emulator.base_url)

    assert code == EXIT_PROBLEMS
    assert "would adopt 1 job(s)" in out and "batches/doesnotexist (the server does not know it)" in out
    assert not settings.checkpoint.exists()


def test_names_and_display_names_are_matched_carefully() -> None:
    text = "created batches/abc123 and batches/def-456, again batches/abc123."
    assert names_in_report(text) == ["batches/abc123", "batches/def-456"]
    ids = ["part_1", "part_10", "part_100"]
    assert match_by_display_name("my run - part_10", ids) == "part_10"
    assert match_by_display_name("part_100-retry", ids) == "part_100"
    assert match_by_display_name("unrelated", ids) is None


def sdk(emulator) -> genai.Client:
    return genai.Client(api_key=FAKE_KEY,
                        http_options=types.HttpOptions(base_url=emulator.base_url, api_version="v1beta"))


def wait_ended(client: genai.Client, name: str) -> str:
    """Wait (a few seconds at most) until the job ends; returns its state name."""
    import time

    for _ in range(200):
        state = client.batches.get(name=name).state
        if state is not None and state.name in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED"):
            return state.name
        time.sleep(0.05)
    raise AssertionError(f"{name} did not end")


def test_a_job_made_from_an_adopted_upload_after_adopt_is_adopted_by_the_engine(tmp_path: Path, emulator,
                                                                                 capsys) -> None:
    paths = write_batch_files(tmp_path / "in", files=3, requests=3)
    uploaded, _ = other_script(emulator, paths, uploads=2, jobs=0)
    settings = engine_settings(tmp_path, emulator.base_url)
    code, out, err = run_cli(capsys, "adopt", "--input", settings.input_dir, "--output", settings.output_dir,
                             "--checkpoint", settings.checkpoint, "--match-uploads", "--base-url", emulator.base_url)
    assert code == EXIT_OK, err
    assert "adopted 0 job(s) and 2 upload(s)" in out
    state = CheckpointStore(settings.checkpoint).load()
    assert state is not None and state.records["part_001"].upload_adopted  # kept through the checkpoint
    assert not state.records["part_003"].upload_adopted
    client = sdk(emulator)  # the other script, still running: it creates a job after adopt, before the run
    late = client.batches.create(model="gemini-2.5-flash", src=uploaded[0].name,
                                 config={"display_name": "still running script"})

    run_code, engine, recorder = asyncio.run(run_engine(settings))

    assert run_code == EXIT_OK
    assert engine.records["part_001"].job_name == late.name
    assert any("adopted instead of creating another" in line for line in recorder.lines())
    jobs_per_file = Counter(job["sha256"] for job in emulator.jobs())
    assert len(jobs_per_file) == 3 and set(jobs_per_file.values()) == {1}
    assert_results_match_inputs(settings.input_dir, settings.output_dir)


def test_of_several_jobs_for_one_file_the_succeeded_one_is_adopted(tmp_path: Path, emulator, capsys) -> None:
    paths = write_batch_files(tmp_path / "in", files=2, requests=3)
    uploaded, created = other_script(emulator, paths, uploads=1, jobs=1)
    client = sdk(emulator)
    assert wait_ended(client, created[0].name or "") == "JOB_STATE_SUCCEEDED"
    emulator.settings.pending_seconds = 600.0  # the second job stays pending
    second = client.batches.create(model="gemini-2.5-flash", src=uploaded[0].name,
                                   config={"display_name": "part_001 again"})
    settings = engine_settings(tmp_path, emulator.base_url)

    code, out, err = run_cli(capsys, "adopt", "--input", settings.input_dir, "--output", settings.output_dir,
                             "--checkpoint", settings.checkpoint, "--match-uploads", "--base-url", emulator.base_url)

    assert code == EXIT_OK, err
    adopted = next(line for line in out.splitlines() if line.startswith("part_001:"))
    assert created[0].name in adopted and "JOB_STATE_SUCCEEDED" in adopted and "2 jobs match part_001" in adopted
    assert f"left alone: {second.name}: JOB_STATE_PENDING, a second job of part_001" in out
    emulator.settings.pending_seconds = 0.1
    run_code, engine, _ = asyncio.run(run_engine(settings))
    assert run_code == EXIT_OK
    assert engine.records["part_001"].job_name == created[0].name
    assert len(emulator.jobs()) == 3  # the two of the other script, and part_002's


def test_an_upload_whose_only_job_failed_is_created_from_again(tmp_path: Path, emulator, capsys) -> None:
    paths = write_batch_files(tmp_path / "in", files=1, requests=3)
    emulator.fail_next_jobs(1)
    uploaded, created = other_script(emulator, paths, uploads=1, jobs=1)
    client = sdk(emulator)
    assert wait_ended(client, created[0].name or "") == "JOB_STATE_FAILED"
    settings = engine_settings(tmp_path, emulator.base_url)

    code, out, err = run_cli(capsys, "adopt", "--input", settings.input_dir, "--output", settings.output_dir,
                             "--checkpoint", settings.checkpoint, "--match-uploads", "--base-url", emulator.base_url)

    assert code == EXIT_OK, err
    assert (f"part_001: upload {uploaded[0].name} (its job {created[0].name} ended JOB_STATE_FAILED: "
            "a job will be created from it)") in out
    assert f"left alone: {created[0].name}: JOB_STATE_FAILED (part_001 will be submitted again)" in out
    assert asyncio.run(run_engine(settings))[0] == EXIT_OK
    assert [job["state"] for job in emulator.jobs()] == ["BATCH_STATE_FAILED", "BATCH_STATE_SUCCEEDED"]


def test_jobs_whose_source_file_is_gone_are_matched_by_display_name_or_report_line(tmp_path: Path, emulator,
                                                                                   capsys) -> None:
    paths = write_batch_files(tmp_path / "in", files=3, requests=2)
    client = sdk(emulator)
    uploads = [upload_active(client, str(p), {"mime_type": "application/jsonl"}) for p in paths[:2]]
    by_name = client.batches.create(model="gemini-2.5-flash", src=uploads[0].name,
                                    config={"display_name": "nightly part_001"})
    by_line = client.batches.create(model="gemini-2.5-flash", src=uploads[1].name,
                                    config={"display_name": "second one"})
    for upload in uploads:
        emulator.expire_file(upload.name or "")
    stranger = upload_active(client, io.BytesIO(b'{"key": "x", "request": {}}\n'),
                             {"mime_type": "application/jsonl"})
    foreign = client.batches.create(model="gemini-2.5-flash", src=stranger.name,
                                    config={"display_name": "part_003 of another project"})
    report = tmp_path / "report.md"
    report.write_text(f"- part_002.jsonl: {by_line.name}\n- {foreign.name} (part_003, I think)\n", encoding="utf-8")
    settings = engine_settings(tmp_path, emulator.base_url)

    code, out, _ = run_cli(capsys, "adopt", "--input", settings.input_dir, "--output", settings.output_dir,
                           "--checkpoint", settings.checkpoint, "--jobs-file", report, "--dry-run",
                           "--base-url", emulator.base_url)

    assert code == EXIT_PROBLEMS  # the report names a job of another file's content
    assert f"part_001: job {by_name.name}" in out and "matched by display name; " in out
    assert f"part_002: job {by_line.name}" in out and "matched by report (its line names the file)" in out
    assert f"matches no input file: {foreign.name} (its source file {stranger.name} has the content" in out
    assert "would adopt 2 job(s) and 0 upload(s)" in out


def test_the_closing_hint_is_the_command_to_run_next(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--input", "my batches", "--output", "out", "--checkpoint", "out/run.toml",
                                      "--config", "fast.toml", "--base-url", "http://127.0.0.1:8765",
                                      "--match-uploads"])
    assert next_command(args) == ("gembatch-tui --input 'my batches' --output out --checkpoint out/run.toml "
                                  "--config fast.toml --base-url http://127.0.0.1:8765")
    plain = build_parser().parse_args(["--input", "in", "--output", "out"])
    assert next_command(plain) == "gembatch-tui --input in --output out"
