"""Keys, screens and exit codes over the fake engine (fast: no emulator, no files)."""

from __future__ import annotations

import signal

import pytest
from gembatch.core.events import BatchChanged, Level, LogLine
from gembatch.core.model import Stage
from gembatch.tui import app as app_module
from gembatch.tui.app import MonitorApp
from gembatch.tui.screens.confirm import ConfirmScreen
from gembatch.tui.screens.detail import DetailScreen
from gembatch.tui.screens.help import HelpScreen

from ..conftest import FAKE_KEY
from .conftest import wait_for_exit, wait_until
from .fake_engine import NOW, FakeEngine, frozen_clock, record
from .screen_text import screen_text

SIZE = (120, 40)


def make(engine: FakeEngine | None = None) -> MonitorApp:
    return MonitorApp(engine or FakeEngine(), clock=frozen_clock, secrets=(FAKE_KEY,))


async def ready(pilot) -> None:
    await wait_until(pilot, lambda: pilot.app.grid.row_count == len(pilot.app.engine.records), 5, "the rows")


async def test_pause_label_flips_and_help_is_built_from_the_bindings() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        described = {key.description: key for key in app.screen.keys}
        assert {"Pause", "Retry", "Cancel", "Skip", "Filter", "Sort", "Detail", "Quit"} <= set(described)
        assert "Resume" not in described
        assert "q" in described["Quit"].keys
        await pilot.press("escape")
        await pilot.press("p")
        await wait_until(pilot, lambda: app.paused, 5, "the pause")
        assert app.engine.calls[-1] == ("pause", "")
        assert "p Resume" in screen_text(app)
        await pilot.press("question_mark")
        described = {key.description for key in app.screen.keys}
        assert "Resume" in described and "Pause" not in described
        await pilot.press("escape", "p")
        await wait_until(pilot, lambda: not app.paused, 5, "the resume")
        assert app.engine.calls[-1] == ("resume", "")


async def test_retry_skip_and_cancel_act_on_the_selected_batch() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("down", "down", "down")  # qa_part_004, failed
        assert app.grid.selected_id == "qa_part_004"
        await pilot.press("r")
        assert app.engine.calls[-1] == ("retry", "qa_part_004")
        await pilot.press("end")
        assert app.grid.selected_id == "qa_part_012"
        await pilot.press("up")  # qa_part_011, validated: may be skipped
        await pilot.press("s")
        assert app.engine.calls[-1] == ("skip", "qa_part_011")
        await pilot.press("home", "down", "down", "down", "down")  # qa_part_005, running
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen)
        assert "batches/job00005" in app.screen.question
        await pilot.press("n")
        assert ("cancel", "qa_part_005") not in app.engine.calls
        await pilot.press("c", "y")
        await wait_until(pilot, lambda: ("cancel", "qa_part_005") in app.engine.calls, 5, "the cancel")
        await pilot.press("home", "c")  # qa_part_001 has ended: nothing to confirm
        assert not isinstance(app.screen, ConfirmScreen)


async def test_enter_opens_the_detail_of_the_selected_batch_and_it_stays_live() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("down", "down", "down", "enter")
        assert isinstance(app.screen, DetailScreen) and app.screen.batch_id == "qa_part_004"
        text = screen_text(app)
        assert "internal error in the batch pipeline" in text and "History (4 entries" in text
        await pilot.press("r")  # keys act on the batch shown
        assert app.engine.calls[-1] == ("retry", "qa_part_004")
        newer = record(4, Stage.UPLOADED)
        app.engine.bus.publish(BatchChanged(NOW, newer))
        await pilot.pause()
        assert app.screen.record.stage is Stage.UPLOADED
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen)


async def test_filter_and_sort_keys() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("slash", *"upload")
        assert app.grid.model.view == ["qa_part_008", "qa_part_009", "qa_part_010"]
        await pilot.press("enter")
        assert app.focused is app.grid
        assert "3 of 12 matching 'upload'" in screen_text(app)
        await pilot.press("slash", "escape")
        assert app.grid.row_count == 12
        await pilot.press("o")
        assert app.grid.model.sort_key == "name"
        await pilot.press("O")
        assert app.grid.model.view[0] == "qa_part_012"


