"""Issue 16 points 6, 8 (input side) and 9, issue 13 point 2: the input folder's rules, bad names and keys, paths
that cannot be written, and records that name no job."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from gembatch.core.checkpoint_format import RunState
from gembatch.core.checkpoint_store import CheckpointStore
from gembatch.core.cli_args import resolve_settings
from gembatch.core.config import ConfigError
from gembatch.core.engine import Engine, RunRefused
from gembatch.core.exit_codes import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE
from gembatch.core.headless import build_engine
from gembatch.core.input_scan import Rejection, scan_file, survey_input_folder
from gembatch.core.model import Stage
from gembatch.core.workflow.cli import main as workflow_main
from gembatch.tui.launch import main as launch_main

from ..conftest import FAKE_KEY
from ..engine.helpers import engine_settings, run_engine
from .support import FIGURES, Workspace, judge, tail, write_inputs


def _line(key: str, text: str = "q") -> str:
    return json.dumps({"key": key, "request": {"contents": [{"parts": [{"text": text}]}]}}) + "\n"


# ---- 13.2: the input folder's rules ------------------------------------------------------------------------------


def test_an_empty_input_folder_is_exit_2_naming_the_folder_not_a_hang(workspace: Workspace) -> None:
    outcome = workspace.run(timeout=30)

    assert outcome.returncode == EXIT_USAGE, tail(outcome.stderr)
    assert f"no .jsonl input file in the input folder {workspace.in_dir.resolve()}" in outcome.stderr
    assert not workspace.checkpoint.exists(), "a refused run left a checkpoint"


def test_a_folder_of_files_that_are_not_taken_is_exit_2_listing_them(workspace: Workspace) -> None:
    (workspace.in_dir / "README.txt").write_text("notes")
    (workspace.in_dir / "UPPER.JSONL").write_text(_line("a"))

    outcome = workspace.run(timeout=30)

    assert outcome.returncode == EXIT_USAGE, tail(outcome.stderr)
    assert "README.txt (not a .jsonl file)" in outcome.stderr
    assert "UPPER.JSONL (the extension must be lower-case .jsonl)" in outcome.stderr


async def test_a_run_with_nothing_to_do_ends_instead_of_waiting_forever(tmp_path: Path, emulator) -> None:
    settings = engine_settings(tmp_path, emulator.base_url)
    engine = build_engine(settings, FAKE_KEY)
    engine.state = RunState(run_id="abcd0123", created_at=0.0, model="m")
    try:
        await asyncio.wait_for(engine._finish_watch(), 5)
    finally:
        await engine.gateway.aclose()
    assert engine.stopping


def test_the_survey_takes_jsonl_files_and_says_why_it_passes_over_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text(_line("a"))
    (folder / "inside.txt").write_text(_line("b"))
    (folder / "link_in.jsonl").symlink_to(folder / "inside.txt")
    outside = tmp_path / "outside.jsonl"
    outside.write_text(_line("c"))
    (folder / "link_out.jsonl").symlink_to(outside)
    (folder / "README.txt").write_text("x")
    (folder / "extra.json").write_text("{}")
    (folder / "UPPER.JSONL").write_text(_line("d"))
    (folder / ".hidden.jsonl").write_text(_line("e"))
    (folder / "sub").mkdir()

    survey = survey_input_folder(folder)

    assert [p.name for p in survey.taken] == ["a.jsonl", "link_in.jsonl"]
    reasons = {item.name: item.reason for item in survey.passed_over}
    assert reasons == {
        ".hidden.jsonl": "hidden",
        "extra.json": "not a .jsonl file",
        "inside.txt": "not a .jsonl file",
        "link_out.jsonl": f"a symlink to {outside}, outside the input folder",
        "README.txt": "not a .jsonl file",
        "sub": "a folder: subfolders are not read",
        "UPPER.JSONL": "the extension must be lower-case .jsonl",
    }


async def test_files_not_taken_are_listed_once_in_the_log_and_only_inputs_run(tmp_path: Path, emulator) -> None:
    write_inputs(tmp_path / "in", 2, 2, tag="listed")
    (tmp_path / "in" / "README.txt").write_text("notes")
    (tmp_path / "in" / "UPPER.JSONL").write_text(_line("u"))
    (tmp_path / "in" / "sub").mkdir()

    code, _, recorder = await run_engine(engine_settings(tmp_path, emulator.base_url))

    assert code == EXIT_OK
    listed = [line for line in recorder.lines() if line.startswith("not taken from")]
    assert len(listed) == 1, recorder.lines()
    for name in ("README.txt", "UPPER.JSONL", "sub"):
        assert name in listed[0]
    assert len(emulator.jobs()) == 2


async def test_two_inputs_with_identical_content_are_refused_naming_both(tmp_path: Path, emulator) -> None:
    paths = write_inputs(tmp_path / "in", 2, 2, tag="twin")
    (tmp_path / "in" / "copy.jsonl").write_bytes(paths[1].read_bytes())

    with pytest.raises(RunRefused) as refused:
        await run_engine(engine_settings(tmp_path, emulator.base_url))

    assert refused.value.exit_code == EXIT_USAGE
    assert "copy.jsonl and part_002.jsonl" in str(refused.value) or "part_002.jsonl and copy.jsonl" in str(
        refused.value)
    assert "--allow-duplicate-inputs" in str(refused.value)
    assert not [e for e in emulator.journal() if e.kind.startswith("upload")], "a refused run uploaded"


async def test_allow_duplicate_inputs_submits_both_with_a_warning(tmp_path: Path, emulator) -> None:
    paths = write_inputs(tmp_path / "in", 1, 2, tag="twin2")
    (tmp_path / "in" / "copy.jsonl").write_bytes(paths[0].read_bytes())

    code, _, recorder = await run_engine(engine_settings(tmp_path, emulator.base_url, allow_duplicate_inputs=True))

    assert code == EXIT_OK
    assert len(emulator.jobs()) == 2
    assert any("identical content" in line and "copy.jsonl" in line for line in recorder.lines())


def test_allow_duplicate_inputs_is_a_setting_and_a_flag(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    config = tmp_path / "c.toml"
    config.write_text("allow_duplicate_inputs = true\n")
    common = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    assert resolve_settings(["--config", str(config), *common]).allow_duplicate_inputs is True
    assert resolve_settings([*common, "--allow-duplicate-inputs"]).allow_duplicate_inputs is True
    assert resolve_settings(common).allow_duplicate_inputs is False
    config.write_text('allow_duplicate_inputs = "yes"\n')
    with pytest.raises(ConfigError, match=r"c.toml:1: allow_duplicate_inputs: expected true or false"):
        resolve_settings(["--config", str(config), *common])


async def test_a_key_used_in_two_files_is_a_warning_naming_the_key_and_both_files(tmp_path: Path,
                                                                                 emulator) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "one.jsonl").write_text(_line("shared-key") + _line("only-one"))
    (folder / "two.jsonl").write_text(_line("only-two") + _line("shared-key", "other"))

    code, _, recorder = await run_engine(engine_settings(tmp_path, emulator.base_url))

    assert code == EXIT_OK
    warned = [line for line in recorder.lines() if "shared-key" in line]
    assert len(warned) == 1 and "one.jsonl" in warned[0] and "two.jsonl" in warned[0] and "merge" in warned[0]
    assert not any("only-one" in line or "only-two" in line for line in recorder.lines())


# ---- 16.6: names that are not UTF-8, paths that cannot be written ---------------------------------------------------


async def test_a_file_name_that_is_not_utf8_is_rejected_and_the_others_run(tmp_path: Path, emulator) -> None:
    good = write_inputs(tmp_path / "in", 2, 2, tag="utf")
    bad = os.path.join(os.fsencode(tmp_path / "in"), b"caf\xe9.jsonl")
    with open(bad, "wb") as handle:
        handle.write(_line("x").encode())

    code, engine, recorder = await run_engine(engine_settings(tmp_path, emulator.base_url))

    assert code == EXIT_INCOMPLETE
    rec = engine.records["caf\\xe9"]
    assert rec.stage is Stage.REJECTED and "not valid UTF-8" in (rec.last_error or "")
    assert any("caf\\xe9.jsonl" in line and "not valid UTF-8" in line for line in recorder.lines())
    assert all(engine.records[p.stem].stage is Stage.DOWNLOADED for p in good)
    state = CheckpointStore(tmp_path / "out" / "run.checkpoint.json").load()
    assert state is not None and "caf\\xe9" in state.records


def test_an_unwritable_checkpoint_path_is_exit_2_in_one_line(tmp_path: Path, capsys) -> None:
    write_inputs(tmp_path / "in", 1, 1)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code = launch_main(["--headless", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                        "--checkpoint", str(blocker / "run.checkpoint.json")])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert len(err.strip().splitlines()) == 1 and "is not a folder" in err and "Traceback" not in err, err


def test_a_read_only_output_folder_is_exit_2_in_one_line(tmp_path: Path, capsys,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    write_inputs(tmp_path / "in", 1, 1)
    (tmp_path / "out").mkdir()
    real_access = os.access
    # the tests run as root, for whom a chmod'ed folder stays writable: pretend to be a user without the right
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == tmp_path / "out"
                        else real_access(path, mode))
    code = launch_main(["--headless", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert len(err.strip().splitlines()) == 1 and "not writable" in err and "Traceback" not in err, err


# ---- 16.8 (input side): lone surrogates -------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "where"), [
    (b'{"key": "\\ud800", "request": {}}\n', "'key'"),
    (b'{"key": "a", "request": {"contents": [{"parts": [{"text": "x\\uDFFFy"}]}]}}\n', "'request'.contents[0]"),
    (b'{"key": "a", "request": {"\\udc00": 1}}\n', "a name in 'request'"),
])
def test_a_lone_surrogate_is_refused_naming_file_line_and_place(tmp_path: Path, line: bytes, where: str) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"key": "ok", "request": {}}\n' + line)
    result = scan_file(path)
    assert isinstance(result, Rejection) and result.line == 2
    assert "lone surrogate" in result.reason and where in result.reason, result.reason
    assert str(result).startswith(f"{path}:2: ")


def test_a_surrogate_pair_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"key": "\\ud83d\\ude00", "request": {"contents": [{"parts": [{"text": "\\uD83D\\uDE00"}]}]}}\n')
    assert not isinstance(scan_file(path), Rejection)


def test_split_refuses_a_lone_surrogate_too(tmp_path: Path, capsys) -> None:
    source = tmp_path / "all.jsonl"
    source.write_bytes(b'{"key": "a", "request": {}}\n{"key": "\\ud800", "request": {}}\n')
    code = workflow_main(["split", str(source), "--out", str(tmp_path / "parts"), "--max-requests", "1"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert f"{source}:2:" in err and "lone surrogate" in err, err


# ---- 16.9: same folder in and out, records that name no job -------------------------------------------------------


@pytest.mark.parametrize("through_link", [False, True])
def test_the_output_folder_cannot_be_the_input_folder(tmp_path: Path, through_link: bool) -> None:
    (tmp_path / "in").mkdir()
    output = tmp_path / "in"
    if through_link:
        output = tmp_path / "link"
        output.symlink_to(tmp_path / "in")
    with pytest.raises(ConfigError, match="the output folder is the input folder"):
        resolve_settings(["--input", str(tmp_path / "in"), "--output", str(output)])


async def test_a_hand_edited_running_record_without_a_job_finds_its_job_instead_of_hanging(
        tmp_path: Path, emulator) -> None:
    paths = write_inputs(tmp_path / "in", 2, 2, tag="hand")
    settings = engine_settings(tmp_path, emulator.base_url)
    assert (await run_engine(settings))[0] == EXIT_OK
    (tmp_path / "out" / f"{paths[0].stem}.results.jsonl").unlink()
    store = CheckpointStore(settings.checkpoint_path())
    state = store.load()
    assert state is not None
    rec = state.records[paths[0].stem]
    rec.stage, rec.job_name, rec.job_state, rec.result_name, rec.result_path = Stage.RUNNING, None, None, None, None
    store.compact_sync(state)
    jobs_before = len(emulator.jobs())

    code, engine, recorder = await run_engine(settings, timeout=30)

    assert code == EXIT_OK
    assert len(emulator.jobs()) == jobs_before, "a second job was created for a record that had one"
    assert engine.records[paths[0].stem].stage is Stage.DOWNLOADED
    assert any("names no job" in line for line in recorder.lines())
    judge(emulator, type("Folders", (), {"in_dir": tmp_path / "in", "out_dir": tmp_path / "out"})())


async def test_a_hand_edited_creating_record_without_upload_or_intent_is_uploaded_and_created(
        tmp_path: Path, emulator) -> None:
    paths = write_inputs(tmp_path / "in", 1, 2, tag="hand2")
    settings = engine_settings(tmp_path, emulator.base_url)
    engine: Engine = build_engine(settings, FAKE_KEY)
    await engine.prepare()  # validates the file; nothing is sent yet
    engine.store.close(engine.state)
    await engine.gateway.aclose()
    store = CheckpointStore(settings.checkpoint_path())
    state = store.load()
    assert state is not None
    state.records[paths[0].stem].stage = Stage.CREATING  # no upload, no display name
    store.compact_sync(state)

    code, engine, recorder = await run_engine(settings, timeout=30)

    assert code == EXIT_OK
    assert len(emulator.jobs()) == 1
    assert any("names no job" in line for line in recorder.lines())
    assert any("uploading and creating it" in line for line in recorder.lines())
    FIGURES["hand-edited records repaired"] += 2
