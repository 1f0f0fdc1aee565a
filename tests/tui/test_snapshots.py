"""SVG snapshots of the main screens: a fake engine with fixed records, a frozen clock, a fixed size.

Update them after a deliberate change with `.venv/bin/pytest tests/tui/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gembatch.core.checkpoint_format import RunState
from gembatch.core.checkpoint_lock import CheckpointLocked, LockHolder
from gembatch.core.checkpoint_store import CheckpointStore
from gembatch.tui.app import MonitorApp
from gembatch.tui.commands import palette_commands
from textual.command import CommandPalette
from textual.fuzzy import Matcher
from textual.pilot import Pilot

from .conftest import wait_until
from .fake_engine import NOW, FakeEngine, frozen_clock, long_records, sample_figures, sample_records

SIZE = (120, 40)


def app_on(engine: FakeEngine, **kwargs) -> MonitorApp:
    return MonitorApp(engine, clock=frozen_clock, **kwargs)


async def settled(pilot: Pilot) -> None:
    """Every fixed record, log line and figure has reached the panes."""
    app = pilot.app
    await wait_until(pilot, lambda: app.grid.row_count == 12 and app.countdown.figures is not None, 5, "the panes")
    await pilot.pause()


def test_main_screen(snap_compare) -> None:
    assert snap_compare(app_on(FakeEngine()), terminal_size=SIZE, run_before=settled)


def test_main_screen_at_80x24(snap_compare) -> None:
    assert snap_compare(app_on(FakeEngine()), terminal_size=(80, 24), run_before=settled)


def test_main_screen_at_200x50_not_cooling(snap_compare) -> None:
    engine = FakeEngine(figures=sample_figures(cooling=False))
    assert snap_compare(app_on(engine), terminal_size=(200, 50), run_before=settled)


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 50)], ids=["80x24", "120x40", "200x50"])
def test_long_names_use_the_width(snap_compare, size: tuple[int, int]) -> None:
    """`refinement_batch_142`, job ids of 36 characters, a long last error, uploads waiting for the token budget."""
    engine = FakeEngine(records_list=long_records(), figures=sample_figures(cooling=size[0] < 200))

    async def settled_long(pilot: Pilot) -> None:
        app = pilot.app
        await wait_until(pilot, lambda: app.grid.row_count == 40 and app.countdown.figures is not None, 5, "panes")
        await pilot.pause()

    assert snap_compare(app_on(engine), terminal_size=size, run_before=settled_long)


def test_detail_screen(snap_compare) -> None:
    async def open_failed_batch(pilot: Pilot) -> None:
        await settled(pilot)
        await pilot.press("down", "down", "down", "enter")  # qa_part_004, the failed one
        await pilot.pause()

    assert snap_compare(app_on(FakeEngine()), terminal_size=SIZE, run_before=open_failed_batch)


def test_help_screen(snap_compare) -> None:
    async def open_help(pilot: Pilot) -> None:
        await settled(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(app_on(FakeEngine()), terminal_size=SIZE, run_before=open_help)


def test_command_palette(snap_compare) -> None:
    async def open_palette(pilot: Pilot) -> None:
        await settled(pilot)
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, CommandPalette), 5, "the palette")
        palette = pilot.app.screen
        await pilot.press(*"batch")  # hits from one provider only: the order does not depend on which answers first
        wanted = sum(Matcher("batch").match(c.title) > 0 for c in palette_commands(pilot.app))
        await wait_until(pilot, lambda: palette.query_one("CommandList").option_count == wanted, 5, "the commands")
        await pilot.pause(0.2)

    assert snap_compare(app_on(FakeEngine()), terminal_size=SIZE, run_before=open_palette)


def test_paused(snap_compare) -> None:
    async def pause(pilot: Pilot) -> None:
        await settled(pilot)
        await pilot.press("p")
        await wait_until(pilot, lambda: pilot.app.paused, 5, "the pause")

    assert snap_compare(app_on(FakeEngine()), terminal_size=SIZE, run_before=pause)


def test_filtered_and_sorted(snap_compare) -> None:
    async def filter_and_sort(pilot: Pilot) -> None:
        await settled(pilot)
        await pilot.press("o", "o", "slash", *"run", "enter")  # sort by stage, keep the running ones
        await pilot.pause()

    assert snap_compare(app_on(FakeEngine()), terminal_size=SIZE, run_before=filter_and_sort)


@pytest.fixture
def watched_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkpoint with the sample records, at a relative path so the screen does not show tmp_path."""
    monkeypatch.chdir(tmp_path)
    path = Path("watched.checkpoint.json")
    records = {rec.batch_id: rec for rec in sample_records()}
    CheckpointStore(path).create(RunState(run_id="r1", created_at=NOW, model="gemini-2.5-flash", records=records))
    return path


def test_read_only(snap_compare, watched_checkpoint: Path) -> None:
    engine = FakeEngine(records_list=[], logs=())
    engine.store.path = watched_checkpoint
    holder = LockHolder(4242, "build-box", NOW - 3600)
    engine.store.refuse = CheckpointLocked(watched_checkpoint, holder)
    engine.store.holder = holder  # still running: the lock names it
    app = app_on(engine)

    async def watched(pilot: Pilot) -> None:
        await wait_until(pilot, lambda: pilot.app.grid.row_count == 12, 5, "the watcher's first load")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=watched)
