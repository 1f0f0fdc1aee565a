"""`gembatch-tui cleanup` against the emulator: only a finished run's files go, storage use is shown."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from gembatch.core.backend import FileState, RemoteFile
from gembatch.core.checkpoint_store import CheckpointStore
from gembatch.core.exit_codes import EXIT_OK
from gembatch.core.gateway import Gateway
from gembatch.core.model import BatchRecord, Stage
from gembatch.core.naming import upload_display_name
from gembatch.core.workflow.cleanup import plan_cleanup

from ..conftest import FAKE_KEY, write_batch_files
from ..engine.helpers import engine_settings, run_engine
from .helpers import request_line, run_cli, run_json, write_lines


async def _upload_foreign(base_url: str, path: Path) -> str:
    gateway = Gateway(api_key=FAKE_KEY, model="gemini-2.5-flash", base_url=base_url, timeout=5)
    try:
        return (await gateway.upload(path, "someone-else")).name
    finally:
        await gateway.aclose()


def _live(emulator) -> dict[str, dict]:
    return {f["name"]: f for f in emulator.files() if not f["deleted"] and not f["expired"]}


@pytest.fixture
def finished_run(tmp_path: Path, emulator) -> tuple[Path, str, set[str]]:
    write_batch_files(tmp_path / "in", files=3, requests=4)
    # A run that kept its uploads (the engine deletes them after saving results unless told not to).
    settings = engine_settings(tmp_path, emulator.base_url, delete_uploads_after_download=False)
    code, engine, _ = asyncio.run(run_engine(settings))
    assert code == EXIT_OK
    ours = {rec.upload_name for rec in engine.records.values()} | {rec.result_name for rec in engine.records.values()}
    assert len(ours) == 6 and None not in ours
    foreign = asyncio.run(_upload_foreign(emulator.base_url, write_lines(tmp_path / "x.jsonl", [request_line("x")])))
    return settings.checkpoint_path(), foreign, ours  # type: ignore[return-value]


def test_dry_run_lists_and_deletes_nothing(finished_run, emulator, capsys) -> None:
    checkpoint, foreign, ours = finished_run
    before = _live(emulator)
    code, out, err = run_cli(capsys, "cleanup", "--checkpoint", checkpoint, "--base-url", emulator.base_url,
                             "--dry-run")
    assert code == 0, err
    assert "would delete 6 file(s)" in out
    for name in ours:
        assert name in out
    assert foreign not in out
    total = sum(f["size_bytes"] for f in before.values())
    assert "of 20.0 GB" in out and f"{len(before)} file(s)" in out
    assert _live(emulator) == before
    assert not [e for e in emulator.journal() if e.kind == "files.delete"]
    assert total > 0


def test_yes_deletes_the_run_files_and_keeps_others(finished_run, emulator, capsys) -> None:
    checkpoint, foreign, ours = finished_run
    before = _live(emulator)
    code, report = run_json(capsys, "cleanup", "--checkpoint", checkpoint, "--base-url", emulator.base_url, "--yes")
    assert code == 0, report
    assert set(report["deleted"]) == ours and not report["failed"]
    assert report["storage_bytes_before"] == sum(f["size_bytes"] for f in before.values())
    assert report["storage_bytes_after"] == before[foreign]["size_bytes"]
    assert set(_live(emulator)) == {foreign}
    # again: nothing left to delete
    code, out, _ = run_cli(capsys, "cleanup", "--checkpoint", checkpoint, "--base-url", emulator.base_url, "--yes")
    assert code == 0 and "nothing to delete" in out


def test_without_yes_and_without_a_terminal_nothing_is_deleted(finished_run, emulator, capsys,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint, _, _ = finished_run
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    before = _live(emulator)
    code, _, err = run_cli(capsys, "cleanup", "--checkpoint", checkpoint, "--base-url", emulator.base_url)
    assert code == 2 and "give --yes" in err
    assert _live(emulator) == before


def test_no_api_key(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")
    code, _, err = run_cli(capsys, "cleanup", "--checkpoint", tmp_path / "c.json", "--dry-run")
    assert code == 2 and "GEMINI_API_KEY" in err


def _file(name: str, display: str | None = None, size: int = 100) -> RemoteFile:
    return RemoteFile(name, display, size, None, None, FileState.ACTIVE)


def test_files_a_batch_still_needs_are_kept() -> None:
    done = BatchRecord("a", "a.jsonl", sha256="aa" * 32, stage=Stage.DOWNLOADED, upload_name="files/a2",
                       result_name="files/batch-a")
    twin = BatchRecord("b", "b.jsonl", sha256="aa" * 32, stage=Stage.UPLOADED, upload_name="files/a2")
    other = BatchRecord("c", "c.jsonl", sha256="cc" * 32, stage=Stage.DOWNLOADED, upload_name="files/c1")
    running = BatchRecord("d", "d.jsonl", sha256="dd" * 32, stage=Stage.RUNNING, upload_name="files/d1")
    files = [_file("files/a1", upload_display_name("aa" * 32)), _file("files/a2", upload_display_name("aa" * 32)),
             _file("files/c0", upload_display_name("cc" * 32)), _file("files/c1", upload_display_name("cc" * 32)),
             _file("files/d1", upload_display_name("dd" * 32)), _file("files/batch-a", None, 50)]
    plan = plan_cleanup({r.batch_id: r for r in (done, twin, other, running)}, files)
    assert sorted(c.name for c in plan.candidates) == ["files/batch-a", "files/c0", "files/c1"]
    assert sorted(plan.kept_in_use) == ["files/a1", "files/a2"]
    assert plan.storage_before == 550


def test_checkpoint_is_only_read(finished_run, emulator, capsys) -> None:
    checkpoint, _, _ = finished_run
    store = CheckpointStore(checkpoint)
    store.acquire_lock()  # a run holds it: cleanup still works
    try:
        stamp = checkpoint.stat().st_mtime_ns
        code, _, err = run_cli(capsys, "cleanup", "--checkpoint", checkpoint, "--base-url", emulator.base_url,
                               "--yes")
        assert code == 0, err
        assert checkpoint.stat().st_mtime_ns == stamp
    finally:
        store.release_lock()


def test_result_files_the_server_refuses_to_delete_are_reported(finished_run, emulator, capsys) -> None:
    checkpoint, _, ours = finished_run
    emulator.settings.long_file_id_bug = True  # Google's 400 on files/batch-… ids over 40 characters
    code, out, _ = run_cli(capsys, "cleanup", "--checkpoint", checkpoint, "--base-url", emulator.base_url, "--yes")
    assert code == 3
    results = sorted(name for name in ours if name.startswith("files/batch-"))
    assert "deleted 3 file(s)" in out
    for name in results:
        assert f"could not delete {name}: 400" in out
    assert "known server limit" in out
