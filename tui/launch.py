"""The `gembatch-tui` command: parse the contract's flags, then run the TUI, headless, or the demo."""

from __future__ import annotations

import sys

# Everything else is imported inside `main`: a Ctrl-C during the imports (the first half second of a start)
# then ends in a one-line message and exit code 130, not a traceback. google.genai (through the engine) and
# Textual are imported only on the path that needs them: the first screen shows about half a second sooner.
WATCH_ONLY_KEY = "read-only-no-calls"  # a read-only app never calls the API
INTERRUPTED_AT_START = 130  # 128 + SIGINT, as for a run stopped by Ctrl-C


def _run(settings, api_key: str, argv: list[str]) -> int:
    if settings.headless:
        from gembatch.core.headless import run_headless

        return run_headless(settings, argv, api_key=api_key)
    from .app import run_app  # Textual is imported only when the UI is wanted

    return run_app(settings, api_key, argv=argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:  # before the run's own Ctrl-C handling is in place
        print(f"gembatch-tui: interrupted while starting (exit code {INTERRUPTED_AT_START}); nothing is lost: "
              "the same command starts again", file=sys.stderr)
        return INTERRUPTED_AT_START


def _main(words: list[str]) -> int:
    from gembatch.core.workflow.cli import is_subcommand

    if is_subcommand(words):  # `gembatch-tui split|merge|retry-failures|cost|cleanup|status ...`
        from gembatch.core.workflow.cli import main as workflow_main

        return workflow_main(words)
    from gembatch.core.cli_args import resolve_settings
    from gembatch.core.config import ConfigError
    from gembatch.core.exit_codes import EXIT_USAGE
    from gembatch.core.redact import MISSING_KEY_MESSAGE, api_key_from_env

    try:
        settings = resolve_settings(words)
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
            return _run(demo, DEMO_KEY, words)
        finally:
            scenario.stop()
    if settings.headless:
        from gembatch.core.headless import run_headless

        return run_headless(settings, words)
    api_key = api_key_from_env() or (WATCH_ONLY_KEY if settings.read_only else None)
    if api_key is None:
        print(f"gembatch-tui: {MISSING_KEY_MESSAGE}", file=sys.stderr)
        return EXIT_USAGE
    return _run(settings, api_key, words)


if __name__ == "__main__":
    sys.exit(main())
