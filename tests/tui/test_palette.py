"""The command palette (Ctrl+P) with the product's commands, the remembered theme, the mouse, the sparkline."""

from __future__ import annotations

from pathlib import Path

from gembatch.core.events import BatchChanged
from gembatch.core.model import Stage
from gembatch.tui.app import MonitorApp
from gembatch.tui.commands import palette_commands
from gembatch.tui.screens.detail import DetailScreen
from gembatch.tui.theme_memory import load_theme
from textual.command import CommandList, CommandPalette

from ..conftest import FAKE_KEY
from .conftest import wait_until
from .fake_engine import NOW, FakeEngine, frozen_clock, record

SIZE = (120, 40)


def make(engine: FakeEngine | None = None, **options) -> MonitorApp:
    return MonitorApp(engine or FakeEngine(), clock=frozen_clock, secrets=(FAKE_KEY,), **options)


async def ready(pilot) -> None:
    await wait_until(pilot, lambda: pilot.app.grid.row_count == len(pilot.app.engine.records), 5, "the rows")


async def choose(pilot, words: str) -> None:
    """In the open palette, type `words` and take the first hit."""
    palette = pilot.app.screen
    assert isinstance(palette, CommandPalette)
    await pilot.press(*words)

    def best_is_the_one() -> bool:  # hits arrive in batches: wait until the one meant is on top
        option = palette.query_one(CommandList).highlighted_option
        return option is not None and str(option.hit.text).lower().startswith(words.lower())

    await wait_until(pilot, best_is_the_one, 5, f"the hit for {words!r}")
    await pilot.press("enter")
    await wait_until(pilot, lambda: pilot.app.screen is not palette, 5, "the palette to close")


async def run_from_palette(pilot, words: str) -> None:
    """Open the palette with Ctrl+P, type `words`, take the first hit."""
    await pilot.press("ctrl+p")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, CommandPalette), 5, "the palette")
    await choose(pilot, words)


async def test_ctrl_p_opens_the_palette_and_pause_calls_the_engine() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")  # the help names the palette's key
        assert any(k.description == "Commands" and k.keys == "^p" for k in app.screen.keys)
        await pilot.press("escape")
        await run_from_palette(pilot, "pause")
        await wait_until(pilot, lambda: app.paused, 5, "the pause")
        assert app.engine.calls[-1] == ("pause", "")
        titles = [c.title for c in palette_commands(app)]
        assert "Resume" in titles and "Pause" not in titles
        await run_from_palette(pilot, "resume")
        await wait_until(pilot, lambda: not app.paused, 5, "the resume")
        assert app.engine.calls[-1] == ("resume", "")


async def test_retry_every_failed_batch_retries_each_failed_one_and_no_other() -> None:
    records = [record(1, Stage.FAILED), record(2, Stage.DOWNLOADED), record(3, Stage.CANCELLED),
               record(4, Stage.RUNNING), record(5, Stage.REJECTED)]
    app = make(FakeEngine(records_list=records))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await run_from_palette(pilot, "retry every failed")
        assert sorted(app.engine.calls) == [("retry", "qa_part_001"), ("retry", "qa_part_003")]


async def test_skip_sort_and_stage_filter_from_the_palette() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.grid.select("qa_part_011")  # validated: may be skipped
        await run_from_palette(pilot, "skip the selected")
        assert app.engine.calls[-1] == ("skip", "qa_part_011")
        await run_from_palette(pilot, "sort by stage")
        assert app.grid.model.sort_key == "stage"
        assert "sorted by stage" in str(app.grid.border_title)
        await run_from_palette(pilot, "filter by stage: failed")
        # qa_part_004 is failed; qa_part_012 is rejected and qa_part_004's error says "failed": only the stage counts
        assert app.grid.model.view == ["qa_part_004"]
        assert app.filter_bar.value == "stage:failed" and app.filter_bar.shown
        await pilot.press("escape")
        assert app.grid.row_count == len(app.engine.records)


