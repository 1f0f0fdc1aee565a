"""The app driven with Pilot over the real engine, SDK and emulator: what the panes show, what the keys do."""

from __future__ import annotations

import time
from pathlib import Path

from gembatch.core.checkpoint_store import CheckpointStore
from gembatch.core.headless import build_engine
from gembatch.core.model import Stage
from gembatch.tui.app import MonitorApp
from gembatch.tui.screens.confirm import ConfirmScreen

from ..conftest import FAKE_KEY, write_batch_files
from ..engine.helpers import assert_one_job_per_attempt, engine_settings, run_engine
from .conftest import wait_for_exit, wait_until
from .screen_text import screen_text

SIZE = (120, 40)


def make_app(settings) -> MonitorApp:
    return MonitorApp(build_engine(settings, FAKE_KEY), settings, secrets=(FAKE_KEY,))


def creates(emu, *, after: float = 0.0) -> list:
    return [e for e in emu.journal() if e.kind == "batches.create" and e.at > after]


def stage_of(app: MonitorApp, batch_id: str) -> Stage | None:
    rec = app.grid.model.records.get(batch_id)
    return None if rec is None else rec.stage


async def test_panes_follow_a_run_to_its_end(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=6, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url)
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.engine_code is not None, 30, "the run to end")
        await pilot.pause(0.1)
        names = [f"part_{i:03d}" for i in range(1, 7)]
        assert app.grid.model.view == names
        assert all(stage_of(app, name) is Stage.DOWNLOADED for name in names)
        text = screen_text(app)
        assert "FINISHED (exit 0)" in text
        assert "6/6" in text and "30/30" in text  # files and requests done of total
        assert text.count("✓ downloaded") == 6
        assert "none waiting" in text  # nothing uploaded-but-not-created at the end
        assert "results saved" in text  # the log stream
        assert FAKE_KEY not in text
        await pilot.press("q")
        await wait_for_exit(pilot)
    assert app.return_code == 0


async def test_p_pauses_creates_and_resumes(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=5, requests=5)
    emulator.settings.running_seconds = 0.5
    settings = engine_settings(tmp_path, emulator.base_url, max_concurrent_jobs=1)
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: len(app.uploads.waiting) >= 2, 20, "uploads waiting for the cap")
        await pilot.press("p")
        await wait_until(pilot, lambda: app.paused, 5, "the pause")
        paused_at = time.time()
        await wait_until(pilot, lambda: all(r.wait_reason == "paused" for r in app.uploads.waiting.values()),
                         5, "the uploads to wait for the pause")
        text = screen_text(app)
        assert "PAUSED" in text
        assert "p Resume" in text and "p Pause" not in text  # the footer label flips
        uploads_side = [line.split("│", 1)[1] for line in text.splitlines() if "│" in line]
        assert any("part_0" in line and "paused" in line for line in uploads_side)
        before = len(creates(emulator))
        await pilot.pause(1.5)
        # A create already on its way when p was pressed may land; none may start while paused.
        assert creates(emulator, after=paused_at + 0.3) == [], "a create was sent while paused"
        assert len(creates(emulator)) <= before + 1
        await pilot.press("p")
        await wait_until(pilot, lambda: not app.paused, 5, "the resume")
        assert "p Pause" in screen_text(app)
        await wait_until(pilot, lambda: app.engine_code is not None, 30, "the run to end")
        assert len(creates(emulator, after=paused_at + 1.5)) >= 1
        await pilot.press("q")
        await wait_for_exit(pilot)
    assert app.return_code == 0


