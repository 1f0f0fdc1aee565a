"""Running the engine with no UI: one log line per event on stderr and in the log file, exit codes for scripts,
a summary on stdout on leaving."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import TextIO

from .backend import GatewayError
from .checkpoint_format import CheckpointError
from .checkpoint_lock import CheckpointLocked
from .compose import build_engine
from .config import Settings
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
from .exit_codes import EXIT_INTERNAL, EXIT_USAGE, leaving_code
from .leaving_summary import leaving_summary
from .notify import Notifier
from .progress_report import ProgressReport, RunCounts, count_batches, utc_stamp
from .rebuild import RebuildError, rebuild_from_server
from .redact import MISSING_KEY_MESSAGE, api_key_from_env, redact
from .run_log import RunLogFile, log_file_path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stamp(at: float) -> str:
    return utc_stamp(at)


class HeadlessLog:
    """Writes one line per event (log lines, cool-downs, pause) to `stream` and to the run's log file."""

    def __init__(self, stream: TextIO | None, log_file: RunLogFile | None = None) -> None:
        self.stream = stream
        self.log_file = log_file
        self.gone = stream is None  # the stream failed (the terminal or SSH session went away): write no more

    def __call__(self, event: Event) -> None:
        line = self.format(event)
        if line is not None:
            self.write(line + "\n")

    def write(self, text: str) -> None:
        """Write (redacted) and flush, to the stream and the log file; a stream that fails is given up on,
        never raised from."""
        if self.log_file is not None:
            self.log_file.write(text)
        if self.gone or self.stream is None:
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
            case RunFinished():
                return None  # the last line names the process's exit code: see `leaving_line`
        return None


def leaving_line(at: float, code: int, counts: RunCounts, signum: int | None) -> str:
    """The last log line of a run: the exit code the process returns, and why."""
    stages = ", ".join(f"{stage} {n}" for stage, n in counts.by_stage.items()) or "no batches"
    if not counts.work_left:
        return f"{_stamp(at)} INFO    finished with exit code {code}: {stages}"
    why = f"stopped by {signal.Signals(signum).name}" if signum is not None else "stopped"
    return f"{_stamp(at)} WARNING {why} with work left: exit code {code}; {stages}; the same command resumes"


def _silence(stream: TextIO) -> None:
    """Point sys.stderr at /dev/null once `stream` (stderr) is broken: Python's own last words, the logging
    module's fallback and the flush at exit would fail on it again (and turn the exit code into 120)."""
    if stream is sys.stderr or stream is sys.__stderr__:
        with contextlib.suppress(OSError):
            sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (lives until exit)


def open_run_log(settings: Settings, api_key: str) -> RunLogFile:
    """The run's log file beside its checkpoint (opened on the first line written)."""
    return RunLogFile(log_file_path(settings.checkpoint_path()), secrets=(api_key,))


def subscribe_run_log(engine: Engine, log: HeadlessLog, mode: str,
                      active: Callable[[], bool] = lambda: True) -> ProgressReport:
    """Feed the engine's events to `log`, with a progress report every `progress_interval`, while `active()`
    (a read-only UI watches a run whose holder keeps the log); the log file's first line names this process."""
    report = ProgressReport(engine, engine.settings.progress_interval)
    started: list[bool] = []

    def deliver(event: Event) -> None:
        if not active():
            return
        if not started:
            started.append(True)
            if log.log_file is not None:
                log.log_file.write(f"{_stamp(time.time())} INFO    gembatch-tui started (pid {os.getpid()}, {mode})")
        log(event)
        report(event)

    engine.bus.subscribe(deliver)
    return report


async def run_engine_headless(
    settings: Settings,
    api_key: str,
    stream: TextIO | None = sys.stderr,
    *,
    argv: Sequence[str] | None = None,
    summary: TextIO | None = None,
) -> int:
    """Run to the end (or to a stop signal); the checkpoint is saved before this returns.

    The last log line names the returned exit code; `summary`, when given, receives the leaving summary.
    """
    log = HeadlessLog(stream)
    received: list[int] = []
    holder: list[Engine] = []
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        first = not received
        received.append(signum)
        if holder:
            holder[0].request_stop()  # first: writing the notice may fail when the terminal is gone (SIGHUP)
        if first:
            log.write(f"{_stamp(time.time())} WARNING {signal.Signals(signum).name}: "
                      "saving the checkpoint and stopping\n")

    for signum in STOP_SIGNALS:  # before anything else: a Ctrl-C at start is a clean stop, not a traceback
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await _run_locked(settings, api_key, log, received, holder, argv, summary)
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


