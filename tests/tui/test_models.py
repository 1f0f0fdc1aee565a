"""The pure parts of the UI: grid rows by diff, progress tally, formatting; and `core/` never imports Textual."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

from gembatch.core.model import Stage
from gembatch.tui.formatting import countdown, hms, shorten, time_left
from gembatch.tui.grid_model import GridModel, cell_text, stage_label
from gembatch.tui.progress import RunTally

from .fake_engine import NOW, record, sample_records


def test_grid_rows_update_in_place_unless_they_move() -> None:
    model = GridModel()
    assert model.upsert(sample_records()) is None  # new rows: one rebuild
    assert model.view[:3] == ["qa_part_001", "qa_part_002", "qa_part_003"]
    running = model.records["qa_part_005"]
    assert model.upsert([dataclasses.replace(running, succeeded_count=77)]) == {"qa_part_005"}
    model.sort_key = "stage"
    model.rebuild()
    assert model.upsert([dataclasses.replace(running, succeeded_count=78)]) == {"qa_part_005"}
    assert model.upsert([dataclasses.replace(running, stage=Stage.DOWNLOADED)]) is None  # moved: rebuilt
    assert model.view.index("qa_part_005") > model.view.index("qa_part_007")


def test_grid_filter_and_sort() -> None:
    model = GridModel()
    model.upsert(sample_records())
    model.set_filter("FAIL")
    assert model.view == ["qa_part_004"]  # stage "failed" (and its error); any case
    model.set_filter("missing")
    assert model.view == ["qa_part_012"]  # by error text
    model.set_filter("")
    model.sort_key = "name"
    model.flip_order()
    assert model.view[0] == "qa_part_012"
    model.cycle_sort()
    assert model.sort_key == "stage"
    hidden = dataclasses.replace(model.records["qa_part_001"], stage=Stage.FAILED)
    model.set_filter("running")
    assert model.upsert([hidden]) == set()  # not shown: nothing to redraw


def test_cells_read_without_colour() -> None:
    rec = record(4, Stage.FAILED)
    assert stage_label(Stage.FAILED) == "✗ failed"
    assert cell_text("stage", rec, NOW) == "✗ failed"
    assert cell_text("job", rec, NOW) == "job00004"
    uploaded = record(8, Stage.UPLOADED)
    assert cell_text("expiry", uploaded, NOW) == "47h08m"
    assert cell_text("expiry", rec, NOW) == ""  # its job exists: the upload's expiry no longer matters


def test_tally_counts_by_diff_and_estimates_time_left() -> None:
    tally = RunTally()
    for rec in sample_records():
        tally.apply(rec)
    snap = tally.snapshot()
    assert (snap.files_total, snap.files_done, snap.files_failed) == (12, 5, 2)
    assert (snap.requests_total, snap.requests_done) == (1200, 400)
    rec = record(5, Stage.DOWNLOADED)
    tally.apply(rec)
    assert tally.snapshot().files_done == 6
    assert tally.seconds_left() is None
    tally.sample(NOW)
    tally.apply(record(6, Stage.DOWNLOADED))
    tally.sample(NOW + 10)
    left = tally.seconds_left()
    assert left is not None and left > 0


def test_the_files_total_is_the_sum_of_its_parts_rejected_included() -> None:
    tally = RunTally()
    records = [*sample_records(), record(13, Stage.SKIPPED), record(14, Stage.CANCELLED)]
    for rec in records:
        tally.apply(rec)
    snap = tally.snapshot()
    assert dict(snap.outcomes) == {"ok": 3, "failed": 2, "rejected": 1, "skipped": 1}
    assert sum(n for _, n in snap.outcomes) == snap.files_done == 7
    unfinished = sum(1 for rec in records if not rec.stage.ended)
    assert snap.files_done + unfinished == snap.files_total == len(records)
    tally.apply(record(12, Stage.VALIDATED))  # the rejected file fixed and read again
    assert dict(tally.snapshot().outcomes) == {"ok": 3, "failed": 2, "skipped": 1}


def test_formatting() -> None:
    assert hms(3725) == "1:02:05"
    assert countdown(41.2) == "0:42"
    assert countdown(0) == "0:00"
    assert time_left(None, NOW) == ""
    assert time_left(NOW - 1, NOW) == "expired"
    assert time_left(NOW + 30, NOW) == "<1m"
    assert time_left(NOW + 3 * 3600 + 5 * 60, NOW) == "3h05m"
    assert shorten("a long   line", 6) == "a lon…"


def test_core_never_imports_textual() -> None:
    code = ("import sys; import gembatch.core.engine, gembatch.core.headless, gembatch.core.watch, "
            "gembatch.core.demo; sys.exit(1 if any(m == 'textual' or m.startswith('textual.') "
            "for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
