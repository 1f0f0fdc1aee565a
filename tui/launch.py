"""The `gembatch-tui` command: parse the contract's flags, then run the TUI, headless, or the demo."""

from __future__ import annotations

import sys

from gembatch.core.cli_args import resolve_settings
from gembatch.core.config import ConfigError, Settings
from gembatch.core.exit_codes import EXIT_USAGE
from gembatch.core.redact import MISSING_KEY_MESSAGE, api_key_from_env

# google.genai (through the engine) and Textual are imported only on the path that needs them:
# the first screen shows about half a second sooner.
WATCH_ONLY_KEY = "read-only-no-calls"  # a read-only app never calls the API


def _run(settings: Settings, api_key: str) -> int:
    if settings.headless:
        import asyncio

        from gembatch.core.headless import run_engine_headless

        return asyncio.run(run_engine_headless(settings, api_key))
    from .app import run_app  # Textual is imported only when the UI is wanted

    return run_app(settings, api_key)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    from gembatch.core.workflow.cli import is_subcommand

    words = sys.argv[1:] if argv is None else argv
    if is_subcommand(words):  # `gembatch-tui split|merge|retry-failures|cost|cleanup|status ...`
        from gembatch.core.workflow.cli import main as workflow_main

        return workflow_main(words)
    try:
        settings = resolve_settings(argv)
    except ConfigError as exc:
        print(f"gembatch-tui: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if settings.demo:
        from gembatch.core.demo import DEMO_KEY, DemoScenario, demo_settings

        scenario = DemoScenario()
        base_url = scenario.start()
        try:
            demo = demo_settings(settings, base_url, scenario.workload)
            print(f"demo: emulator at {base_url}; files in {demo.input_dir.parent}", file=sys.stderr)
            return _run(demo, DEMO_KEY)
        finally:
            scenario.stop()
    if settings.headless:
        from gembatch.core.headless import run_headless

        return run_headless(settings)
    api_key = api_key_from_env() or (WATCH_ONLY_KEY if settings.read_only else None)
    if api_key is None:
        print(f"gembatch-tui: {MISSING_KEY_MESSAGE}", file=sys.stderr)
        return EXIT_USAGE
    return _run(settings, api_key)


if __name__ == "__main__":
    sys.exit(main())
