"""`gembatch-tui status`: the checkpoint as text and JSON, readable while another process holds the lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from gembatch.core.checkpoint_format import RunState
from gembatch.core.checkpoint_store import CheckpointStore
from gembatch.core.model import BatchRecord, Stage

from .helpers import run_cli, run_json


def _checkpoint(path: Path) -> Path:
    now = time.time()
    state = RunState(run_id="abcd1234", created_at=now - 3600, model="gemini-2.5-flash", learned={})
    records = [
        BatchRecord("part_1", "in/part_1.jsonl", request_count=10, stage=Stage.DOWNLOADED, succeeded_count=9,
                    failed_count=1, updated_at=now - 100),
        BatchRecord("part_2", "in/part_2.jsonl", request_count=10, stage=Stage.RUNNING, job_name="batches/x2",
                    updated_at=now - 90),
        BatchRecord("part_3", "in/part_3.jsonl", request_count=10, stage=Stage.UPLOADED, upload_name="files/u3",
                    upload_expires_at=now + 47 * 3600 + 120, wait_reason="enqueued-token budget",
                    updated_at=now - 80),
        BatchRecord("part_4", "in/part_4.jsonl", request_count=10, stage=Stage.FAILED, updated_at=now - 10,
                    last_error="job ended JOB_STATE_FAILED 3 times"),
        BatchRecord("part_5", "in/part_5.jsonl", stage=Stage.REJECTED, updated_at=now - 50,
                    last_error="in/part_5.jsonl:7: bad JSON"),
    ]
    state.records = {r.batch_id: r for r in records[:2]}
    store = CheckpointStore(path)
    store.create(state)
    for rec in records[2:]:  # these only in the journal: status must replay it
        state.records[rec.batch_id] = rec
        store.append(rec)
    store.set_learned("token_budget", 3_000_000)
    store.commit_sync()
    return path


def test_status_text_and_json(tmp_path: Path, capsys) -> None:
    path = _checkpoint(tmp_path / "run.checkpoint.json")
    code, out, err = run_cli(capsys, "status", "--checkpoint", path)
    assert code == 0, err
    assert "run abcd1234, model gemini-2.5-flash" in out
    assert "no run holds it now" in out
    assert "batches: 5 (uploaded 1, running 1, downloaded 1, failed 1, rejected 1)" in out
    assert "progress: 3/5 batches ended (60%); requests 9 answered, 1 failed, of 40" in out
    assert "part_3  files/u3  expires in 47h 0" in out and "waiting: enqueued-token budget" in out
    errors = out.split("last errors")[1]
    assert errors.index("part_4") < errors.index("part_5")  # newest first
    assert "learned from the server: enqueued-token budget 3,000,000 tokens" in out

    code, data = run_json(capsys, "status", "--checkpoint", path)
    assert code == 0
    assert data["counts"] == {"uploaded": 1, "running": 1, "downloaded": 1, "failed": 1, "rejected": 1}
    assert data["held_by"] is None and data["ended"] == 3
    assert data["uploads_waiting"][0]["batch_id"] == "part_3"
    assert 47 * 3600 < data["uploads_waiting"][0]["seconds_left"] <= 47 * 3600 + 120
    assert data["jobs_in_flight"] == [{"batch_id": "part_2", "stage": "running", "job_name": "batches/x2",
                                       "job_state": None, "attempt": 1}]
    assert data["learned"] == {"token_budget": 3_000_000}
    assert [e["batch_id"] for e in data["last_errors"]] == ["part_4", "part_5"]


_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from gembatch.core.checkpoint_store import CheckpointStore
    store = CheckpointStore(Path(sys.argv[1]))
    state = store.load()
    store.acquire_lock()
    print("ready", flush=True)
    rec = state.records["part_2"]
    i = 0
    while not Path(sys.argv[2]).exists():   # a busy run: journal commits and compactions all the time
        i += 1
        rec.succeeded_count = i
        store.append(rec)
        store.commit_sync()
        if i % 5 == 0:
            store.compact_sync(state)
        time.sleep(0.002)
    store.close(state)
""")


def test_status_works_while_another_process_holds_the_lock(tmp_path: Path, capsys) -> None:
    path = _checkpoint(tmp_path / "run.checkpoint.json")
    stop = tmp_path / "stop"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), str(stop)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        seen = []
        for _ in range(25):
            code, data = run_json(capsys, "status", "--checkpoint", path)
            assert code == 0
            assert data["held_by"]["pid"] == holder.pid
            seen.append(data["requests"]["succeeded"])
        assert seen == sorted(seen)  # each read is a consistent state, and it moves forward
        code, out, _ = run_cli(capsys, "status", "--checkpoint", path)
        assert code == 0 and f"a run holds it now: pid {holder.pid}" in out
    finally:
        stop.touch()
        _, err = holder.communicate(timeout=30)
    assert holder.returncode == 0, err
    assert not CheckpointStore(path).lock_path.exists()  # status never took (or left) the lock


def test_missing_or_damaged_checkpoint_exits_2(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "status", "--checkpoint", tmp_path / "none.json")
    assert code == 2 and "checkpoint not found" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run_cli(capsys, "status", "--checkpoint", bad)
    assert code == 2 and "is damaged" in err
    assert run_cli(capsys, "status")[0] == 2
    code, _, err = run_cli(capsys, "status", "--checkpoint", tmp_path)
    assert code == 2 and "is a folder" in err


def test_status_json_lists_every_batch(tmp_path: Path, capsys) -> None:
    path = _checkpoint(tmp_path / "run.checkpoint.json")

    code, data = run_json(capsys, "status", "--checkpoint", path)

    assert code == 0
    assert {"counts", "requests", "uploads_waiting", "jobs_in_flight", "last_errors", "learned"} <= set(data)
    assert data["batches"] == 5  # today's count stays; the list is a key of its own
    entries = {entry["batch_id"]: entry for entry in data["batch_list"]}
    assert list(entries) == ["part_1", "part_2", "part_3", "part_4", "part_5"]
    assert entries["part_1"] == {
        "batch_id": "part_1", "file": "in/part_1.jsonl", "stage": "downloaded", "job_name": None, "job_state": None,
        "attempt": 1, "requests": 10, "requests_ok": 9, "requests_failed": 1, "last_error": None,
        "upload_name": None, "upload_expires_at": None, "upload_seconds_left": None, "result_path": None}
    assert entries["part_2"]["job_name"] == "batches/x2" and entries["part_2"]["stage"] == "running"
    assert entries["part_3"]["upload_name"] == "files/u3"
    assert 47 * 3600 < entries["part_3"]["upload_seconds_left"] <= 47 * 3600 + 120
    failed = [e for e in data["batch_list"] if e["stage"] == "failed"]  # jq '.batch_list[] | select(...)'
    assert [(e["file"], e["last_error"]) for e in failed] == [("in/part_4.jsonl", "job ended JOB_STATE_FAILED 3 times")]
