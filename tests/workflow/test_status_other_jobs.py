"""`status` shows the other jobs on the account that the run's polls saw (how many, their states)."""

from __future__ import annotations

import time
from pathlib import Path

from gembatch.core.checkpoint_format import RunState
from gembatch.core.checkpoint_store import CheckpointStore
from gembatch.core.model import BatchRecord, Stage

from .helpers import run_cli, run_json


def _checkpoint(path: Path, learned: dict[str, float | int]) -> Path:
    state = RunState(run_id="abcd1234", created_at=time.time() - 60, model="gemini-2.5-flash", learned={})
    state.records = {"part_1": BatchRecord("part_1", "in/part_1.jsonl", request_count=3, stage=Stage.RUNNING,
                                           job_name="batches/x1")}
    store = CheckpointStore(path)
    store.create(state)
    for key, value in learned.items():
        store.set_learned(key, value)
    store.commit_sync()
    return path


def test_status_shows_other_jobs_by_state(tmp_path: Path, capsys) -> None:
    seen = time.time() - 5
    path = _checkpoint(tmp_path / "run.checkpoint.json", {
        "token_budget": 1000, "other_jobs_pending": 2, "other_jobs_running": 1, "other_jobs_seen_at": seen})
    code, out, err = run_cli(capsys, "status", "--checkpoint", path)
    assert code == 0, err
    assert "other jobs on the account (not this run's, left alone): 2 pending, 1 running" in out
    assert "other_jobs" not in out.split("learned from the server")[1]

    code, data = run_json(capsys, "status", "--checkpoint", path)
    assert code == 0
    assert data["other_jobs"] == {"pending": 2, "running": 1, "since": seen}
    assert data["learned"] == {"token_budget": 1000}


def test_status_says_none_when_the_polls_saw_no_other_job(tmp_path: Path, capsys) -> None:
    path = _checkpoint(tmp_path / "run.checkpoint.json", {
        "other_jobs_pending": 0, "other_jobs_running": 0, "other_jobs_seen_at": time.time()})
    code, out, _ = run_cli(capsys, "status", "--checkpoint", path)
    assert code == 0 and "other jobs on the account (not this run's, left alone): none" in out
    code, data = run_json(capsys, "status", "--checkpoint", path)
    assert data["other_jobs"]["pending"] == 0


def test_status_without_a_look_at_other_jobs_says_nothing_of_them(tmp_path: Path, capsys) -> None:
    path = _checkpoint(tmp_path / "run.checkpoint.json", {})
    code, out, _ = run_cli(capsys, "status", "--checkpoint", path)
    assert code == 0 and "other jobs" not in out
    code, data = run_json(capsys, "status", "--checkpoint", path)
    assert data["other_jobs"] is None
