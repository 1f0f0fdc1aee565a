"""`adopt`: a run left half done by another client is taken over and finished with nothing done twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from gembatch.core.exit_codes import EXIT_INCOMPLETE as EXIT_PROBLEMS
from gembatch.core.exit_codes import EXIT_OK
from gembatch.core.workflow.adopt import match_by_display_name, names_in_report
from google import genai
from google.genai import types

from ..conftest import FAKE_KEY, write_batch_files
from ..engine.helpers import assert_results_match_inputs, engine_settings, run_engine
from .helpers import run_cli


def other_script(emulator, paths: list[Path], uploads: int, jobs: int) -> tuple[list[types.File], list[types.BatchJob]]:
    """What a hand-written script leaves behind: some files uploaded, jobs created for the first few."""
    client = genai.Client(api_key=FAKE_KEY,
                          http_options=types.HttpOptions(base_url=emulator.base_url, api_version="v1beta"))
    uploaded = [client.files.upload(file=str(p), config={"mime_type": "application/jsonl", "display_name": p.stem})
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
    assert engine.records["part_003"].upload_name == uploaded[2].name
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
