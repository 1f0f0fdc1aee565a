"""Running the engine with no UI: one log line per event on stderr, exit codes for scripts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import TextIO

from .api_trace import ApiTrace
from .checkpoint import CheckpointError, CheckpointLocked, CheckpointStore
from .config import ConfigError, Settings
from .engine import Engine, RunRefused
from .events import (
    AdmissionChanged,
    BatchChanged,
    CoolDownEnded,
    CoolDownStarted,
    Event,
    LogLine,
    PauseChanged,
    RunFinished,
)
from .exit_codes import EXIT_INTERNAL, EXIT_USAGE
from .gateway import Gateway, GatewayError
from .rebuild import RebuildError, rebuild_from_server
from .redact import MISSING_KEY_MESSAGE, api_key_from_env, redact

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


class HeadlessLog:
    """Writes one line per event: log lines, stage changes, cool-downs, pause, finish."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.gone = False  # the stream failed (the terminal or SSH session went away): write nothing more

    def __call__(self, event: Event) -> None:
        line = self.format(event)
        if line is not None:
            self.write(line + "\n")

    def write(self, text: str) -> None:
        """Write (redacted) and flush; a stream that fails is given up on, never raised from."""
        if self.gone:
            return
        try:
            self.stream.write(redact(text))
            self.stream.flush()
        except (OSError, ValueError):  # EPIPE/EIO once the terminal is gone, or a closed stream
            self.gone = True
            _silence(self.stream)

    def format(self, event: Event) -> str | None:
        """The line for `event`, or None for events that only the TUI shows."""
        at = _stamp(event.at)
        match event:
            case LogLine(level=level, message=message):
                return f"{at} {level.upper():7} {message}"
            case BatchChanged():
                return None  # stage changes are logged by the engine as LogLines already
            case CoolDownStarted(quota=quota, until=until):
                return f"{at} WARNING cool-down ({quota}) until {_stamp(until)}"
            case CoolDownEnded(quota=quota):
                return None
            case PauseChanged(paused=paused):
                return f"{at} INFO    {'paused' if paused else 'resumed'}"
            case AdmissionChanged():
                return None
            case RunFinished(exit_code=code, summary=summary):
                counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.items()))
                return f"{at} INFO    finished with exit code {code}: {counts}"
        return None


def _silence(stream: TextIO) -> None:
    """Point sys.stderr at /dev/null once `stream` (stderr) is broken: Python's own last words, the logging
    module's fallback and the flush at exit would fail on it again (and turn the exit code into 120)."""
    if stream is sys.stderr or stream is sys.__stderr__:
        with contextlib.suppress(OSError):
            sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (lives until exit)


def missing_key_message() -> str:
    """What to tell a user who has not set a key."""
    return MISSING_KEY_MESSAGE


def build_engine(settings: Settings, api_key: str, on_retry: Callable[[str], None] | None = None) -> Engine:
    """The engine with its gateway and checkpoint store, as both the headless runner and the TUI use it.

    Retries are logged as engine LogLines; `on_retry`, when given, receives them instead.
    """
    store = CheckpointStore(settings.checkpoint_path())
    trace = None
    if settings.trace is not None:
        try:
            settings.trace.parent.mkdir(parents=True, exist_ok=True)
            trace = ApiTrace(settings.trace)
        except OSError as exc:
            raise ConfigError(f"--trace {settings.trace}: cannot write it: {exc.strerror or exc}") from None
    gateway = Gateway(
        api_key=api_key,
        model=settings.model,
        base_url=settings.base_url,
        timeout=settings.transfer.request_timeout,
        max_retries=settings.transfer.max_retries,
        retry_max_wait=settings.transfer.retry_max_wait,
        trace=trace,
    )
    engine = Engine(settings, gateway, store)
    if on_retry is not None:
        gateway.on_retry = on_retry
    return engine


async def run_engine_headless(settings: Settings, api_key: str, stream: TextIO = sys.stderr) -> int:
    """Run to the end (or to a stop signal); the checkpoint is saved before this returns."""
    log = HeadlessLog(stream)
    engine = build_engine(settings, api_key)
    try:
        engine.store.acquire_lock()
    except CheckpointLocked as exc:
        log.write(f"gembatch-tui: {exc}\n")
        await engine.gateway.aclose()
        return EXIT_USAGE
    received: list[int] = []
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        first = not received
        received.append(signum)
        engine.request_stop()  # first: writing the notice may fail when the terminal is gone (SIGHUP)
        if first:
            log.write(f"{_stamp(time.time())} WARNING {signal.Signals(signum).name}: "
                      "saving the checkpoint and stopping\n")

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    engine.bus.subscribe(log)
    try:
        if settings.rebuild_from_server:
            try:
                report = await rebuild_from_server(settings, engine.gateway, engine.store)
            except GatewayError as exc:
                log.write(f"gembatch-tui: cannot read the server's batch and file lists to rebuild the checkpoint "
                          f"({exc}); nothing was changed or submitted: try again later\n")
                return EXIT_USAGE
            for line in report.lines():
                log.write(f"{_stamp(time.time())} INFO    {line}\n")
        code = await engine.run()
    except (CheckpointError, RebuildError) as exc:
        log.write(f"gembatch-tui: {exc}\n")
        return EXIT_USAGE
    except RunRefused as exc:
        return exc.exit_code  # the engine logged why
    except BaseExceptionGroup as group:  # a task of the engine failed on a checkpoint write (disk full, I/O)
        found = _checkpoint_error(group)
        if found is None:
            raise
        log.write(f"gembatch-tui: {found}\n")
        return EXIT_USAGE
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        engine.store.release_lock()
        await engine.gateway.aclose()
    if received:
        return 128 + received[0]
    return code


def _checkpoint_error(error: BaseException) -> CheckpointError | None:
    """The CheckpointError inside an exception group (as a TaskGroup raises it), if there is one."""
    if isinstance(error, CheckpointError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _checkpoint_error(inner)
            if found is not None:
                return found
    return None


def run_headless(settings: Settings) -> int:
    """The `--headless` entry: a blocking call that returns the process exit code."""
    api_key = api_key_from_env()
    if api_key is None:
        sys.stderr.write(f"gembatch-tui: {missing_key_message()}\n")
        return EXIT_USAGE
    try:
        return asyncio.run(run_engine_headless(settings, api_key))
    except Exception:  # a bug: say so, with the traceback, but never with the API key in it
        text = traceback.format_exc()
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(redact(f"gembatch-tui: internal error; what was saved before it is in the checkpoint, "
                                    f"and the same command resumes from it.\n{text}"))
            sys.stderr.flush()
        return EXIT_INTERNAL