async def test_results_path_and_job_name_are_copied_to_the_clipboard() -> None:
    done = record(1, Stage.DOWNLOADED)
    done.result_path = "/data/out/results/qa_part_001.results.jsonl"
    app = make(FakeEngine(records_list=[done, record(2, Stage.VALIDATED)]))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.grid.select("qa_part_001")
        await run_from_palette(pilot, "open the selected batch's results")
        assert app.clipboard == done.result_path
        await run_from_palette(pilot, "copy the selected batch's job")
        assert app.clipboard == "batches/job00001"
        app.grid.select("qa_part_002")  # no job yet: the clipboard keeps what it had
        await run_from_palette(pilot, "copy the selected batch's job")
        assert app.clipboard == "batches/job00001"


async def test_a_read_only_palette_offers_no_engine_command() -> None:
    app = make(read_only="--read-only")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        commands = list(palette_commands(app))
        assert commands and not any(c.acts for c in commands)
        titles = {c.title for c in commands}
        assert not titles & {"Pause", "Resume", "Retry every failed batch", "Skip the selected batch"}
        assert "Sort by name" in titles
    live = make()
    async with live.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert {"Pause", "Retry every failed batch", "Skip the selected batch"} <= {
            c.title for c in palette_commands(live) if c.acts}


async def test_the_theme_chosen_is_remembered_for_the_next_run(tmp_path: Path) -> None:
    remembered = tmp_path / "config" / "tui.toml"
    app = make(theme_file=remembered)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert not remembered.exists()  # nothing chosen, nothing written
        await run_from_palette(pilot, "theme")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), 5, "the theme picker")
        await choose(pilot, "nord")
        await wait_until(pilot, lambda: app.theme == "nord", 5, "the nord theme")
    assert load_theme(remembered) == "nord"
    again = make(theme_file=remembered)
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert again.theme == "nord"


async def test_a_broken_theme_file_is_reported_with_its_line_and_the_app_starts(tmp_path: Path) -> None:
    broken = tmp_path / "tui.toml"
    broken.write_text('theme = "nord"\ntheme = \n', encoding="utf-8")
    app = make(theme_file=broken)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        logged = [strip.text for strip in app.log_pane.lines]
        assert any(str(broken) in text and "line 2" in text for text in logged), logged
        assert app.theme == "textual-dark"


async def test_a_click_selects_the_row_and_a_click_on_the_selected_row_opens_it() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.grid.selected_id == "qa_part_001"
        third_row = (10, 1 + 3)  # y 0 is the grid's border line, y 1 its header line, then row 1, 2, 3
        await pilot.click("#grid", offset=third_row)
        assert app.grid.selected_id == "qa_part_003"
        assert not isinstance(app.screen, DetailScreen)
        await pilot.click("#grid", offset=third_row)
        assert isinstance(app.screen, DetailScreen) and app.screen.batch_id == "qa_part_003"
        await pilot.press("escape")
        await pilot.click("#grid", offset=(10, 1 + 5), times=2)  # a double click on another row
        assert isinstance(app.screen, DetailScreen) and app.screen.batch_id == "qa_part_005"


async def test_the_header_sparkline_shows_requests_answered_per_minute() -> None:
    now = [NOW]
    running = record(1, Stage.RUNNING, requests=1000)
    running.succeeded_count = 0
    engine = FakeEngine(records_list=[running], clock=lambda: now[0])
    app = MonitorApp(engine, clock=lambda: now[0], secrets=(FAKE_KEY,))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        for minute, answered in enumerate((120, 300, 50), 1):
            now[0] = NOW + minute * 60
            changed = running.copy()
            changed.succeeded_count = running.succeeded_count = running.succeeded_count + answered
            engine.bus.publish(BatchChanged(now[0], changed))
            await wait_until(pilot, lambda: app.tally.requests_done == running.succeeded_count, 5, "the change")
            app._tick()
        data = list(app.sparkline.data)
        assert len(data) == 30
        assert data[-3:] == [120, 300, 50]
        assert "max 300" in str(app.rate_label.render())
        assert app.rate_box.display and app.footer.show_command_palette
        await pilot.resize_terminal(80, 24)  # every column goes to the summary and the keys
        await wait_until(pilot, lambda: not app.rate_box.display, 5, "the sparkline to go")
        assert not app.footer.show_command_palette
