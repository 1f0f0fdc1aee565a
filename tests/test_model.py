"""A batch record's plain-dict form (what the checkpoint stores) and its copies."""

from __future__ import annotations

import dataclasses

import pytest
from gembatch.core.model import BatchRecord, HistoryEntry, Stage


def sample() -> BatchRecord:
    rec = BatchRecord(batch_id="part_001", source="/in/part_001.jsonl", size_bytes=10, sha256="ab" * 32,
                      request_count=3, est_tokens=90, stage=Stage.RUNNING, job_name="batches/j1")
    rec.note(1.5, "created")
    return rec


def test_to_dict_leaves_none_out_and_writes_stages_as_text() -> None:
    data = sample().to_dict()

    assert data["stage"] == "running" and type(data["stage"]) is str
    assert data["history"] == [{"at": 1.5, "stage": "running", "note": "created"}]
    assert "upload_name" not in data and "last_error" not in data  # None: TOML has no null
    assert data["job_name"] == "batches/j1" and data["attempt"] == 1
    unset = {f.name for f in dataclasses.fields(BatchRecord) if getattr(sample(), f.name) is None}
    assert set(data) == {f.name for f in dataclasses.fields(BatchRecord)} - unset


def test_from_dict_is_the_inverse_of_to_dict() -> None:
    rec = sample()
    again = BatchRecord.from_dict(rec.to_dict())

    assert again == rec
    assert again.stage is Stage.RUNNING and isinstance(again.history[0], HistoryEntry)
    assert again.history[0].stage is Stage.RUNNING


def test_from_dict_refuses_unknown_fields_and_stages() -> None:
    data = sample().to_dict()
    with pytest.raises(ValueError, match=r"unknown fields \['colour'\]"):
        BatchRecord.from_dict({**data, "colour": "red"})
    with pytest.raises(ValueError, match="'flying' is not a valid Stage"):
        BatchRecord.from_dict({**data, "stage": "flying"})
    with pytest.raises(ValueError, match="is not a valid Stage"):
        BatchRecord.from_dict({**data, "history": [{"at": 1.0, "stage": ["a list"], "note": ""}]})


def test_a_copy_shares_nothing_that_later_changes_touch() -> None:
    rec = sample()
    clone = rec.copy()
    rec.note(2.0, "running")
    rec.succeeded_count = 2

    assert clone == sample()
    assert len(clone.history) == 1 and clone.succeeded_count == 0