async def _run_locked(
    settings: Settings,
    api_key: str,
    log: HeadlessLog,
    received: list[int],
    holder: list[Engine],
    argv: Sequence[str] | None,
    summary: TextIO | None,
) -> int:
    engine = build_engine(settings, api_key)
    holder.append(engine)
    try:
        engine.store.acquire_lock()
    except (CheckpointLocked, CheckpointError) as exc:  # taken by another engine, or no lock file can be made
        log.write(f"gembatch-tui: {exc}\n")
        await engine.gateway.aclose()
        return EXIT_USAGE
    log.log_file = open_run_log(settings, api_key)
    if received:
        engine.request_stop()
    subscribe_run_log(engine, log, "headless")
    notifier = Notifier.to_terminal(settings.notify).attach(engine.bus)
    try:
        code, ran = await _run_engine(settings, engine, log)
    finally:
        engine.store.release_lock()
        await engine.gateway.aclose()
        await asyncio.to_thread(notifier.close)  # the last notices go out before the process leaves
    signum = received[0] if received else None
    final = leaving_code(code, count_batches(engine.records.values()).work_left, signum) if ran else code
    report_leaving(engine, settings, final, log=log, signum=signum, ran=ran, argv=argv, summary=summary)
    return final


def report_leaving(
    engine: Engine,
    settings: Settings,
    code: int,
    *,
    log: HeadlessLog,
    signum: int | None,
    ran: bool,
    argv: Sequence[str] | None,
    summary: TextIO | None,
) -> None:
    """On leaving a run (headless or UI): the last log line with the exit code `code`, the log file closed,
    and the leaving summary written to `summary` when the engine ran."""
    now = time.time()
    if ran:
        log.write(leaving_line(now, code, count_batches(engine.records.values()), signum) + "\n")
    else:
        log.write(f"{_stamp(now)} ERROR   exit code {code}\n")
    run_log = log.log_file
    if run_log is not None:
        run_log.close()
    if ran and summary is not None:
        log_path = run_log.path.absolute() if run_log is not None and run_log.error is None else None
        text = leaving_summary(engine.records.values(), settings, code, now=now, argv=argv, log_path=log_path)
        try:
            summary.write(text)
            summary.flush()
        except (OSError, ValueError):  # stdout is gone (a hang-up, a closed pipe): nothing more to tell
            if summary is sys.stdout:
                with contextlib.suppress(OSError):
                    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (the flush at exit)


async def _run_engine(settings: Settings, engine: Engine, log: HeadlessLog) -> tuple[int, bool]:
    """The engine's run: (its code, True), or (the exit code, False) when it could not run (reason logged)."""
    try:
        if settings.rebuild_from_server:
            try:
                report = await rebuild_from_server(settings, engine.gateway, engine.store)
            except GatewayError as exc:
                log.write(f"gembatch-tui: cannot read the server's batch and file lists to rebuild the checkpoint "
                          f"({exc}); nothing was changed or submitted: try again later\n")
                return EXIT_USAGE, False
            for line in report.lines():
                log.write(f"{_stamp(time.time())} INFO    {line}\n")
        return await engine.run(), True
    except (CheckpointError, RebuildError) as exc:
        log.write(f"gembatch-tui: {exc}\n")
        return EXIT_USAGE, False
    except RunRefused as exc:
        return exc.exit_code, False  # the engine logged why
    except BaseExceptionGroup as group:  # a task of the engine failed on a checkpoint write (disk full, I/O)
        found = _checkpoint_error(group)
        if found is None:
            raise
        log.write(f"gembatch-tui: {found}\n")
        return EXIT_USAGE, False


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


def run_headless(settings: Settings, argv: Sequence[str] | None = None, api_key: str | None = None) -> int:
    """The `--headless` entry: a blocking call that returns the process exit code; the leaving summary goes
    to stdout."""
    api_key = api_key or api_key_from_env()
    if api_key is None:
        sys.stderr.write(f"gembatch-tui: {MISSING_KEY_MESSAGE}\n")
        return EXIT_USAGE
    try:
        return asyncio.run(run_engine_headless(settings, api_key, argv=argv, summary=sys.stdout))
    except Exception:  # a bug: say so, with the traceback, but never with the API key in it
        text = traceback.format_exc()
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(redact(f"gembatch-tui: internal error; what was saved before it is in the checkpoint, "
                                    f"and the same command resumes from it.\n{text}"))
            sys.stderr.flush()
        return EXIT_INTERNAL
