"""The `gembatch-tui` command: parse the contract's flags, then run the TUI, headless, or the demo."""

from __future__ import annotations

import sys

from gembatch.core.cli_args import resolve_settings
from gembatch.core.config import ConfigError, Settings
from gembatch.core.demo import DEMO_KEY, DemoScenario, demo_settings
from gembatch.core.engine import EXIT_USAGE
from gembatch.core.headless import missing_key_message, run_headless
from gembatch.core.redact import api_key_from_env


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
        scenario = DemoScenario()
        base_url = scenario.start()
        try:
            demo = demo_settings(settings, base_url, scenario.workload)
            print(f"demo: emulator at {base_url}; files in {demo.input_dir.parent}", file=sys.stderr)
            return _run(demo, DEMO_KEY)
        finally:
            scenario.stop()
    if settings.headless:
        return run_headless(settings)
    api_key = api_key_from_env()
    if api_key is None:
        print(f"gembatch-tui: {missing_key_message()}", file=sys.stderr)
        return EXIT_USAGE
    return _run(settings, api_key)


if __name__ == "__main__":
    sys.exit(main())
