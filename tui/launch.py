"""The `gembatch-tui` command: parse the contract's flags, then run the TUI, headless, or the demo."""

from __future__ import annotations

import signal
import sys
import threading

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


class StartGuard:
    """Until the run's own stop handling takes over: a Ctrl-C raises KeyboardInterrupt and is remembered, so
    that one swallowed by some import (a bare `except:`) still stops the start at `hand_over`."""

    def __init__(self) -> None:
        self.interrupted = False
        self.handed_over = False
        self._previous: object = None

    def __enter__(self) -> StartGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum: int, frame: object) -> None:
        self.interrupted = True
        raise KeyboardInterrupt

    def hand_over(self) -> None:
        """The run starts now: stop here if a Ctrl-C came, else give SIGINT back (asyncio and the app take it)."""
        if self.interrupted:
            raise KeyboardInterrupt
        self._restore()
        self.handed_over = True

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
            self._previous = None

    def __exit__(self, *exc: object) -> None:
        self._restore()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    guard = StartGuard()
    try:  # around the `with` too: a Ctrl-C that lands inside the guard's own __enter__ is caught as well
        with guard:
            return _main(sys.argv[1:] if argv is None else list(argv), guard)
    except KeyboardInterrupt:  # before (or outside) the run's own Ctrl-C handling
        if guard.handed_over:
            print(f"gembatch-tui: interrupted (exit code {INTERRUPTED_AT_START})", file=sys.stderr)
        else:
            print(f"gembatch-tui: interrupted while starting (exit code {INTERRUPTED_AT_START}); nothing was "
                  "submitted: the same command starts again", file=sys.stderr)
        return INTERRUPTED_AT_START


def _main(words: list[str], guard: StartGuard) -> int:
    from gembatch.core.workflow.cli import is_subcommand

    from .serve_tab import hang_up_with_server

    hang_up_with_server()  # a browser tab's app under --serve: stop as on a closed terminal when the server dies

    if is_subcommand(words):  # `gembatch-tui split|merge|retry-failures|cost|cleanup|status ...`
        from gembatch.core.workflow.cli import main as workflow_main

        guard.hand_over()
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
    if settings.serve.on:  # each browser tab runs this command line without the serve flags
        if not settings.demo and not settings.read_only and api_key_from_env() is None:
            print(f"gembatch-tui: {MISSING_KEY_MESSAGE}", file=sys.stderr)
            return EXIT_USAGE
        from .serve import serve

        guard.hand_over()
        return serve(settings, words)
    if settings.demo:
        from gembatch.core.demo import DEMO_KEY, DemoScenario, demo_settings

        guard.hand_over()
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

        guard.hand_over()
        return run_headless(settings, words)
    api_key = api_key_from_env() or (WATCH_ONLY_KEY if settings.read_only else None)
    if api_key is None:
        print(f"gembatch-tui: {MISSING_KEY_MESSAGE}", file=sys.stderr)
        return EXIT_USAGE
    from .app import run_app  # Textual is imported only when the UI is wanted; before the hand-over

    guard.hand_over()
    return run_app(settings, api_key, argv=words)


if __name__ == "__main__":
    sys.exit(main())
