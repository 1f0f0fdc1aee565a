"""A damaged or lost checkpoint is refused with a way out, never silently started over; the way out works.

The headless command exits 2 naming the file and the way out (the `.bak` copy when there is one, and
`--rebuild-from-server`), and sends nothing. `--rebuild-from-server` keeps the old files under a timestamped
name, rebuilds the run from the server's batch and file lists, and the run then finishes with no job twice.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from gembatch.core.checkpoint_format import REBUILD_HINT
from gembatch.core.checkpoint_store import CheckpointStore
from gembatch.core.exit_codes import EXIT_OK
from gembatch.core.headless import build_engine
from gembatch.core.model import Stage
from gembatch.core.rebuild import RebuildReport, rebuild_from_server

from ..conftest import FAKE_KEY
from ..engine.helpers import engine_settings, run_engine
from .support import FIGURES, Workspace, judge, tail, wait_for, write_inputs

FILES = 6


def _creates(emulator) -> int:
    return sum(1 for e in emulator.journal() if e.kind == "batches.create" and e.status == 200)


def _interrupted_run(ws: Workspace, emulator) -> None:
    """A run left mid-way: stopped once (so a .bak exists), then killed right after its second create (journal
    lines: a restart may compact, so after one create the journal can hold its intent alone)."""
    write_inputs(ws.in_dir, FILES, 3, tag="dmg")
    emulator.settings.max_concurrent_jobs = 2
    emulator.settings.running_seconds = 1.0
    first = ws.start()
    wait_for(lambda: _creates(emulator) >= 2, 30, "two creates")
    first.popen.send_signal(signal.SIGTERM)
    assert first.finish().returncode == 143
    killed = ws.run(crash_at="after-create:2")  # two creates: the journal holds more than the last intent
    assert killed.returncode == -signal.SIGKILL, tail(killed.stderr)
    store = CheckpointStore(ws.checkpoint)
    assert store.bak_path.exists() and store.journal_path.exists()


def _files(ws: Workspace) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in ws.out_dir.iterdir() if p.name.startswith("gembatch.checkpoint.json")
            and not p.name.endswith(".lock")}


def _restore(ws: Workspace, saved: dict[Path, bytes]) -> None:
    for path in list(_files(ws)):
        path.unlink()
    for path, data in saved.items():
        path.write_bytes(data)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\x13garbage\xff" * 50)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _bad_middle_line(path: Path) -> None:
    """A line before the last one (a damaged LAST line is a torn write, which a restart drops by design)."""
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 2  # how many depends on when the run last compacted: 2 on a loaded machine
    lines[(len(lines) - 1) // 2] = b'{"seq": "not a number"\n'
    path.write_bytes(b"".join(lines))


# (label, damage, which file, words the message must hold besides the file's path and the rebuild flag)
DAMAGES: list[tuple[str, Callable[[Path], None], str, tuple[str, ...]]] = [
    ("truncated snapshot", _truncate, "", (".bak",)),
    ("garbage snapshot", _garbage, "", (".bak",)),
    ("empty snapshot", _empty, "", ("empty",)),
    ("corrupt journal line", _bad_middle_line, ".journal", ("line",)),
    ("snapshot deleted", lambda p: p.unlink(), "", ("missing",)),
]


def test_damaged_checkpoints_are_refused_with_a_way_out_and_the_rebuild_finishes(workspace: Workspace,
                                                                                 emulator) -> None:
    _interrupted_run(workspace, emulator)
    saved = _files(workspace)
    for label, damage, suffix, words in DAMAGES:
        _restore(workspace, saved)
        target = workspace.checkpoint.with_name(workspace.checkpoint.name + suffix)
        damage(target)
        emulator.reset_journal()
        refused = workspace.run()
        assert refused.returncode == 2, f"{label}: exit {refused.returncode}, expected 2:\n{tail(refused.stderr)}"
        assert str(target) in refused.stderr, f"{label}: the message does not name {target}:\n{refused.stderr}"
        assert REBUILD_HINT in refused.stderr, f"{label}: the message does not give {REBUILD_HINT}"
        for word in words:
            assert word in refused.stderr, f"{label}: {word!r} missing from the message:\n{refused.stderr}"
        assert "Traceback" not in refused.stderr
        assert emulator.journal() == [], f"{label}: calls were sent although the checkpoint was refused"
        FIGURES["damaged checkpoints refused"] += 1

    # the way out: rebuild from the server (from the truncated snapshot; its damaged files are kept)
    _restore(workspace, saved)
    _truncate(workspace.checkpoint)
    damaged = _files(workspace)
    emulator.settings.max_concurrent_jobs = 100
    rebuilt = workspace.run(REBUILD_HINT)
    assert rebuilt.returncode == 0, tail(rebuilt.stderr)
    assert "rebuilt run" in rebuilt.stderr and "reused from the job names" in rebuilt.stderr, rebuilt.stderr
    kept = {p.name.split(".before-rebuild-")[0]: p.read_bytes() for p in workspace.out_dir.iterdir()
            if ".before-rebuild-" in p.name}
    assert kept == {p.name: data for p, data in damaged.items()}, "the damaged files were not all kept as they were"
    verdict = judge(emulator, workspace)
    assert verdict.extra_uploads == 0
    FIGURES["checkpoints rebuilt from the server"] += 1


def test_a_lost_output_folder_is_rebuilt_from_the_server_without_a_second_job(workspace: Workspace,
                                                                              emulator) -> None:
    """Checkpoint and results gone (say, the output folder deleted mid-run): the rebuild adopts every job."""
    write_inputs(workspace.in_dir, FILES, 3, tag="lost")
    emulator.settings.max_concurrent_jobs = 3
    emulator.settings.running_seconds = 0.6
    first = workspace.start()
    wait_for(lambda: _creates(emulator) >= 4, 30, "four creates")
    first.kill()
    shutil.rmtree(workspace.out_dir)

    rebuilt = workspace.run(REBUILD_HINT)
    assert rebuilt.returncode == 0, tail(rebuilt.stderr)
    assert "job(s)" in rebuilt.stderr
    judge(emulator, workspace)
    FIGURES["checkpoints rebuilt from the server"] += 1


def test_rebuild_needs_headless(workspace: Workspace) -> None:
    write_inputs(workspace.in_dir, 1, 1)
    argv = [a for a in workspace.command(REBUILD_HINT) if a != "--headless"]
    outcome = workspace.run(argv=argv)
    assert outcome.returncode == 2 and "--headless" in outcome.stderr


async def _run_until(settings, condition: Callable[[dict], bool]) -> None:
    """Run the engine in-process until `condition(records)` holds, then stop it as a signal would."""
    engine = build_engine(settings, FAKE_KEY)
    engine.store.acquire_lock()
    try:
        run = asyncio.create_task(engine.run())
        deadline = time.monotonic() + 30
        while not condition(engine.records) and not run.done():
            assert time.monotonic() < deadline, "the condition never held"
            await asyncio.sleep(0.02)
        engine.request_stop()
        await run
    finally:
        engine.store.release_lock()
        await engine.gateway.aclose()


async def _rebuild(settings) -> RebuildReport:
    engine = build_engine(settings, FAKE_KEY)
    engine.store.acquire_lock()
    try:
        return await rebuild_from_server(settings, engine.gateway, engine.store)
    finally:
        engine.store.release_lock()
        await engine.gateway.aclose()


def _uploads(emulator) -> int:
    return sum(1 for e in emulator.journal() if e.kind == "upload.start" and e.status == 200)


async def test_rebuild_reuses_an_upload_that_has_no_job_yet(tmp_path: Path, emulator) -> None:
    write_inputs(tmp_path / "in", 4, 2, tag="upl")
    settings = engine_settings(tmp_path, emulator.base_url, max_concurrent_jobs=1)
    emulator.settings.running_seconds = 2.0
    await _run_until(settings, lambda records: any(r.stage is Stage.UPLOADED for r in records.values())
                     and any(r.stage in (Stage.PENDING, Stage.RUNNING) for r in records.values()))
    _truncate(settings.checkpoint_path())
    emulator.settings.running_seconds = 0.2

    report = await _rebuild(settings)

    state = CheckpointStore(settings.checkpoint_path()).load()
    assert state is not None and state.run_id == report.run_id and report.reused_run_id
    assert report.uploads_adopted >= 1 and report.jobs_adopted >= 1, report.lines()
    uploaded = _uploads(emulator)
    code, _, _ = await run_engine(settings)
    assert code == EXIT_OK
    assert _uploads(emulator) == uploaded, "a file whose upload was on the server was uploaded again"
    judge(emulator, SimpleNamespace(in_dir=settings.input_dir, out_dir=settings.output_dir))


async def test_rebuild_after_a_failed_job_submits_the_next_attempt_only(tmp_path: Path, emulator) -> None:
    write_inputs(tmp_path / "in", 3, 2, tag="fail")
    settings = engine_settings(tmp_path, emulator.base_url, max_attempts=3)
    emulator.fail_next_jobs(1)
    emulator.settings.running_seconds = 1.5
    await _run_until(settings, lambda records: any(r.attempt == 2 for r in records.values()))
    _garbage(settings.checkpoint_path())
    emulator.settings.running_seconds = 0.2

    report = await _rebuild(settings)

    state = CheckpointStore(settings.checkpoint_path()).load()
    assert state is not None
    assert sorted(r.attempt for r in state.records.values()) == [1, 1, 2], report.lines()
    code, engine, _ = await run_engine(settings)
    assert code == EXIT_OK
    retried = [r for r in engine.records.values() if r.attempt == 2]
    assert len(retried) == 1 and retried[0].display_name.endswith("-a2")
    judge(emulator, SimpleNamespace(in_dir=settings.input_dir, out_dir=settings.output_dir), retries=True)


async def test_rebuild_of_a_checkpoint_that_loads_keeps_the_skipped_files_skipped(tmp_path: Path, emulator) -> None:
    """Asked to rebuild a readable checkpoint, it does (keeping the old one), and a file the user skipped stays so."""
    write_inputs(tmp_path / "in", 3, 2, tag="skip")
    settings = engine_settings(tmp_path, emulator.base_url)
    engine = build_engine(settings, FAKE_KEY)
    engine.store.acquire_lock()
    try:
        await engine.prepare()
        assert engine.skip("part_002")
        engine.store.close(engine.state)
    finally:
        engine.store.release_lock()
        await engine.gateway.aclose()

    report = await _rebuild(settings)

    assert report.moved, "the old checkpoint was not kept aside"
    state = CheckpointStore(settings.checkpoint_path()).load()
    assert state is not None and state.records["part_002"].stage is Stage.SKIPPED
    code, _, _ = await run_engine(settings)
    assert code == EXIT_OK
    assert not (settings.output_dir / "part_002.results.jsonl").exists()
