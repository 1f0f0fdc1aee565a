"""The checkpoint on disk: round trips, journal replay, damage refused with a way out, atomic writes, the lock."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from gembatch.core.checkpoint_format import REBUILD_HINT, CheckpointError, RunState
from gembatch.core.checkpoint_lock import CheckpointLocked
from gembatch.core.checkpoint_store import CheckpointStore, CheckpointWriteError
from gembatch.core.model import BatchRecord, Stage

T0 = 1_700_000_000.25


def make_record(i: int, *, stage: Stage = Stage.UPLOADED, notes: int = 3) -> BatchRecord:
    rec = BatchRecord(
        batch_id=f"part_{i:05d}",
        source=f"/data/in/part_{i:05d}.jsonl",
        size_bytes=1000 + i,
        mtime_ns=1_700_000_000_123_456_789,
        sha256=f"{i:064x}",
        request_count=100,
        est_tokens=25_000,
        stage=stage,
        upload_name=f"files/up{i}",
        upload_expires_at=T0 + 172800.5,
        updated_at=T0,
    )
    for n in range(notes):
        rec.note(T0 + n + 0.5, f"step {n} of «part {i}»\nsecond line \"quoted\"")
    return rec


def make_state(count: int, *, notes: int = 3) -> RunState:
    records = {rec.batch_id: rec for rec in (make_record(i, notes=notes) for i in range(count))}
    return RunState(run_id="0a1b2c3d", created_at=T0, model="gemini-2.5-flash", records=records,
                    learned={"token_budget": 3_000_000, "ratio": 0.25})


def dump(state: RunState) -> dict:
    return {"run_id": state.run_id, "created_at": state.created_at, "model": state.model,
            "learned": state.learned, "records": [rec.to_dict() for rec in state.records.values()]}


def reload(path: Path) -> RunState:
    state = CheckpointStore(path).load()
    assert state is not None
    return state


# ---- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["run.json", "run.toml"])
def test_round_trip_with_history(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    state = make_state(3)
    state.records["part_00001"].job_name = "batches/123"
    state.records["part_00001"].last_error = None
    store = CheckpointStore(path)
    assert store.load() is None and not store.exists()
    store.create(state)
    assert store.exists()
    loaded = reload(path)
    assert dump(loaded) == dump(state)
    assert list(loaded.records) == list(state.records)
    rec = loaded.records["part_00002"]
    assert all(isinstance(h.at, float) for h in rec.history)
    assert isinstance(rec.updated_at, float) and isinstance(rec.upload_expires_at, float)
    assert isinstance(loaded.learned["ratio"], float) and isinstance(loaded.learned["token_budget"], int)


def test_toml_snapshot_is_readable_tables(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    CheckpointStore(path).create(make_state(2))
    text = path.read_text(encoding="utf-8")
    assert text.startswith('format = "gembatch-checkpoint"\nversion = 2\n')
    assert text.count("[[batches]]") == 2
    assert "history = [\n    { at = 1700000000.75," in text


def test_json_snapshot_layout(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    CheckpointStore(path).create(make_state(2))
    data = json.loads(path.read_text(encoding="utf-8"))
    assert list(data) == ["format", "version", "run_id", "created_at", "model", "journal_seq", "learned",
                          "batches"]
    assert data["format"] == "gembatch-checkpoint" and data["version"] == 2
    assert [b["batch_id"] for b in data["batches"]] == ["part_00000", "part_00001"]
    assert len(path.read_text(encoding="utf-8").splitlines()) == 13  # one line per batch


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    CheckpointStore(path).create(make_state(1))
    with pytest.raises(CheckpointError, match="already exists"):
        CheckpointStore(path).create(make_state(1))


# ---- the journal -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["run.json", "run.toml"])
def test_journal_replay(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    state = make_state(3)
    store = CheckpointStore(path)
    store.create(state)
    snapshot_bytes = path.read_bytes()
    rec = state.records["part_00001"]
    rec.stage = Stage.CREATING
    rec.display_name = "gembatch-0a1b2c3d-part_00001-abc-1"
    rec.note(T0 + 10, "creating")
    store.append(rec)
    new = make_record(7, stage=Stage.VALIDATED)
    state.records[new.batch_id] = new
    store.append(new)
    store.set_learned("token_budget", 2_500_000)
    rec.stage = Stage.PENDING
    rec.job_name = "batches/9"
    store.append(rec)
    store.commit_sync()
    assert path.read_bytes() == snapshot_bytes  # a commit never rewrites the snapshot
    loaded = reload(path)
    assert dump(loaded) == dump(state)
    assert loaded.learned["token_budget"] == 2_500_000
    assert list(loaded.records)[-1] == "part_00007"


async def test_async_commit_and_compact(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    state = make_state(3)
    store = CheckpointStore(path, compact_every=3)
    store.create(state)
    await store.commit()  # nothing to do
    assert not store.journal_path.exists()
    for rec in state.records.values():
        rec.stage = Stage.RUNNING
        store.append(rec)
    assert store.needs_compaction
    await store.commit()
    assert dump(reload(path)) == dump(state)
    await store.compact(state)
    assert not store.needs_compaction
    assert not store.journal_path.exists()  # rotated to .journal.bak; a fresh one starts with the next commit
    assert len(store.journal_bak_path.read_bytes().splitlines()) == 3
    assert dump(reload(path)) == dump(state)
    state.records["part_00000"].stage = Stage.SUCCEEDED
    store.append(state.records["part_00000"])
    await store.commit()
    assert reload(path).records["part_00000"].stage is Stage.SUCCEEDED


def test_trailing_partial_line_is_dropped_and_cut_before_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    state = make_state(2)
    store = CheckpointStore(path)
    store.create(state)
    state.records["part_00000"].stage = Stage.UPLOADING
    store.append(state.records["part_00000"])
    store.commit_sync()
    with store.journal_path.open("ab") as fh:  # a crash in the middle of an append
        fh.write(b'{"seq":2,"run":"0a1b2c3d","record":{"batch_id":"part_0')
    damaged = store.journal_path.read_bytes()
    again = CheckpointStore(path)
    loaded = again.load()
    assert loaded is not None and dump(loaded) == dump(state)
    assert store.journal_path.read_bytes() == damaged  # loading writes nothing (a watcher may load)
    loaded.records["part_00001"].stage = Stage.UPLOADING
    again.append(loaded.records["part_00001"])
    again.commit_sync()
    assert dump(reload(path)) == dump(loaded)
    assert all(line.endswith(b"}") for line in again.journal_path.read_bytes().splitlines())


def test_corrupt_middle_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    state = make_state(3)
    store = CheckpointStore(path)
    store.create(state)
    for rec in state.records.values():
        store.append(rec)
    store.commit_sync()
    lines = store.journal_path.read_bytes().splitlines(keepends=True)
    lines[1] = b'{"seq":2,"run":"0a1b2c3d","rec\x00\x00\n'
    store.journal_path.write_bytes(b"".join(lines))
    with pytest.raises(CheckpointError) as caught:
        CheckpointStore(path).load()
    message = str(caught.value)
    assert str(store.journal_path) in message and "line 2" in message and REBUILD_HINT in message


def test_journal_gap_and_foreign_run_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    state = make_state(2)
    store = CheckpointStore(path)
    store.create(state)
    for rec in state.records.values():
        store.append(rec)
    store.commit_sync()
    good = store.journal_path.read_bytes()
    lines = good.splitlines(keepends=True)
    store.journal_path.write_bytes(lines[1])  # change #1 lost
    with pytest.raises(CheckpointError, match=r"change #2 follows #0: changes are missing"):
        CheckpointStore(path).load()
    store.journal_path.write_bytes(good.replace(b'"run":"0a1b2c3d"', b'"run":"ffffffff"'))
    with pytest.raises(CheckpointError, match="belongs to run ffffffff"):
        CheckpointStore(path).load()


def test_crash_between_snapshot_and_journal_rotation(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    state = make_state(3)
    store = CheckpointStore(path)
    store.create(state)
    for rec in state.records.values():
        rec.stage = Stage.PENDING
        store.append(rec)
    store.commit_sync()
    journal = store.journal_path.read_bytes()
    store.compact_sync(state)
    store.journal_path.write_bytes(journal)  # as if the rotation never happened: stale lines stay
    store.journal_bak_path.unlink()
    again = CheckpointStore(path)
    loaded = again.load()
    assert loaded is not None and dump(loaded) == dump(state)
    loaded.records["part_00002"].stage = Stage.RUNNING
    again.append(loaded.records["part_00002"])
    again.commit_sync()
    assert reload(path).records["part_00002"].stage is Stage.RUNNING


async def test_commit_waits_for_a_commit_already_writing_its_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CheckpointStore(tmp_path / "run.json")
    state = make_state(1)
    store.create(state)
    real_fsync = os.fsync
    synced: list[float] = []

    def slow_fsync(fd: int) -> None:
        time.sleep(0.3)
        real_fsync(fd)
        synced.append(time.monotonic())

    monkeypatch.setattr(os, "fsync", slow_fsync)
    store.append(state.records["part_00000"])  # e.g. a create intent
    background = asyncio.create_task(store.commit())  # the periodic commit took the line first
    await asyncio.sleep(0.1)
    await store.commit()  # the creator's commit: the line must be on disk when this returns
    assert synced and time.monotonic() >= synced[0]
    await background


def test_folder_of_a_new_checkpoint_is_made(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "out" / "deeper" / "run.json")
    store.acquire_lock()
    store.create(make_state(1))
    store.close(make_state(1))
    assert reload(store.path).run_id == "0a1b2c3d"


def test_needs_compaction_counts_journal_lines(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "run.json", compact_every=5)
    state = make_state(1)
    store.create(state)
    rec = state.records["part_00000"]
    for _ in range(4):
        store.append(rec)
    assert not store.needs_compaction
    store.append(rec)
    assert store.needs_compaction
    store.commit_sync()
    reopened = CheckpointStore(store.path, compact_every=5)
    reopened.load()
    assert reopened.needs_compaction  # a long journal found on start is compacted soon
    store.compact_sync(state)
    assert not store.needs_compaction


# ---- damage and the way out ------------------------------------------------------------------------


def test_truncated_snapshot_is_refused_naming_the_file_and_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    CheckpointStore(path).create(make_state(5))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as caught:
        CheckpointStore(path).load()
    message = str(caught.value)
    assert str(path) in message and "cut short" in message and REBUILD_HINT in message


def test_truncated_toml_at_a_line_boundary_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    CheckpointStore(path).create(make_state(5))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[: len(lines) - 9]))  # still valid TOML, but batches are missing
    with pytest.raises(CheckpointError, match="cut short"):
        CheckpointStore(path).load()


def test_bak_is_kept_and_restoring_it_replays_both_journals(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    state = make_state(3)
    store = CheckpointStore(path)
    store.create(state)
    assert not store.bak_path.exists()
    state.records["part_00000"].stage = Stage.PENDING
    store.append(state.records["part_00000"])
    store.compact_sync(state)
    first = path.read_bytes()
    state.records["part_00001"].stage = Stage.PENDING
    store.append(state.records["part_00001"])
    store.compact_sync(state)
    assert store.bak_path.read_bytes() == first
    state.records["part_00002"].stage = Stage.RUNNING
    store.append(state.records["part_00002"])
    store.commit_sync()
    path.write_bytes(path.read_bytes()[:40])  # the snapshot is damaged
    with pytest.raises(CheckpointError) as caught:
        CheckpointStore(path).load()
    assert str(store.bak_path) in str(caught.value)
    shutil.copyfile(store.bak_path, path)  # the way out the message gives
    assert dump(reload(path)) == dump(state)


def test_unknown_version_and_foreign_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    CheckpointStore(path).create(make_state(1))
    data = json.loads(path.read_text(encoding="utf-8"))
    data["version"] = 3
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"written by a newer gembatch-tui \(format version 3.*upgrade"):
        CheckpointStore(path).load()
    path.write_text('{"hello": 1}', encoding="utf-8")
    with pytest.raises(CheckpointError, match="not a gembatch checkpoint"):
        CheckpointStore(path).load()
    path.write_text("", encoding="utf-8")
    with pytest.raises(CheckpointError, match="empty"):
        CheckpointStore(path).load()


def test_missing_snapshot_with_leftovers_is_not_a_fresh_start(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    store = CheckpointStore(path)
    state = make_state(1)
    store.create(state)
    store.append(state.records["part_00000"])
    store.commit_sync()
    path.unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        CheckpointStore(path).load()


# ---- write errors ----------------------------------------------------------------------------------


def _no_space(*_args: object) -> int:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_write_error_during_compact_leaves_the_previous_snapshot_intact(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "run.json"
    state = make_state(3)
    store = CheckpointStore(path)
    store.create(state)
    state.records["part_00000"].stage = Stage.PENDING
    store.append(state.records["part_00000"])
    store.commit_sync()
    before = path.read_bytes()
    state.records["part_00001"].stage = Stage.PENDING
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", _no_space)
        with pytest.raises(CheckpointWriteError) as caught:
            store.compact_sync(state)
    assert "No space left" in str(caught.value) and str(path) in str(caught.value)
    assert "previous checkpoint is intact" in str(caught.value)
    assert path.read_bytes() == before
    assert not store._tmp_path.exists()
    assert reload(path).records["part_00000"].stage is Stage.PENDING  # the journal still holds it
    store.compact_sync(state)  # the disk has room again
    assert dump(reload(path)) == dump(state)


async def test_write_error_during_commit_raises_and_nothing_half_written_stays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "run.json"
    state = make_state(3)
    store = CheckpointStore(path)
    store.create(state)
    store.append(state.records["part_00000"])
    await store.commit()
    good_size = store.journal_path.stat().st_size
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    state.records["part_00001"].stage = Stage.CREATING  # a create intent
    store.append(state.records["part_00001"])
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", half_then_full)
        with pytest.raises(CheckpointWriteError, match="no new job is created"):
            await store.commit()
    assert store.journal_path.stat().st_size == good_size  # the half line was cut off
    assert reload(path).records["part_00001"].stage is Stage.UPLOADED
    await store.commit()  # kept in memory, written now
    loaded = reload(path)
    assert loaded.records["part_00001"].stage is Stage.CREATING
    seqs = [json.loads(line)["seq"] for line in store.journal_path.read_bytes().splitlines()]
    assert seqs == [1, 2]


# ---- secrets ---------------------------------------------------------------------------------------


def test_the_api_key_is_never_written(tmp_path: Path, fake_api_key: str) -> None:
    assert os.environ["GEMINI_API_KEY"] == fake_api_key
    path = tmp_path / "run.json"
    state = make_state(2)
    store = CheckpointStore(path)
    store.acquire_lock()
    store.create(state)
    rec = state.records["part_00000"]
    rec.last_error = f"400 bad request for key={fake_api_key}"
    rec.note(T0 + 50, f"calling with {fake_api_key}")
    store.append(rec)
    store.commit_sync()
    store.compact_sync(state)
    store.append(rec)
    store.commit_sync()
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"run.json", "run.json.journal", "run.json.journal.bak", "run.json.bak",
                                        "run.json.lock"}
    for file in files:
        assert fake_api_key.encode() not in file.read_bytes(), file
    assert "[redacted]" in reload(path).records["part_00000"].last_error
    store.close(state)
    for file in tmp_path.iterdir():
        assert fake_api_key.encode() not in file.read_bytes(), file


# ---- the lock --------------------------------------------------------------------------------------


def test_second_acquire_raises_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    first = CheckpointStore(path)
    first.acquire_lock()
    first.acquire_lock()  # idempotent for its holder
    second = CheckpointStore(path)
    with pytest.raises(CheckpointLocked) as caught:
        second.acquire_lock()
    assert caught.value.holder.pid == os.getpid()
    assert f"pid {os.getpid()}" in str(caught.value) and str(path) in str(caught.value)
    assert second.read_holder() == first.read_holder()
    first.release_lock()
    first.release_lock()
    assert not first.lock_path.exists()
    assert second.read_holder() is None
    second.acquire_lock()
    assert second.read_holder() is not None and second.read_holder().pid == os.getpid()
    second.release_lock()


def test_lock_of_a_sigkilled_holder_can_be_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from gembatch.core.checkpoint_store import CheckpointStore
        store = CheckpointStore(Path({str(path)!r}))
        store.acquire_lock()
        print("locked", flush=True)
        time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        store = CheckpointStore(path)
        with pytest.raises(CheckpointLocked) as caught:
            store.acquire_lock()
        assert caught.value.holder.pid == holder.pid and f"pid {holder.pid}" in str(caught.value)
        assert store.read_holder() is not None and store.read_holder().pid == holder.pid
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        assert store.read_holder() is None  # the kernel dropped the flock with the process
        store.acquire_lock()
        assert store.read_holder().pid == os.getpid()
        assert json.loads(store.lock_path.read_text())["pid"] == os.getpid()
        store.release_lock()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# ---- scale -----------------------------------------------------------------------------------------


def _bytes_for_one_append(tmp_path: Path, records: int) -> int:
    path = tmp_path / f"scale{records}.json"
    state = make_state(records)
    store = CheckpointStore(path)
    store.create(state)
    snapshot = path.stat().st_size
    rec = state.records["part_00003"]
    rec.stage = Stage.PENDING
    store.append(rec)
    store.commit_sync()
    assert path.stat().st_size == snapshot
    return store.journal_path.stat().st_size


def test_bytes_per_append_do_not_grow_with_the_number_of_records(tmp_path: Path) -> None:
    small = _bytes_for_one_append(tmp_path, 10)
    large = _bytes_for_one_append(tmp_path, 5000)
    print(f"\nbytes written for one append+commit: {small} at 10 records, {large} at 5,000 records")
    assert large == small


def test_load_of_10000_records(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    state = make_state(10_000, notes=6)
    store = CheckpointStore(path)
    started = time.perf_counter()
    store.create(state)
    written = time.perf_counter() - started
    for i in range(0, 10_000, 20):
        rec = state.records[f"part_{i:05d}"]
        rec.stage = Stage.RUNNING
        store.append(rec)
    store.commit_sync()
    started = time.perf_counter()
    loaded = CheckpointStore(path).load()
    took = time.perf_counter() - started
    assert loaded is not None and len(loaded.records) == 10_000
    assert loaded.records["part_09980"].stage is Stage.RUNNING
    size = path.stat().st_size
    print(f"\n10,000 records: snapshot {size / 1e6:.1f} MB written in {written:.3f}s; "
          f"load with 500 journal lines {took:.3f}s")


def test_module_names_the_rebuild_hint() -> None:
    assert REBUILD_HINT.startswith("--")
