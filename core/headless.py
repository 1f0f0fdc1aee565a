"""Running the engine with no UI: one log line per event on stderr, exit codes for scripts."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from typing import TextIO

from .checkpoint import CheckpointError, CheckpointLocked, CheckpointStore
from .config import Settings
from .engine import EXIT_USAGE, Engine
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
from .gateway import Gateway
from .redact import api_key_from_env, redact

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


class HeadlessLog:
    """Writes one line per event: log lines, stage changes, cool-downs, pause, finish."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: Event) -> None:
        line = self.format(event)
        if line is not None:
            self.stream.write(redact(line) + "\n")
            self.stream.flush()

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


def missing_key_message() -> str:
    """What to tell a user who has not set a key."""
    return "no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment"


def build_engine(settings: Settings, api_key: str, on_retry: Callable[[str], None] | None = None) -> Engine:
    """The engine with its gateway and checkpoint store, as both the headless runner and the TUI use it.

    Retries are logged as engine LogLines; `on_retry`, when given, receives them instead.
    """
    store = CheckpointStore(settings.checkpoint_path())
    gateway = Gateway(
        api_key=api_key,
        model=settings.model,
        base_url=settings.base_url,
        timeout=settings.transfer.request_timeout,
        max_retries=settings.transfer.max_retries,
        retry_max_wait=settings.transfer.retry_max_wait,
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
        stream.write(f"gembatch-tui: {exc}\n")
        await engine.gateway.aclose()
        return EXIT_USAGE
    received: list[int] = []
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if not received:
            stream.write(f"{_stamp(time.time())} WARNING {signal.Signals(signum).name}: "
                         "saving the checkpoint and stopping\n")
        received.append(signum)
        engine.request_stop()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    engine.bus.subscribe(log)
    try:
        code = await engine.run()
    except CheckpointError as exc:
        stream.write(f"gembatch-tui: {exc}\n")
        return EXIT_USAGE
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        engine.store.release_lock()
        await engine.gateway.aclose()
    if received:
        return 128 + received[0]
    return code


def run_headless(settings: Settings) -> int:
    """The `--headless` entry: a blocking call that returns the process exit code."""
    api_key = api_key_from_env()
    if api_key is None:
        sys.stderr.write(f"gembatch-tui: {missing_key_message()}\n")
        return EXIT_USAGE
    return asyncio.run(run_engine_headless(settings, api_key))
