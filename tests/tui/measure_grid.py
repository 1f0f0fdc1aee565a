"""Measures the monitor at 10,000 batches (a script, not a test): first paint, per-event update cost, bursts.

    .venv/bin/python -m tests.tui.measure_grid [--rows 10000]

Prints one line per figure. Uses the fake engine (fixed records, frozen clock) so the figures are the UI's
own cost, with no emulator or engine work mixed in.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import dataclasses
import time

from gembatch.core.events import BatchChanged
from gembatch.core.model import Stage
from gembatch.tui.app import MonitorApp

from .fake_engine import NOW, FakeEngine, frozen_clock, record, sample_figures

STAGES = [Stage.DOWNLOADED, Stage.RUNNING, Stage.PENDING, Stage.UPLOADED, Stage.VALIDATED, Stage.FAILED]


def many_records(rows: int) -> list:
    return [record(i, STAGES[i % len(STAGES)]) for i in range(1, rows + 1)]


class FrameClock:
    """Wraps the app's `_display` (called each time a frame is written) to time event -> frame on screen."""

    def __init__(self, app: MonitorApp) -> None:
        self.frames: list[float] = []
        original = app._display

        def display(screen, renderable):  # type: ignore[no-untyped-def]
            original(screen, renderable)
            self.frames.append(time.perf_counter())

        app._display = display  # type: ignore[method-assign]

    @property
    def last(self) -> float:
        return self.frames[-1] if self.frames else 0.0

    async def after(self, t0: float, timeout: float = 5.0) -> float:
        """Seconds from `t0` to the first frame written after it."""
        while True:
            index = bisect.bisect_right(self.frames, t0)
            if index < len(self.frames):
                return self.frames[index] - t0
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError("no frame")
            await asyncio.sleep(0.0005)


async def first_paint(rows: int, size: tuple[int, int]) -> float:
    """Seconds from the app's start to the first frame that shows the grid holding every row."""
    engine = FakeEngine(records_list=many_records(rows), logs=())
    app = MonitorApp(engine, clock=frozen_clock)
    started = time.perf_counter()
    async with app.run_test(size=size):
        frames = FrameClock(app)
        while app.grid.row_count < rows:
            await asyncio.sleep(0.0005)
        await frames.after(time.perf_counter())
        elapsed = frames.last - started
        engine.request_stop()
    return elapsed


async def measure(rows: int, size: tuple[int, int]) -> dict[str, float]:
    figures: dict[str, float] = {}
    figures["first paint, 12 rows (app start-up alone), ms"] = await first_paint(12, size) * 1000
    figures[f"first paint, {rows} rows, ms"] = await first_paint(rows, size) * 1000
    records = many_records(rows)
    engine = FakeEngine(records_list=records, logs=())
    app = MonitorApp(engine, clock=frozen_clock)
    async with app.run_test(size=size) as pilot:
        frames = FrameClock(app)
        while app.grid.row_count < rows:
            await asyncio.sleep(0.001)
        await pilot.pause()
        grid = app.grid

        # 1. A visible row's counts change (cells redrawn in place, no re-sort): engine event -> frame written.
        rec = engine.records[grid.model.view[0]]
        samples = []
        for n in range(200):
            changed = dataclasses.replace(rec, succeeded_count=n, history=list(rec.history))
            t0 = time.perf_counter()
            engine.bus.publish(BatchChanged(NOW, changed))
            samples.append(await frames.after(t0))
            await asyncio.sleep(0.02)
        samples.sort()
        figures["event -> frame with the changed cell, median ms"] = samples[len(samples) // 2] * 1000
        figures["event -> frame with the changed cell, p95 ms"] = samples[int(len(samples) * 0.95)] * 1000

        # 2. The handler's own cost (no message loop, no drawing): one record, in place.
        t0 = time.perf_counter()
        for n in range(2000):
            changed = dataclasses.replace(rec, succeeded_count=n)
            app.tally.apply(changed)
            grid.apply([changed])
        figures["tally + grid apply of one in-place change, µs"] = (time.perf_counter() - t0) / 2000 * 1e6

        # 3. A change that moves a row (sorted by stage): one rebuild of the view.
        grid.model.sort_key = "stage"
        grid.model.rebuild()
        t0 = time.perf_counter()
        for n in range(20):
            grid.apply([dataclasses.replace(rec, stage=Stage.RUNNING if n % 2 else Stage.DOWNLOADED)])
        figures[f"grid apply of a change that re-sorts {rows} rows, ms"] = (time.perf_counter() - t0) / 20 * 1000
        grid.model.sort_key = "input"
        grid.model.rebuild()

        # 4. A burst: every batch changes at once (coalesced into one message, one update).
        burst = [dataclasses.replace(r, succeeded_count=7) for r in records]
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        for r in burst:
            engine.bus.publish(BatchChanged(NOW, r))
        figures[f"burst of {rows} changes -> frame, ms"] = await frames.after(t0) * 1000

        # 5. What a key does at full size (called directly, then timed to the next frame).
        for label, act in (("sort (o)", app.action_sort), ("filter keystroke", lambda: grid.set_filter("9")),
                           ("filter cleared", lambda: grid.set_filter(""))):
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            act()
            figures[f"{label} -> frame, {rows} rows, ms"] = await frames.after(t0) * 1000

        # 6. Idle: the cost of the 1 Hz tick itself.
        t0 = time.perf_counter()
        for _ in range(100):
            app._tick()
        figures["1 Hz tick (clocks, countdown, figures), µs"] = (time.perf_counter() - t0) / 100 * 1e6
        engine.request_stop()
    return figures


async def measure_datatable(rows: int, size: tuple[int, int]) -> float:
    """For comparison: the stock DataTable's first paint with the same rows."""
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable

    class Table(App[None]):
        def compose(self) -> ComposeResult:
            yield DataTable()

        def on_mount(self) -> None:
            table = self.query_one(DataTable)
            table.add_columns("Batch", "Stage", "Job", "Reqs", "OK", "Fail", "Expires", "Last error")
            table.add_rows([(r.batch_id, r.stage.value, r.job_name or "", r.request_count, r.succeeded_count,
                             r.failed_count, "", r.last_error or "") for r in many_records(rows)])

    app = Table()
    started = time.perf_counter()
    async with app.run_test(size=size):
        frames = FrameClock(app)  # type: ignore[arg-type]
        await frames.after(time.perf_counter())
        return (frames.last - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=120)
    parser.add_argument("--height", type=int, default=40)
    parser.add_argument("--run", action="store_true",
                        help="run the app in this terminal over 10k fake rows, with the countdown ticking "
                             "(to measure idle CPU and bytes written with ps and tmux pipe-pane)")
    args = parser.parse_args()
    if args.run:
        now = time.time()
        engine = FakeEngine(records_list=many_records(args.rows), clock=time.time,
                            figures=sample_figures(now=now + 3600))
        MonitorApp(engine).run()
        return
    size = (args.width, args.height)
    figures = asyncio.run(measure(args.rows, size))
    figures["stock DataTable first paint, same rows, ms"] = asyncio.run(measure_datatable(args.rows, size))
    for name, value in figures.items():
        print(f"{name:60} {value:10.1f}")


if __name__ == "__main__":
    main()
