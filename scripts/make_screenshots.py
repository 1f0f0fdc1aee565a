"""Screenshots of the real app running the demo: `python scripts/make_screenshots.py [--out screenshots]`.

Runs `--demo` (the built-in emulator, about 150 files) inside `App.run_test` at 120x40 and saves SVGs at
five moments: cooling-down.svg (just after a 429), running.svg, palette.svg (Ctrl+P: the run's own commands),
paused.svg, detail.svg (one batch's history);
and, resizing the same run, compact-80x24.svg and wide-200x50.svg (the layouts for small and large terminals).
Checks that no screenshot holds an API key. Anyone can rerun it; it needs no key and no network.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gembatch.core.config import Settings
from gembatch.core.demo import DEMO_KEY, DemoScenario, demo_settings
from gembatch.core.headless import build_engine
from gembatch.core.redact import api_key_from_env
from gembatch.tui.app import MonitorApp
from textual.command import CommandList, CommandPalette

SIZE = (120, 40)


async def wait_for(app: MonitorApp, condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"make_screenshots: timed out waiting for {what}")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # let the panes draw


def save(app: MonitorApp, out: Path, name: str) -> Path:
    path = out / name
    app.save_screenshot(filename=name, path=str(out))
    print(f"saved {path}")
    return path


async def shoot(out: Path) -> list[Path]:
    scenario = DemoScenario()
    base_url = scenario.start()
    saved: list[Path] = []
    try:
        with tempfile.TemporaryDirectory(prefix="gembatch-shots-") as folder:
            settings = demo_settings(Settings(output_dir=Path(folder)), base_url, scenario.workload)
            app = MonitorApp(build_engine(settings, DEMO_KEY), settings, secrets=(DEMO_KEY,))
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(app, lambda: app.countdown.until is not None, "a 429 and its cool-down")
                saved.append(save(app, out, "cooling-down.svg"))
                await wait_for(app, lambda: app.tally.files_done >= 25 and app.countdown.until is None,
                               "25 files done")
                saved.append(save(app, out, "running.svg"))
                await pilot.press("ctrl+p")
                await wait_for(app, lambda: isinstance(app.screen, CommandPalette), "the command palette")
                await pilot.press(*"batch")  # the product's commands on the selected batch and on every failed one
                await wait_for(app, lambda: app.screen.query_one(CommandList).option_count >= 5, "the palette's hits")
                saved.append(save(app, out, "palette.svg"))
                await pilot.press("escape")
                await wait_for(app, lambda: not isinstance(app.screen, CommandPalette), "the palette to close")
                for size, name in (((80, 24), "compact-80x24.svg"), ((200, 50), "wide-200x50.svg")):
                    await pilot.resize_terminal(*size)
                    await wait_for(app, lambda size=size: tuple(app.size) == size, f"the {name} size")
                    saved.append(save(app, out, name))
                await pilot.resize_terminal(*SIZE)
                await wait_for(app, lambda: tuple(app.size) == SIZE, "the size back")
                await pilot.press("p")
                await wait_for(app, lambda: app.paused and all(
                    r.wait_reason == "paused" for r in app.uploads.waiting.values()), "the pause")
                saved.append(save(app, out, "paused.svg"))
                records = app.grid.model.records.values()
                retried = [r for r in records if r.attempt > 1 and r.history]
                done = [r for r in records if r.stage.value == "downloaded"]
                chosen = (retried or done)[0].batch_id
                app.grid.select(chosen)
                await pilot.press("enter")
                await wait_for(app, lambda: app.screen.__class__.__name__ == "DetailScreen", "the detail")
                saved.append(save(app, out, "detail.svg"))
                await pilot.press("escape", "p", "q")
                await wait_for(app, lambda: app._exit, "the app to stop", timeout=60)
    finally:
        scenario.stop()
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    saved = asyncio.run(shoot(args.out))
    secrets = [s for s in (DEMO_KEY, api_key_from_env()) if s]
    leaks = [path for path in saved for secret in secrets if secret in path.read_text(encoding="utf-8")]
    if leaks:
        print(f"make_screenshots: an API key appears in {sorted(set(map(str, leaks)))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