async def test_the_api_key_never_reaches_the_screen() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.engine.bus.publish(LogLine(NOW, Level.ERROR, f"call failed with key={FAKE_KEY}"))
        await pilot.pause()
        text = screen_text(app)
        assert FAKE_KEY not in text
        assert "key=[redacted]" in text


@pytest.mark.parametrize(("stages", "key", "run_code", "expected"), [
    ([Stage.DOWNLOADED, Stage.RUNNING], "q", 3, 75),  # work left: "stopped, resume later", never 0
    ([Stage.DOWNLOADED, Stage.RUNNING, Stage.FAILED], "q", 3, 75),
    ([Stage.DOWNLOADED, Stage.UPLOADED], "ctrl+c", 3, 130),  # Ctrl-C is SIGINT's code, as headless
    ([Stage.DOWNLOADED, Stage.DOWNLOADED], "q", 0, 0),  # every batch ended: the run's own code
    ([Stage.DOWNLOADED, Stage.FAILED], "ctrl+c", 3, 3),
])
async def test_leaving_mid_run_is_never_0_while_work_is_left(stages, key: str, run_code: int, expected: int) -> None:
    engine = FakeEngine(records_list=[record(i, s) for i, s in enumerate(stages, 1)], exit_code=run_code)
    app = make(engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press(key)
        await wait_for_exit(pilot)
    assert engine.stopping
    assert app.return_code == expected


async def test_sighup_stops_the_engine_and_exits_129() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app._on_stop_signal(signal.SIGHUP)
        await wait_for_exit(pilot)
    assert app.engine.stopping
    assert app.engine.store.released == 1  # the lock went with the engine
    assert app.return_code == 129


async def test_an_engine_failure_is_shown_and_exits_1() -> None:
    engine = FakeEngine()

    async def broken() -> int:
        raise RuntimeError("disk on fire")

    engine.run = broken
    app = make(engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.engine_error is not None, 5, "the failure")
        await pilot.pause()
        text = screen_text(app)
        assert "ENGINE STOPPED" in text and "disk on fire" in text
        assert app.check_action("pause", ()) is None
        await pilot.press("q")
        await wait_for_exit(pilot)
    assert app.return_code == 1


async def test_a_checkpoint_that_cannot_be_locked_is_reported_and_exits_2() -> None:
    from gembatch.core.checkpoint_format import CheckpointError

    engine = FakeEngine()
    engine.store.refuse = CheckpointError("cannot create the lock file /nowhere/x.lock: Permission denied")
    app = make(engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "Permission denied" in screen_text(app), 5, "the error")
        assert "ENGINE STOPPED" in screen_text(app)
        await pilot.press("q")
        await wait_for_exit(pilot)
    assert app.return_code == 2


def test_run_app_honours_no_mouse(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from gembatch.core.config import Settings

    seen = {}

    def fake_run(self, **kwargs):
        seen.update(kwargs)
        return 0

    monkeypatch.setattr(MonitorApp, "run", fake_run)
    settings = Settings(input_dir=tmp_path, output_dir=tmp_path, no_mouse=True)
    assert app_module.run_app(settings, FAKE_KEY) == 0
    assert seen["mouse"] is False


def type_at_once(app: MonitorApp, *keys: str) -> None:
    """Keys as a terminal delivers a burst: all queued before the app reads the first (Pilot waits between)."""
    from textual import events

    for key in keys:
        character = {"slash": "/", "escape": None}.get(key, key)
        event = events.Key(key, character)
        event.set_sender(app)
        app._driver.send_message(event)


async def test_keys_typed_right_after_slash_reach_the_filter() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        type_at_once(app, "slash", "u", "p", "l", "o", "a", "d")  # `p` would pause, `o` sort, on the grid
        await wait_until(pilot, lambda: app.filter_bar.value == "upload", 5, "the filter text")
        assert app.grid.model.view == ["qa_part_008", "qa_part_009", "qa_part_010"]
        assert app.engine.calls == [] and not app.paused and app.grid.model.sort_key == "input"


async def test_escape_clears_the_filter_and_returns_to_the_grid() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("slash", *"fail", "enter")  # keep the filter, back on the grid
        assert app.grid.row_count == 1 and app.focused is app.grid
        assert "(Esc shows all)" in screen_text(app)
        await pilot.press("escape")  # from the grid
        assert app.grid.row_count == 12 and app.filter_bar.value == "" and not app.filter_bar.shown
        assert app.focused is app.grid
        type_at_once(app, "slash", "r", "u", "n", "escape", "j")  # Esc while typing, then a grid key
        await wait_until(pilot, lambda: app.filter_bar.value == "" and app.grid.row_count == 12, 5, "Esc")
        assert app.focused is app.grid and not app.filter_bar.shown
        assert app.engine.calls == []  # `r` and `n` went to the bar, not to retry
        await pilot.press("question_mark")
        await pilot.press("escape")  # the help's own Esc: the filter's binding stays out of its way
        assert not isinstance(app.screen, HelpScreen)


def read_only_app(holder) -> tuple[MonitorApp, FakeEngine]:
    from gembatch.core.checkpoint_lock import CheckpointLocked

    engine = FakeEngine()
    engine.store.refuse = CheckpointLocked(engine.store.path, holder)
    engine.store.holder = holder
    return MonitorApp(engine, clock=frozen_clock, watch_interval=0.05), engine


async def test_read_only_offers_no_commands_and_says_when_the_holder_stops(tmp_path) -> None:
    from gembatch.core.checkpoint_format import RunState
    from gembatch.core.checkpoint_lock import LockHolder
    from gembatch.core.checkpoint_store import CheckpointStore

    holder = LockHolder(4242, "build-box", NOW - 3600)
    app, engine = read_only_app(holder)
    engine.store.path = tmp_path / "watched.checkpoint.json"
    records = {rec.batch_id: rec for rec in engine.records_list}
    CheckpointStore(engine.store.path).create(RunState(run_id="r1", created_at=NOW, model="m", records=records))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.grid.row_count == 12, 5, "the watcher's first load")
        text = screen_text(app)
        assert "READ-ONLY" in text and "held by pid 4242 on build-box" in text
        footer = text.splitlines()[-1]
        for word in ("Pause", "Resume", "Retry", "Cancel", "Skip"):
            assert word not in footer
        assert "Filter" in footer and "Quit" in footer
        await pilot.press("question_mark")
        described = {key.description for key in app.screen.keys}
        assert not described & {"Pause", "Resume", "Retry", "Cancel", "Skip"} and "Quit" in described
        await pilot.press("escape", "down", "down", "down")  # qa_part_004, failed: retry would act on it
        await pilot.press("p", "r", "c", "s")
        assert engine.calls == [] and not isinstance(app.screen, ConfirmScreen) and not app.paused
        engine.store.holder = None  # the engine watched has stopped (its lock is free)
        await wait_until(pilot, lambda: "has stopped" in screen_text(app), 5, "the holder's end")
        text = screen_text(app)
        assert "pid 4242" not in text.splitlines()[0]
        assert "the engine that held" in text  # in the log too


async def test_the_summary_counts_rejected_files_in_a_total_made_of_its_parts() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        progress = screen_text(app).splitlines()[1]
        assert "5/12 ended (3 ok, 1 failed, 1 rejected)" in progress  # 3 + 1 + 1 = 5 ended of 12


async def test_read_only_by_flag_with_no_engine_running_says_so() -> None:
    engine = FakeEngine(records_list=[], logs=())
    app = MonitorApp(engine, clock=frozen_clock, read_only="--read-only", watch_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "no engine holds it" in screen_text(app), 5, "the lock probed")
        assert "has stopped" not in screen_text(app)  # nothing was running: nothing stopped
        engine.store.holder = "pid 77 on build-box, since 2025-06-15 14:06:40"
        await wait_until(pilot, lambda: "held by pid 77" in screen_text(app), 5, "a new holder")
