"""The TUI at 10,000 rows: first paint, engine event -> changed cell, and the idle cost in a real terminal.

    python benchmarks/tui_rows.py [--quick] [--rows 10000] [--idle-seconds 60] [--no-doc]

Two parts. In-process (the app under `App.run_test`, a fake engine with fixed records and a frozen clock, so the
figures are the UI's own cost): first paint, event -> frame with the changed cell, the handler's cost, a re-sort,
a burst, a key, the 1 Hz tick. In a pseudo-terminal (a child process running the app as a user would, a fake
engine with 10,000 rows and a cool-down an hour long, so the header clock and the countdown tick every second):
time to the first screen, then the child's CPU time and the bytes it writes to the terminal over a minute; and the
same for `gembatch-tui --demo` while it is busy.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import dataclasses
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from _common import ROOT, md_table, section_body, update_doc, verdict
from gembatch.core.events import BatchChanged
from gembatch.core.model import Stage
from gembatch.tui.app import MonitorApp

from tests.tui.fake_engine import NOW, FakeEngine, frozen_clock, record, sample_figures

STAGES = [Stage.DOWNLOADED, Stage.RUNNING, Stage.PENDING, Stage.UPLOADED, Stage.VALIDATED, Stage.FAILED]
IDLE_CPU_TARGET = 0.02  # of one core
EVENT_TARGET_MS = 100.0


def many_records(rows: int, now: float = NOW) -> list:
    """`rows` plausible records, the stages mixed (uploads expire 47 h after `now`)."""
    return [record(i, STAGES[i % len(STAGES)], now=now) for i in range(1, rows + 1)]


# ---- in-process: frames timed at the app's own display call --------------------------------------


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


async def measure_in_process(rows: int, size: tuple[int, int], samples: int) -> dict[str, float]:
    """The in-process figures, in ms or µs as their names say."""
    figures: dict[str, float] = {}
    figures["start-up alone (12 rows) ms"] = await first_paint(12, size) * 1000
    figures["first paint ms"] = await first_paint(rows, size) * 1000
    records = many_records(rows)
    engine = FakeEngine(records_list=records, logs=())
    app = MonitorApp(engine, clock=frozen_clock)
    async with app.run_test(size=size) as pilot:
        frames = FrameClock(app)
        while app.grid.row_count < rows:
            await asyncio.sleep(0.001)
        await pilot.pause()
        grid = app.grid

        # A visible row's counts change (cells redrawn in place, no re-sort): engine event -> frame written.
        rec = engine.records[grid.model.view[0]]
        waits = []
        for n in range(samples):
            changed = dataclasses.replace(rec, succeeded_count=n, history=list(rec.history))
            t0 = time.perf_counter()
            engine.bus.publish(BatchChanged(NOW, changed))
            waits.append(await frames.after(t0))
            await asyncio.sleep(0.02)
        waits.sort()
        figures["event -> frame median ms"] = waits[len(waits) // 2] * 1000
        figures["event -> frame p95 ms"] = waits[int(len(waits) * 0.95)] * 1000
        figures["event -> frame max ms"] = waits[-1] * 1000

        # The handler's own cost (no message loop, no drawing): one record, in place.
        t0 = time.perf_counter()
        for n in range(2000):
            changed = dataclasses.replace(rec, succeeded_count=n)
            app.tally.apply(changed)
            grid.apply([changed])
        figures["one in-place change µs"] = (time.perf_counter() - t0) / 2000 * 1e6

        # A change that moves a row (sorted by stage): one rebuild of the view.
        grid.model.sort_key = "stage"
        grid.model.rebuild()
        t0 = time.perf_counter()
        for n in range(20):
            grid.apply([dataclasses.replace(rec, stage=Stage.RUNNING if n % 2 else Stage.DOWNLOADED)])
        figures["re-sorting change ms"] = (time.perf_counter() - t0) / 20 * 1000
        grid.model.sort_key = "input"
        grid.model.rebuild()

        # A burst: every batch changes at once (coalesced into one message, one update).
        burst = [dataclasses.replace(r, succeeded_count=7) for r in records]
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        for r in burst:
            engine.bus.publish(BatchChanged(NOW, r))
        figures["burst -> frame ms"] = await frames.after(t0) * 1000

        # What a key does at full size (called directly, then timed to the next frame).
        for label, act in (("sort key ms", app.action_sort), ("filter keystroke ms", lambda: grid.set_filter("9")),
                           ("filter cleared ms", lambda: grid.set_filter(""))):
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            act()
            figures[label] = await frames.after(t0) * 1000

        # The cost of the 1 Hz tick itself.
        t0 = time.perf_counter()
        for _ in range(100):
            app._tick()
        figures["1 Hz tick µs"] = (time.perf_counter() - t0) / 100 * 1e6
        engine.request_stop()
    return figures


async def datatable_first_paint(rows: int, size: tuple[int, int]) -> float:
    """For comparison: the stock DataTable's first paint with the same rows, in ms."""
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