async def test_countdown_appears_after_a_429_and_ends(tmp_path: Path, emulator) -> None:
    paths = write_batch_files(tmp_path / "in", files=6, requests=10, pad=20)
    one_job = sum(-(-len(line) // 4) for line in paths[0].read_bytes().splitlines() if line.strip())
    emulator.settings.enqueued_token_limit = int(one_job * 2.5)
    emulator.settings.running_seconds = 3.0  # a job ending ends a token cool-down early: keep it on screen a while
    emulator.settings.quota_error_details = "full"  # a 429 that names its quota, so the pane can name it too
    settings = engine_settings(tmp_path, emulator.base_url)
    settings.admission.cool_down_seconds = 2.0
    settings.admission.cool_down_max_seconds = 4.0
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        # wait for the drawn screen, not the pane's attribute: the frame comes a moment later
        await wait_until(pilot, lambda: "COOLING DOWN" in screen_text(app), 30, "a cool-down on screen")
        text = screen_text(app)
        assert "COOLING DOWN" in text
        assert "enqueued-tokens" in text
        assert any(e.status == 429 for e in creates(emulator))
        await wait_until(pilot, lambda: app.countdown.until is None, 30, "the cool-down to end")
        assert "✓ may go" in screen_text(app)
        await wait_until(pilot, lambda: app.engine_code is not None, 40, "the run to end")
        figures = app.countdown.figures
        assert figures is not None and figures.rate_limited_total >= 1
        assert "429s so far" in screen_text(app)
        await pilot.press("q")
        await wait_for_exit(pilot)
    assert app.return_code == 0
    assert_one_job_per_attempt(emulator)


async def test_cancel_and_retry_act_on_the_selected_batch(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=3, requests=5)
    emulator.settings.running_seconds = 30.0
    settings = engine_settings(tmp_path, emulator.base_url)
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: stage_of(app, "part_002") in (Stage.PENDING, Stage.RUNNING), 20,
                         "part_002's job")
        await pilot.press("down")
        assert app.grid.selected_id == "part_002"
        job = app.grid.model.records["part_002"].job_name
        assert job
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_until(pilot, lambda: stage_of(app, "part_002") is Stage.CANCELLED, 20, "the cancel")
        cancels = [e for e in emulator.journal() if e.kind == "batches.cancel"]
        assert [e.path.rsplit("/", 1)[-1] for e in cancels] == [f"{job.split('/')[-1]}:cancel"]
        assert stage_of(app, "part_001") in (Stage.PENDING, Stage.RUNNING)  # the others go on
        assert stage_of(app, "part_003") in (Stage.PENDING, Stage.RUNNING)

        emulator.settings.running_seconds = 0.2
        await pilot.press("r")
        await wait_until(pilot, lambda: app.grid.model.records["part_002"].attempt == 2, 10, "the retry")
        await wait_until(pilot, lambda: len([e for e in creates(emulator) if "part_002" in (e.display_name or "")])
                         == 2, 20, "part_002's second create")
        names = [e.display_name for e in creates(emulator) if "part_002" in (e.display_name or "")]
        assert names[0] != names[1]  # a new attempt, a new display name
        await wait_until(pilot, lambda: stage_of(app, "part_002") is Stage.DOWNLOADED, 20, "the retried job")
        await pilot.press("q")
        await wait_for_exit(pilot, 30)
    assert app.return_code == 75  # left with q while part_001 and part_003 still run: "resume later"
    assert_one_job_per_attempt(emulator)


async def test_q_leaves_a_checkpoint_that_a_new_run_resumes(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=10, requests=5)  # ~7 s one at a time: q comes well before the end
    emulator.settings.running_seconds = 0.6
    settings = engine_settings(tmp_path, emulator.base_url, max_concurrent_jobs=1)
    app = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: stage_of(app, "part_001") is Stage.DOWNLOADED, 20, "a first result")
        await pilot.press("q")
        assert "STOPP" in screen_text(app)  # STOPPING, or STOPPED once the checkpoint is saved
        await wait_for_exit(pilot)
    assert app.return_code == 75  # work left: never 0
    store = CheckpointStore(settings.checkpoint_path())
    saved = store.load()
    assert saved is not None and saved.records["part_001"].stage is Stage.DOWNLOADED
    unfinished = [r.batch_id for r in saved.records.values() if r.stage is not Stage.DOWNLOADED]
    assert unfinished, "the run ended before q; nothing left to resume"
    store.acquire_lock()  # the first app let go of the lock
    store.release_lock()

    again = make_app(settings)
    async with again.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: again.engine_code is not None, 30, "the resumed run to end")
        assert again.engine_code == 0
        await pilot.press("q")
        await wait_for_exit(pilot)
    made = assert_one_job_per_attempt(emulator)
    first = [name for name in made if "part_001" in name]
    assert len(first) == 1 and made[first[0]] == 1  # the finished file was not created again
    assert len(emulator.jobs()) == 10


async def test_a_second_instance_opens_read_only_and_watches(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=3, requests=5)
    settings = engine_settings(tmp_path, emulator.base_url)
    code, _, _ = await run_engine(settings)
    assert code == 0
    holder = CheckpointStore(settings.checkpoint_path())
    holder.acquire_lock()  # another instance holds the run
    calls_before = len(emulator.journal())
    try:
        app = MonitorApp(build_engine(settings, FAKE_KEY), settings, secrets=(FAKE_KEY,), watch_interval=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.grid.row_count == 3, 10, "the watcher's first load")
            text = screen_text(app)
            assert "READ-ONLY" in text and f"pid {__import__('os').getpid()}" in text
            for action in ("pause", "resume", "retry", "cancel_batch", "skip"):
                assert app.check_action(action, ()) is False  # not offered at all
            await pilot.press("p", "r", "s")
            assert not app.engine.paused
            assert all(stage_of(app, f"part_{i:03d}") is Stage.DOWNLOADED for i in (1, 2, 3))
            holder.release_lock()  # the other instance stops
            await wait_until(pilot, lambda: "has stopped" in screen_text(app).splitlines()[0], 10, "its end")
            assert f"pid {__import__('os').getpid()}" not in screen_text(app).splitlines()[0]
            await pilot.press("q")
            await wait_for_exit(pilot)
        assert app.return_code == 0
    finally:
        holder.release_lock()
    assert len(emulator.journal()) == calls_before  # a watcher never talks to the API
