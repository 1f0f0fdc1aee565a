"""`gembatch-tui retry-failures`: only the failed requests go again, and merge then holds the retried answers."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

from gembatch.core.exit_codes import EXIT_OK

from ..conftest import write_batch_files
from ..engine.helpers import engine_settings, run_engine
from .helpers import answer, error, request_line, run_cli, run_json, write_lines


def _failed_keys(output_dir: Path) -> set[str]:
    failed = set()
    for path in output_dir.glob("*.results.jsonl"):
        for line in path.read_text().splitlines():
            item = json.loads(line)
            if "error" in item:
                failed.add(item["key"])
    return failed


def test_retry_failures_pays_only_for_the_failures(tmp_path: Path, emulator, capsys) -> None:
    inputs = write_batch_files(tmp_path / "in", files=3, requests=20)
    original = {json.loads(line)["key"]: line for p in inputs for line in p.read_text().splitlines()}
    emulator.settings.request_error_rate = 0.3
    settings = engine_settings(tmp_path, emulator.base_url)
    code, _, _ = asyncio.run(run_engine(settings))
    assert code == EXIT_OK
    failed = _failed_keys(settings.output_dir)
    assert 0 < len(failed) < 60

    code, report = run_json(capsys, "retry-failures", "--input", settings.input_dir, "--output",
                            settings.output_dir, "--max-requests", "7")
    assert code == 0
    assert report["failed"] == report["written"] == len(failed)
    retry_dir = settings.output_dir / "retry"
    written = [line for item in report["files"] for line in Path(item["path"]).read_text().splitlines()]
    keys = [json.loads(line)["key"] for line in written]
    assert keys == [k for k in original if k in failed]  # each failed key once, in input order
    assert all(line == original[key] for key, line in zip(keys, written, strict=True))  # the original lines

    # the retry run: the emulator now answers everything; its journal shows what was paid for
    emulator.settings.request_error_rate = 0.0
    emulator.reset_journal()
    files_before = {f["name"] for f in emulator.files()}
    jobs_before = {j["name"] for j in emulator.jobs()}
    retry_settings = engine_settings(tmp_path, emulator.base_url, input_dir=retry_dir,
                                     output_dir=retry_dir / "results",
                                     checkpoint=retry_dir / "results" / "run.checkpoint.json")
    code, _, _ = asyncio.run(run_engine(retry_settings))
    assert code == EXIT_OK
    creates = [e for e in emulator.journal() if e.kind == "batches.create" and e.status == 200]
    assert len(creates) == len(report["files"])
    new_jobs = [j for j in emulator.jobs() if j["name"] not in jobs_before]
    assert sum(j["request_count"] for j in new_jobs) == len(failed)
    uploads = [f for f in emulator.files() if f["name"] not in files_before and f["source"] == "UPLOADED"]
    retry_files = {hashlib.sha256(Path(item["path"]).read_bytes()).hexdigest(): item for item in report["files"]}
    assert sorted(f["sha256"] for f in uploads) == sorted(retry_files)  # exactly the retry files were uploaded
    for f in uploads:
        item = retry_files[f["sha256"]]
        assert f["size_bytes"] == item["bytes"] and f["request_count"] == item["requests"]
    assert sum(f["request_count"] for f in uploads) == len(failed)

    to = tmp_path / "merged.jsonl"
    code, merged = run_json(capsys, "merge", "--input", settings.input_dir, "--output", settings.output_dir,
                            "--retry-output", retry_settings.output_dir, "--to", to)
    assert code == 0
    assert merged["failed"] == 0 and merged["succeeded"] == 60
    assert merged["retried_answers"] == len(failed)
    assert [json.loads(line)["key"] for line in to.read_text().splitlines()] == list(original)

    # nothing failed any more: a second round has nothing to write
    code, out, _ = run_cli(capsys, "retry-failures", "--input", settings.input_dir, "--output", settings.output_dir,
                           "--retry-output", retry_settings.output_dir, "--retry-dir", tmp_path / "round2")
    assert code == 0 and "nothing to retry" in out
    assert not (tmp_path / "round2").exists()


def _two_files(tmp_path: Path) -> tuple[Path, Path]:
    write_lines(tmp_path / "in" / "a.jsonl", [request_line(k) for k in ("a1", "a2", "a3")])
    write_lines(tmp_path / "in" / "b.jsonl", [request_line(k) for k in ("b1", "b2")])
    write_lines(tmp_path / "out" / "a.results.jsonl", [error("a2"), answer("a1"), error("a3")])
    return tmp_path / "in", tmp_path / "out"


def test_second_round_writes_only_what_failed_again(tmp_path: Path, capsys) -> None:
    input_dir, output_dir = _two_files(tmp_path)
    write_lines(tmp_path / "r1" / "retry-001.results.jsonl", [answer("a2"), error("a3")])
    code, out, err = run_cli(capsys, "retry-failures", "--input", input_dir, "--output", output_dir,
                             "--retry-output", tmp_path / "r1", "--retry-dir", tmp_path / "r2")
    assert code == 0, err
    assert (tmp_path / "r2" / "retry-001.jsonl").read_text() == request_line("a3") + "\n"
    assert "1 failed request(s), 2 without any result" in out
    assert f"--retry-output {tmp_path / 'r1'} --retry-output {tmp_path / 'r2' / 'results'}" in out


def test_include_missing_and_rerun(tmp_path: Path, capsys) -> None:
    input_dir, output_dir = _two_files(tmp_path)
    code, report = run_json(capsys, "retry-failures", "--input", input_dir, "--output", output_dir,
                            "--include-missing")
    assert code == 0 and report["written"] == 4
    path = output_dir / "retry" / "retry-001.jsonl"
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["a2", "a3", "b1", "b2"]
    before = path.read_bytes()
    assert run_cli(capsys, "retry-failures", "--input", input_dir, "--output", output_dir, "--include-missing")[0] == 0
    assert path.read_bytes() == before
    # other failures now (a result file changed): the retry file is not replaced under a run that may use it
    write_lines(output_dir / "a.results.jsonl", [error("a2"), error("a1"), error("a3")])
    code, _, err = run_cli(capsys, "retry-failures", "--input", input_dir, "--output", output_dir,
                           "--include-missing")
    assert code == 2 and "exists with other content" in err


def test_usage_errors(tmp_path: Path, capsys) -> None:
    input_dir, output_dir = _two_files(tmp_path)
    code, _, err = run_cli(capsys, "retry-failures", "--input", input_dir, "--output", output_dir,
                           "--retry-dir", input_dir)
    assert code == 2 and "--retry-dir" in err
    assert run_cli(capsys, "retry-failures", "--input", input_dir)[0] == 2
    code, _, err = run_cli(capsys, "retry-failures", "--input", input_dir, "--output", output_dir,
                           "--retry-output", tmp_path / "nope")
    assert code == 2 and "--retry-output: folder not found" in err