# ---- in a pseudo-terminal: the idle cost as a terminal (or an SSH session) sees it ---------------


def serve(rows: int) -> None:
    """The child: the app over `rows` fake records, real clock, a cool-down an hour long (countdown ticking)."""
    now = time.time()
    engine = FakeEngine(records_list=many_records(rows, now), clock=time.time,
                        figures=sample_figures(now=now + 3600 - 42))
    MonitorApp(engine).run()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def in_terminal(argv: list[str], size: tuple[int, int], seconds: float, settle: float) -> dict[str, float]:
    """Run `argv` on a pseudo-terminal of `size`: time to the first grid row, then `settle` s, then the child's
    CPU share and the bytes it writes to the terminal over `seconds`; `q` ends it."""
    width, height = size
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor"}
    for name in ("TEXTUAL", "LINES", "COLUMNS"):
        env.pop(name, None)
    started = time.monotonic()
    child = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True, cwd=ROOT)
    os.close(slave)
    first_row = b"qa_part_001"
    seen = bytearray()
    first_screen: float | None = None

    def drain(until: float) -> int:
        nonlocal first_screen
        total = 0
        while (left := until - time.monotonic()) > 0:
            ready, _, _ = select.select([master], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child has gone
                break
            total += len(chunk)
            if first_screen is None:
                seen.extend(chunk)
                if first_row in seen:
                    first_screen = time.monotonic() - started
        return total

    try:
        while first_screen is None and time.monotonic() - started < 60:
            drain(time.monotonic() + 0.2)
        if first_screen is None:
            raise RuntimeError(f"{' '.join(argv)} drew no grid row within 60 s")
        drain(time.monotonic() + settle)
        cpu0, t0 = cpu_seconds(child.pid), time.monotonic()
        counted = drain(t0 + seconds)
        cpu1, t1 = cpu_seconds(child.pid), time.monotonic()
    finally:
        os.write(master, b"q")
        deadline = time.monotonic() + 15
        while child.poll() is None and time.monotonic() < deadline:
            drain(time.monotonic() + 0.1)  # keep reading: a child blocked on a full terminal cannot quit
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        os.close(master)
    return {"first screen s": first_screen, "CPU share": (cpu1 - cpu0) / (t1 - t0),
            "bytes per s": counted / (t1 - t0), "seconds": t1 - t0}


def measure_idle(rows: int, size: tuple[int, int], seconds: float) -> dict[str, float]:
    """The app over `rows` fake records with nothing happening but the clocks (3 s to settle first)."""
    return in_terminal([sys.executable, __file__, "--serve", "--rows", str(rows)], size, seconds, settle=3.0)


def measure_demo(size: tuple[int, int], seconds: float) -> dict[str, float]:
    """`gembatch-tui --demo` from its first screen: 150 files going through the emulator in the same process."""
    return in_terminal([sys.executable, "-m", "gembatch.tui", "--demo"], size, seconds, settle=0.0)


# ---- the report ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="20 s of idle at one size, 15 s of the demo, 50 event samples")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, help="how long to measure idle (default 60, 20 with --quick)")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.rows)
        return 0
    rows = args.rows
    idle_seconds = args.idle_seconds or (20.0 if args.quick else 60.0)
    size = (120, 40)
    figures = asyncio.run(measure_in_process(rows, size, samples=50 if args.quick else 200))
    figures["datatable first paint ms"] = asyncio.run(datatable_first_paint(rows, size))
    for name, value in figures.items():
        print(f"in process, {rows} rows, {size[0]}x{size[1]}: {name:28} {value:10.1f}", flush=True)
    idle_sizes = [(120, 40)] if args.quick else [(80, 24), (120, 40), (200, 50)]
    idle = {}
    for term_size in idle_sizes:
        idle[term_size] = got = measure_idle(rows, term_size, idle_seconds)
        print(f"pseudo-terminal {term_size[0]}x{term_size[1]}, {rows} rows, idle: first screen "
              f"{got['first screen s']:.2f} s, {got['CPU share'] * 100:.2f} % of a core, {got['bytes per s']:.0f} B/s"
              f" over {got['seconds']:.0f} s", flush=True)
    busy_seconds = 15.0 if args.quick else 30.0
    busy = measure_demo((120, 40), busy_seconds)
    print(f"pseudo-terminal 120x40, gembatch-tui --demo, busy: first screen {busy['first screen s']:.2f} s, "
          f"{busy['CPU share'] * 100:.0f} % of a core (engine and emulator included), {busy['bytes per s']:.0f} B/s "
          f"over its first {busy['seconds']:.0f} s", flush=True)

    worst_cpu = max(got["CPU share"] for got in idle.values())
    worst_bytes = max(got["bytes per s"] for got in idle.values())
    p95 = figures["event -> frame p95 ms"]
    summary = (f"{rows} rows: first paint {figures['first paint ms']:.0f} ms; event -> changed cell median "
               f"{figures['event -> frame median ms']:.1f} ms, p95 {p95:.1f} ms (target < {EVENT_TARGET_MS:.0f} ms: "
               f"{verdict(p95 < EVENT_TARGET_MS)}); idle {worst_cpu * 100:.2f} % of a core (target < 2 %: "
               f"{verdict(worst_cpu < IDLE_CPU_TARGET)}), at most {worst_bytes:.0f} B/s to the terminal; "
               f"the busy demo {busy['bytes per s'] / 1024:.1f} KiB/s")
    print(summary)
    if args.no_doc:
        return 0

    def ms(name: str) -> str:
        return f"{figures[name]:.1f} ms"

    table = md_table(("figure", "value", "target"), [
        (f"first paint, {rows} rows", ms("first paint ms"), ""),
        ("first paint of the stock DataTable, same rows", ms("datatable first paint ms"),
         "(why the grid draws rows on demand)"),
        ("app start-up alone (12 rows)", ms("start-up alone (12 rows) ms"), ""),
        ("engine event -> frame with the changed cell, median / p95 / max",
         f"{figures['event -> frame median ms']:.1f} / {p95:.1f} / {figures['event -> frame max ms']:.1f} ms",
         f"p95 under {EVENT_TARGET_MS:.0f} ms: {verdict(p95 < EVENT_TARGET_MS)}"),
        ("one in-place change, tally + grid", f"{figures['one in-place change µs']:.0f} µs", ""),
        (f"a change that re-sorts all {rows} rows", ms("re-sorting change ms"), ""),
        (f"burst of {rows} changes -> frame", ms("burst -> frame ms"), ""),
        ("sort key / filter keystroke / filter cleared -> frame",
         f"{figures['sort key ms']:.0f} / {figures['filter keystroke ms']:.0f} / {figures['filter cleared ms']:.0f} ms",
         ""),
        ("the 1 Hz tick (clocks, countdown, figures)", f"{figures['1 Hz tick µs']:.0f} µs", ""),
    ])
    terminal_rows = [(f"{w}x{h}, idle, {rows} rows", f"{got['first screen s']:.2f} s",
                      f"{got['CPU share'] * 100:.2f} %", f"{got['bytes per s']:.0f} B/s", f"{got['seconds']:.0f} s",
                      verdict(got["CPU share"] < IDLE_CPU_TARGET)) for (w, h), got in idle.items()]
    terminal_rows.append(("120x40, `gembatch-tui --demo`, busy (150 files of 100 requests)",
                          f"{busy['first screen s']:.2f} s",
                          f"{busy['CPU share'] * 100:.0f} % (the engine and the emulator run in the same process)",
                          f"{busy['bytes per s'] / 1024:.1f} KiB/s", f"first {busy['seconds']:.0f} s", ""))
    terminal_table = md_table(
        ("terminal", "first screen (spawn -> first grid row drawn)", "CPU (of one core)", "bytes to the terminal",
         "measured over", "idle CPU target < 2 %"), terminal_rows)
    intro = f"""
In process: the app under `App.run_test` at {size[0]}x{size[1]} over a fake engine (`tests/tui/fake_engine.py`)
with {rows} records and a frozen clock, so the figures are the UI's own cost; a frame is timed when the app
writes it (its `_display` call). In a terminal: the app as a user runs it, in a child process on a
pseudo-terminal (TERM=xterm-256color); its user + system CPU time (from /proc) and every byte it writes to the
terminal (what an SSH session carries, before compression) are counted. Idle: {rows} fake rows and a cool-down
an hour long, so the header clock and the countdown change every second and the uploads' time left every minute;
counted after the first screen and 3 s to settle. Busy: `gembatch-tui --demo` from its first screen.
"""
    notes = """
Idle, each second redraws the header's first line and the countdown's line (Textual writes a changed line from
the widget's left edge to the last changed cell); each minute, the grid rows and upload lines whose time left
changed. Nothing else is repainted while nothing happens.
"""
    update_doc("tui_rows", section_body("tui_rows", intro, table + "\n\n" + terminal_table, summary, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
