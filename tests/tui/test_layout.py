"""The panes use the screen: columns follow the width (on resize too), a compact layout at 80x24."""

from __future__ import annotations

import re

import pytest
from gembatch.tui.app import MonitorApp
from gembatch.tui.formatting import shorten_middle
from gembatch.tui.grid_model import GUTTER, Naturals, layout_columns
from gembatch.tui.panes.uploads_pane import upload_widths

from .conftest import wait_until
from .fake_engine import LONG_ERROR, FakeEngine, frozen_clock, job_id, long_records, sample_figures
from .screen_text import screen_text

GRID_ROW = re.compile(r"^[▸ ] (refinement_batch_\d+|qa_part_\d+) ")


def widths(width: int, naturals: Naturals) -> dict[str, int]:
    return {column.key: w for column, w in layout_columns(width, naturals)}


def test_wide_grid_shows_whole_names_and_job_ids_and_the_error_takes_the_rest() -> None:
    naturals = Naturals(name=20, job=36, error=len(LONG_ERROR))
    for width in (135, 180, 250):
        layout = layout_columns(width, naturals)
        shown = {column.key: w for column, w in layout}
        assert shown["name"] == 20 and shown["job"] == 36
        assert GUTTER + sum(shown.values()) + len(layout) - 1 == width  # out to the right edge, no more
    assert widths(250, naturals)["error"] > widths(135, naturals)["error"]


def test_narrow_grid_keeps_names_whole_drops_expiry_then_cuts_job_ids() -> None:
    naturals = Naturals(name=20, job=36, error=80)
    at_80 = widths(79, naturals)
    assert "expiry" not in at_80  # the uploads pane shows it
    assert at_80["name"] == 20 and at_80["job"] >= 8 and at_80["error"] >= 10
    assert sum(at_80.values()) + GUTTER + len(at_80) - 1 == 79
    short_names = widths(79, Naturals(name=11, job=36, error=80))
    assert "expiry" in short_names and short_names["name"] == 11
    at_120 = widths(119, naturals)
    assert at_120["name"] == 20 and at_120["error"] >= 24  # a readable error before whole job ids


def test_no_jobs_and_no_errors_give_their_room_to_the_others() -> None:
    shown = widths(119, Naturals(name=20, job=0, error=0))
    assert shown["job"] == len("Job")
    assert shown["error"] > 40


def test_names_are_cut_in_the_middle_keeping_their_end() -> None:
    assert shorten_middle("refinement_batch_142", 20) == "refinement_batch_142"
    assert shorten_middle("refinement_batch_142", 11) == "refin…h_142"
    assert shorten_middle("refinement_batch_142", 1) == "…"
    assert shorten_middle("refinement_batch_142", 0) == ""


def test_uploads_pane_widths_keep_names_and_reasons_whole_before_the_upload_id() -> None:
    reason = len("token budget 212k/500k")
    assert upload_widths(100, 20, 14, 6, reason) == (20, 14, 6, 100 - 20 - 14 - 6 - 3)
    assert upload_widths(60, 20, 14, 6, reason) == (20, 0, 6, 60 - 20 - 6 - 2)  # the upload id goes first
    name, upload, _, wait = upload_widths(45, 20, 14, 6, reason)
    assert (upload, wait) == (0, reason) and name == 45 - 6 - 2 - reason  # the name gives way, the reason stays
    name, _, _, wait = upload_widths(30, 20, 14, 6, reason)
    assert name == 10 and wait == 30 - 10 - 6 - 2
    demo_reason = len("token budget 212k/218k + 6.6k")  # cannot be whole in 45 cells, even with the name cut
    assert upload_widths(45, 11, 12, 6, demo_reason) == (11, 0, 6, 45 - 11 - 6 - 2)  # so the name stays whole


def app_with_long_names(cooling: bool = True) -> MonitorApp:
    engine = FakeEngine(records_list=long_records(), figures=sample_figures(cooling=cooling))
    return MonitorApp(engine, clock=frozen_clock)


async def settled(pilot) -> None:
    await wait_until(pilot, lambda: pilot.app.grid.row_count == 40 and pilot.app.countdown.figures is not None,
                     5, "the panes")


async def test_at_200x50_names_job_ids_and_reasons_are_whole() -> None:
    app = app_with_long_names(cooling=False)
    async with app.run_test(size=(200, 50)) as pilot:
        await settled(pilot)
        text = screen_text(app)
        assert job_id(137).removeprefix("batches/") in text  # whole job ids
        uploads = [line.split("─")[-1] for line in text.splitlines() if "refinement_batch_140 " in line]
        assert any("refinement_batch_140" in line and "token budget 212k/500k" in line for line in uploads)
        assert "refinement_b…" not in text and "212k/…" not in text


async def test_columns_follow_a_resize() -> None:
    app = app_with_long_names()
    async with app.run_test(size=(100, 40)) as pilot:
        await settled(pilot)
        whole_job = job_id(137).removeprefix("batches/")
        assert whole_job not in screen_text(app)
        narrow = dict((c.key, w) for c, w in app.grid.columns)
        await pilot.resize_terminal(220, 40)
        await wait_until(pilot, lambda: whole_job in screen_text(app), 5, "whole job ids after the resize")
        wide = dict((c.key, w) for c, w in app.grid.columns)
        assert wide["job"] == 36 and wide["error"] > narrow["error"]
        await pilot.resize_terminal(100, 40)
        await wait_until(pilot, lambda: whole_job not in screen_text(app), 5, "cut job ids again")


@pytest.mark.parametrize("filtering", [False, True])
async def test_80x24_keeps_ten_grid_rows_and_every_pane(filtering: bool) -> None:
    app = app_with_long_names()
    async with app.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        if filtering:
            await pilot.press("slash", *"batch", "enter")  # the filter bar stays, one line over the grid
        text = screen_text(app)
        rows = [line for line in text.splitlines() if GRID_ROW.match(line)]
        assert len(rows) >= 10, text
        assert all("refinement_batch_" in row[:25] for row in rows)  # whole names in the grid
        for title in ("Rate limit", "Uploaded, not created (8)", "Log"):
            assert title in text  # smaller, not gone
        assert "COOLING DOWN 0:42" in text and "token budget 212k/500k" in text  # the reason stays whole
        assert "q Quit" in text
        assert ("(Esc shows all)" in text) is filtering
