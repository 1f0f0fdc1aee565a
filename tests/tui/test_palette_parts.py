"""The pieces under the palette, theme and sparkline, without an app: per-minute counts, stage filter, theme file."""

from __future__ import annotations

from pathlib import Path

import pytest
from gembatch.core.model import Stage
from gembatch.tui.grid_model import GridModel
from gembatch.tui.progress import RunTally
from gembatch.tui.theme_memory import load_theme, save_theme, theme_file

from .fake_engine import NOW, record


def test_answered_per_minute_counts_each_minute_and_zero_for_idle_ones() -> None:
    tally = RunTally()
    resumed = record(1, Stage.RUNNING, requests=1000)
    resumed.succeeded_count = 400  # answered before this run: not this run's progress
    tally.apply(resumed)
    start = (NOW // 60) * 60
    tally.sample(start)
    for second, answered in ((10, 30), (50, 70), (130, 25)):  # minute 0: 100; minute 1: none; minute 2: 25
        resumed.succeeded_count += answered
        tally.apply(resumed)
        tally.sample(start + second)
    assert tally.answered_per_minute(start + 130, 5) == [0, 0, 100, 0, 25]
    assert tally.answered_per_minute(start + 60 * 40, 30) == [0] * 30  # long idle: the old minutes fall out


def test_a_stage_filter_matches_the_stage_only() -> None:
    model = GridModel()
    failed, rejected = record(1, Stage.FAILED), record(2, Stage.REJECTED)
    rejected.last_error = "upload failed"  # says "failed" but is not in the failed stage
    model.upsert([failed, rejected, record(3, Stage.RUNNING)])
    model.set_filter("stage:failed")
    assert model.view == [failed.batch_id]
    model.set_filter("failed")  # the plain filter still finds the word anywhere
    assert model.view == [failed.batch_id, rejected.batch_id]
    model.sort_by("stage")
    assert model.sort_key == "stage"
    with pytest.raises(ValueError, match="no sort 'colour'"):
        model.sort_by("colour")


def test_the_theme_file_sits_beside_gembatch_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMBATCH_CONFIG", str(tmp_path / "conf" / "config.toml"))
    assert theme_file() == tmp_path / "conf" / "tui.toml"
    path = theme_file()
    assert load_theme(path) is None
    path.parent.mkdir()
    path.write_text('# mine\nother = 1\n', encoding="utf-8")
    save_theme(path, "gruvbox")
    assert load_theme(path) == "gruvbox"
    assert "other = 1" in path.read_text(encoding="utf-8")  # other keys are kept
    path.write_text("theme = 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"tui\.toml: `theme` must be a theme's name"):
        load_theme(path)
