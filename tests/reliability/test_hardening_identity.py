"""Issue 16, points 1, 2 and 4: the checkpoint is one file whatever name reaches it, it belongs to one input folder,
changed inputs and lost results are never silent, and a resume works from any working directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from gembatch.core.checkpoint_format import CheckpointError, RunState
from gembatch.core.checkpoint_store import CheckpointStore
from gembatch.core.engine import RunRefused
from gembatch.core.exit_codes import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE
from gembatch.core.model import Stage
from gembatch.core.workflow.status import read_state, status_dict

from ..engine.helpers import engine_settings, run_engine
from .support import FIGURES, Workspace, jobs_of, judge, scanned_inputs, tail, wait_for, write_inputs


def _first_create(emulator) -> bool:
    return any(e.kind == "batches.create" and e.status == 200 for e in emulator.journal())


def _creates(emulator) -> int:
    return sum(1 for e in emulator.journal() if e.kind == "batches.create")


# ---- 16.1: one checkpoint, whatever name reaches it -------------------------------------------------------------


def test_a_second_run_through_a_symlinked_checkpoint_is_refused_and_the_link_stays_a_link(
        workspace: Workspace, emulator) -> None:
    write_inputs(workspace.in_dir, 4, 3, tag="sym")
    emulator.settings.running_seconds = 6.0  # the first run must still hold the checkpoint
    first = workspace.start()
    wait_for(lambda: _first_create(emulator), 30, "the first engine's first create")
    link = workspace.root / "link.json"
    link.symlink_to(workspace.checkpoint)

    second = workspace.run("--checkpoint", str(link), timeout=30)

    assert second.returncode == EXIT_USAGE, tail(second.stderr)
    assert f"pid {first.pid} on {socket.gethostname()}" in second.stderr, second.stderr
    assert "new run" not in second.stderr and "resuming" not in second.stderr
    done = first.finish(60)
    assert done.returncode == EXIT_OK, tail(done.stderr)
    assert link.is_symlink(), "the checkpoint's symlink was replaced by a file"
    judge(emulator, workspace)  # one job per file: the second run submitted nothing
    FIGURES["second engines refused through a symlink"] += 1


def test_a_run_through_a_symlink_writes_the_target_and_resumes_it(tmp_path: Path) -> None:
    target = tmp_path / "real" / "run.checkpoint.json"
    target.parent.mkdir()
    link = tmp_path / "link.json"
    link.symlink_to(target)
    store = CheckpointStore(link)
    store.create(RunState(run_id="abcd0123", created_at=1.0, model="m", input_dir="/in"))
    store.compact_sync(RunState(run_id="abcd0123", created_at=1.0, model="m", input_dir="/in"))

    assert link.is_symlink() and target.is_file()
    assert store.lock_path == target.with_name(target.name + ".lock")
    loaded = CheckpointStore(target).load()
    assert loaded is not None and loaded.run_id == "abcd0123" and loaded.input_dir == "/in"


def test_a_second_run_through_a_hard_link_is_refused(workspace: Workspace, emulator) -> None:
    write_inputs(workspace.in_dir, 4, 3, tag="hard")
    emulator.settings.running_seconds = 6.0  # the first run must still hold the checkpoint
    first = workspace.start()
    wait_for(lambda: _first_create(emulator), 30, "the first engine's first create")
    hard = workspace.root / "hard.json"
    os.link(workspace.checkpoint, hard)

    second = workspace.run("--checkpoint", str(hard), timeout=30)

    assert second.returncode == EXIT_USAGE, tail(second.stderr)
    assert "hard links" in second.stderr and str(hard) in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    os.unlink(hard)
    done = first.finish(60)
    assert done.returncode == EXIT_OK, tail(done.stderr)
    judge(emulator, workspace)
    FIGURES["second engines refused through a hard link"] += 1


def test_a_crash_inside_the_backup_step_does_not_count_as_a_hard_link(tmp_path: Path) -> None:
    path = tmp_path / "run.checkpoint.json"
    store = CheckpointStore(path)
    store.create(RunState(run_id="abcd0123", created_at=1.0, model="m"))
    os.link(path, store.bak_path)  # what _keep_backup leaves when the process dies right after its link

    store.check_one_name()  # no error
    os.link(path, tmp_path / "other.json")
    with pytest.raises(CheckpointError, match="hard links"):
        store.check_one_name()


# ---- 16.2 (a): the checkpoint belongs to its input folder ---------------------------------------------------------


async def test_the_same_checkpoint_with_another_input_folder_is_refused_naming_both(tmp_path: Path,
                                                                                   emulator) -> None:
    write_inputs(tmp_path / "in", 2, 3, tag="a")
    settings = engine_settings(tmp_path, emulator.base_url)
    code, _, _ = await run_engine(settings)
    assert code == EXIT_OK
    other = tmp_path / "other"
    write_inputs(other, 2, 3, tag="b")  # the same file names, other content
    jobs_before = len(emulator.jobs())

    moved_settings = engine_settings(tmp_path, emulator.base_url, input_dir=other)
    with pytest.raises(RunRefused) as refused:
        await run_engine(moved_settings)

    assert refused.value.exit_code == EXIT_USAGE
    message = str(refused.value)
    assert str((tmp_path / "in").resolve()) in message and str(other.resolve()) in message
    assert "--input-moved" in message
    assert len(emulator.jobs()) == jobs_before


async def test_input_moved_accepts_the_moved_folder_and_submits_nothing_again(tmp_path: Path, emulator) -> None:
    write_inputs(tmp_path / "in", 2, 3, tag="mv")
    code, _, _ = await run_engine(engine_settings(tmp_path, emulator.base_url))
    assert code == EXIT_OK
    shutil.move(tmp_path / "in", tmp_path / "moved")
    jobs_before = len(emulator.jobs())

    settings = engine_settings(tmp_path, emulator.base_url, input_dir=tmp_path / "moved", input_moved=True)
    code, engine, recorder = await run_engine(settings)

    assert code == EXIT_OK
    assert len(emulator.jobs()) == jobs_before
    assert any("input folder moved" in line for line in recorder.lines())
    assert all(rec.source.startswith(str((tmp_path / "moved").resolve())) for rec in engine.records.values())
    state = CheckpointStore(settings.checkpoint_path()).load()
    assert state is not None and state.input_dir == str((tmp_path / "moved").resolve())


# ---- 16.2 (b): an input changed after its job ------------------------------------------------------------------------


def _append_line(path: Path, key: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"key": key, "request": {"contents": [{"parts": [{"text": "late"}]}]}}) + "\n")


async def test_an_input_changed_after_its_job_is_a_warning_and_its_job_is_kept(tmp_path: Path, emulator) -> None:
    paths = write_inputs(tmp_path / "in", 2, 3, tag="chg")
    settings = engine_settings(tmp_path, emulator.base_url)
    assert (await run_engine(settings))[0] == EXIT_OK
    _append_line(paths[0], "late-key")
    jobs_before = len(emulator.jobs())

    code, engine, recorder = await run_engine(settings)

    assert code == EXIT_OK
    assert len(emulator.jobs()) == jobs_before
    warned = [line for line in recorder.lines() if "changed after its job" in line]
    assert len(warned) == 1 and str(paths[0]) in warned[0] and "--resubmit-changed" in warned[0], recorder.lines()
    assert engine.records[paths[0].stem].stage is Stage.DOWNLOADED


async def test_resubmit_changed_submits_the_new_content_as_a_new_attempt(tmp_path: Path, emulator) -> None:
    paths = write_inputs(tmp_path / "in", 2, 3, tag="resub")
    settings = engine_settings(tmp_path, emulator.base_url)
    assert (await run_engine(settings))[0] == EXIT_OK
    _append_line(paths[0], "late-key")

    code, engine, _ = await run_engine(engine_settings(tmp_path, emulator.base_url, resubmit_changed=True))

    assert code == EXIT_OK
    rec = engine.records[paths[0].stem]
    assert rec.attempt == 2 and rec.request_count == 4
    item = scanned_inputs(tmp_path / "in")[paths[0].stem]
    assert len(jobs_of(emulator, item)) == 1  # one job of the new content
    results = (tmp_path / "out" / f"{paths[0].stem}.results.jsonl").read_text()
    assert "late-key" in results
    assert len(emulator.jobs()) == 3  # two first jobs, one for the changed file


# ---- 16.2 (c): results that went missing -------------------------------------------------------------------------


async def test_a_deleted_results_file_is_fetched_again_without_a_new_job(tmp_path: Path, emulator) -> None:
    paths = write_inputs(tmp_path / "in", 2, 3, tag="gone")
    settings = engine_settings(tmp_path, emulator.base_url)
    assert (await run_engine(settings))[0] == EXIT_OK
    result = tmp_path / "out" / f"{paths[0].stem}.results.jsonl"
    saved = result.read_bytes()
    result.unlink()
    status = status_dict(settings.checkpoint_path(), *read_state(settings.checkpoint_path()), now=0.0)
    assert [item["batch_id"] for item in status["results_missing"]] == [paths[0].stem]
    jobs_before = len(emulator.jobs())

    code, _, recorder = await run_engine(settings)

    assert code == EXIT_OK
    assert result.read_bytes() == saved
    assert len(emulator.jobs()) == jobs_before
    assert any("is missing; fetching" in line for line in recorder.lines())


async def test_a_results_file_changed_after_saving_is_fetched_again(tmp_path: Path, emulator) -> None:
    paths = write_inputs(tmp_path / "in", 1, 3, tag="edit")
    settings = engine_settings(tmp_path, emulator.base_url)
    assert (await run_engine(settings))[0] == EXIT_OK
    result = tmp_path / "out" / f"{paths[0].stem}.results.jsonl"
    saved = result.read_bytes()
    result.write_bytes(saved[: len(saved) // 2])  # cut short by hand or by a tool

    code, _, recorder = await run_engine(settings)

    assert code == EXIT_OK
    assert result.read_bytes() == saved
    assert any("differs from the one saved" in line for line in recorder.lines())


async def test_a_deleted_results_file_the_server_no_longer_has_is_reported(tmp_path: Path, emulator) -> None:
    paths = write_inputs(tmp_path / "in", 2, 3, tag="lost")
    settings = engine_settings(tmp_path, emulator.base_url)
    code, engine, _ = await run_engine(settings)
    assert code == EXIT_OK
    rec = engine.records[paths[0].stem]
    assert rec.result_name
    emulator.expire_file(rec.result_name)
    Path(rec.result_path or "").unlink()

    code, engine, recorder = await run_engine(settings)

    assert code == EXIT_INCOMPLETE
    rec = engine.records[paths[0].stem]
    assert rec.stage is Stage.FAILED and "no longer has it" in (rec.last_error or "")
    assert any("no longer has it" in line for line in recorder.lines())


# ---- 16.4: a resume from another working directory ---------------------------------------------------------------


def test_a_run_started_with_relative_paths_resumes_from_another_cwd_with_absolute_paths(
        workspace: Workspace, emulator, tmp_path: Path) -> None:
    write_inputs(workspace.in_dir, 4, 3, tag="cwd")
    emulator.settings.running_seconds = 3.0
    relative = [sys.executable, "-m", "gembatch.tui", "--headless", "--config", "config.toml", "--input", "in",
                "--output", "out", "--base-url", workspace.base_url, "--poll-interval", "0.2"]
    first = subprocess.Popen(relative, cwd=workspace.root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=workspace.environment())
    try:
        wait_for(lambda: sum(1 for e in emulator.journal() if e.kind == "batches.create" and e.status == 200) >= 2,
                 30, "two creates")
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 128 + signal.SIGTERM, err.decode(errors="replace")[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    resumed = subprocess.run(workspace.command(), cwd=elsewhere, stdin=subprocess.DEVNULL, capture_output=True,
                             env=workspace.environment(), timeout=90)

    text = resumed.stderr.decode(errors="replace")
    assert resumed.returncode == EXIT_OK, tail(text)
    assert "resuming run" in text and "Traceback" not in text
    judge(emulator, workspace)  # one job per file across both runs, every result complete
    FIGURES["resumes from another working directory"] += 1


async def test_an_older_checkpoint_with_cwd_relative_sources_resumes_from_elsewhere(
        tmp_path: Path, emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = write_inputs(tmp_path / "in", 2, 3, tag="old")
    settings = engine_settings(tmp_path, emulator.base_url)
    assert (await run_engine(settings))[0] == EXIT_OK
    (tmp_path / "out" / f"{paths[0].stem}.results.jsonl").unlink()  # so that the resume reads its source again
    store = CheckpointStore(settings.checkpoint_path())
    state = store.load()
    assert state is not None
    state.input_dir = None  # as written before the folder was kept
    for rec in state.records.values():
        rec.source = f"in/{rec.batch_id}.jsonl"  # relative to the old run's working directory, tmp_path
    store.compact_sync(state)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    jobs_before = len(emulator.jobs())

    code, engine, _ = await run_engine(settings, timeout=30)

    assert code == EXIT_OK
    assert len(emulator.jobs()) == jobs_before
    assert all(Path(rec.source).is_absolute() and Path(rec.source).exists() for rec in engine.records.values())
    saved = CheckpointStore(settings.checkpoint_path()).load()
    assert saved is not None and saved.input_dir == str((tmp_path / "in").resolve())


def test_the_new_flags_are_in_the_help() -> None:
    from gembatch.core.cli_args import build_parser

    text = build_parser().format_help()
    for flag in ("--input-moved", "--resubmit-changed", "--allow-duplicate-inputs"):
        assert flag in text
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    for flag in ("--input-moved", "--resubmit-changed", "--allow-duplicate-inputs", "### The input folder"):
        assert flag in readme
