"""Redraws stay small (over SSH every byte counts): only the rows and lines that changed are sent."""

from __future__ import annotations

from typing import Any

from gembatch.core.events import BatchChanged
from gembatch.core.model import Stage
from gembatch.tui.app import MonitorApp
from textual.geometry import Region

from .conftest import wait_until
from .fake_engine import NOW, FakeEngine, frozen_clock

SIZE = (120, 40)


def record_refreshes(widget: Any) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Wrap `widget.refresh` to keep the arguments of every call."""
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    original = widget.refresh

    def refresh(*regions: Any, **options: Any) -> Any:
        calls.append((regions, options))
        return original(*regions, **options)

    widget.refresh = refresh
    return calls


async def test_a_new_minute_redraws_only_the_rows_counting_down_to_their_upload_expiry() -> None:
    engine = FakeEngine()
    app = MonitorApp(engine, clock=frozen_clock)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.grid.row_count == len(engine.records), 5, "the rows")
        counting_down = [row for row, batch_id in enumerate(app.grid.model.view)
                         if engine.records[batch_id].stage in (Stage.UPLOADING, Stage.UPLOADED)]
        assert len(counting_down) == 3  # two uploaded, one uploading, of twelve
        grid_calls = record_refreshes(app.grid)
        upload_calls = record_refreshes(app.uploads)

        app.grid.tick(NOW + 60)
        app.uploads.tick(NOW + 60)
        app.grid.tick(NOW + 61)  # same minute: nothing more

        width = app.grid.scrollable_content_region.width
        assert grid_calls == [((Region(0, row + 1, width, 1),), {}) for row in counting_down]  # line 0: the header
        assert upload_calls and all(not options.get("layout") for _, options in upload_calls)


async def test_a_batch_that_changes_in_place_redraws_its_row_alone() -> None:
    engine = FakeEngine()
    app = MonitorApp(engine, clock=frozen_clock)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.grid.row_count == len(engine.records), 5, "the rows")
        await pilot.pause()
        grid_calls = record_refreshes(app.grid)
        running = engine.records["qa_part_005"].copy()
        running.succeeded_count += 7

        engine.bus.publish(BatchChanged(NOW, running))
        await wait_until(pilot, lambda: app.grid.model.records["qa_part_005"].succeeded_count
                         == running.succeeded_count, 5, "the change")

        # not the whole grid (a border title set again, even to the same text, would repaint all of it)
        assert grid_calls == [((Region(0, 5, app.grid.scrollable_content_region.width, 1),), {})]
