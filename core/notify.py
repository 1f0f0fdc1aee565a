"""Notices when something needs a person (the run finished, a batch failed for good, an upload will expire in a
quota wait, a job looks stuck), told by the terminal's bell, desktop escapes (OSC 9 / OSC 777) and apprise URLs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TextIO

from .config import NotifySettings
from .events import AdmissionChanged, BatchChanged, CoolDownStarted, Event, EventBus, Level, LogLine, RunFinished
from .model import BatchRecord, Stage

TITLE = "gembatch-tui"
_FAILED_STAGES = frozenset({Stage.FAILED, Stage.EXPIRED, Stage.CANCELLED})
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


class NoticeKind(StrEnum):
    """What needs a person; the values are the names used in the [notify] table."""

    FINISHED = "finished"
    FAILED = "failed"
    UPLOAD_EXPIRY_RISK = "upload_expiry_risk"
    STUCK = "stuck"


@dataclass(frozen=True, slots=True)
class Notice:
    """One thing to tell: its kind and a one-line text."""

    kind: NoticeKind
    text: str


class NoticeFinder:
    """Derives notices from engine events, each once.

    The first snapshot of a batch is what the run started from (a resumed run republishes every record):
    failures and stuck flags are told when they appear after it. A batch that failed is told only once
    `settle()` confirms it is still failed, since the engine requeues a failed job with attempts left
    right after publishing it.
    """

    def __init__(self) -> None:
        self.records: dict[str, BatchRecord] = {}  # the latest snapshot of each batch
        self.uploaded: dict[str, BatchRecord] = {}  # those uploaded and waiting for their job
        self.cool_down_until: float | None = None
        self._told: set[tuple[object, ...]] = set()
        self.unsettled: dict[str, BatchRecord] = {}

    def observe(self, event: Event) -> list[Notice]:
        """The notices `event` gives at once (failures wait for `settle`)."""
        match event:
            case BatchChanged(record=rec):
                return self._batch_changed(rec)
            case AdmissionChanged(figures=figures):
                return self._cool_down_until(figures.cool_down_until)
            case CoolDownStarted(until=until):
                return self._cool_down_until(until)
            case RunFinished(exit_code=code, summary=summary):
                return [*self.settle(), *self._finished(code, summary)]
        return []

    def settle(self) -> list[Notice]:
        """Failures seen since the last call whose batch is still failed (not submitted again)."""
        notices = []
        for batch_id, failed in self.unsettled.items():
            rec = self.records.get(batch_id)
            if rec is None or rec.stage is not failed.stage or rec.attempt != failed.attempt:
                continue
            if self._first(("failed", batch_id, rec.attempt)):
                reason = f": {rec.last_error}" if rec.last_error else ""
                notices.append(Notice(NoticeKind.FAILED, f"{batch_id} {rec.stage} for good{reason}"))
        self.unsettled.clear()
        return notices

    def _cool_down_until(self, until: float | None) -> list[Notice]:
        if until == self.cool_down_until:
            return []  # each batch was checked against it when it changed
        self.cool_down_until = until
        return self._expiry_risks(self.uploaded.values())

    def _batch_changed(self, rec: BatchRecord) -> list[Notice]:
        previous = self.records.get(rec.batch_id)
        self.records[rec.batch_id] = rec
        if rec.stage is Stage.UPLOADED:
            self.uploaded[rec.batch_id] = rec
        else:
            self.uploaded.pop(rec.batch_id, None)
        notices = self._expiry_risks([rec])
        if previous is None:
            return notices
        if rec.stage in _FAILED_STAGES and previous.stage is not rec.stage and not rec.resubmit_pending:
            self.unsettled[rec.batch_id] = rec
        stuck = rec.stuck_since is not None and previous.stuck_since != rec.stuck_since
        if stuck and self._first(("stuck", rec.batch_id, rec.stuck_since)):
            job = rec.job_name or "its job"
            notices.append(Notice(NoticeKind.STUCK, f"{rec.batch_id}: {job} looks stuck ({rec.stage})"))
        return notices

    def _expiry_risks(self, records: Iterable[BatchRecord]) -> list[Notice]:
        until = self.cool_down_until
        if until is None:
            return []
        risky = sorted(
            rec.batch_id for rec in records
            if rec.stage is Stage.UPLOADED and rec.upload_expires_at is not None and rec.upload_expires_at <= until
            and self._first(("expiry", rec.batch_id, rec.upload_name))
        )
        if not risky:
            return []
        names = ", ".join(risky[:5]) + (f" and {len(risky) - 5} more" if len(risky) > 5 else "")
        return [Notice(NoticeKind.UPLOAD_EXPIRY_RISK,
                       f"{len(risky)} upload(s) expire before the quota wait ends: {names}")]

    def _finished(self, code: int, summary: dict[str, int]) -> list[Notice]:
        ended = all(Stage(stage).ended for stage in summary)
        if not ended or not self._first(("finished",)):
            return []  # stopped with work left: the user is there
        counts = ", ".join(f"{n} {stage}" for stage, n in sorted(summary.items())) or "no batches"
        return [Notice(NoticeKind.FINISHED, f"run finished: {counts} (exit code {code})")]

    def _first(self, key: tuple[object, ...]) -> bool:
        if key in self._told:
            return False
        self._told.add(key)
        return True


def clean(text: str) -> str:
    """`text` without control characters, which would end an escape sequence early or inject another."""
    return _CONTROL.sub(" ", text).strip()


def terminal_escapes(notice: Notice, settings: NotifySettings) -> str:
    """What the terminal gets for `notice`: BEL when its kind rings, OSC 9 and OSC 777 when desktop is on."""
    out = ""
    if settings.desktop and notice.kind in settings.on:
        body = clean(notice.text)
        out += f"\x1b]9;{TITLE}: {body}\x07\x1b]777;notify;{TITLE};{body}\x07"
    if notice.kind in settings.bell_on:
        out += "\x07"
    return out


def url_label(number: int, url: str) -> str:
    """How a notification URL is named in messages: its place and scheme, never the rest (it may hold a token)."""
    scheme = url.partition("://")[0] if "://" in url else "?"
    return f"notify URL #{number} ({clean(scheme)[:20]}://…)"


class UrlSender:
    """Sends notices to apprise URLs in one worker thread; a failure is reported once per URL, never raised."""

    def __init__(self, urls: list[str], report: Callable[[str], None]) -> None:
        import apprise  # imported only when URLs are set: it loads many plugins

        logging.getLogger("apprise").addHandler(logging.NullHandler())  # its warnings could name a URL's host
        logging.getLogger("apprise").propagate = False
        self._failed: set[str] = set()
        self._targets: list[tuple[str, Any]] = []
        for number, url in enumerate(urls, 1):
            target = apprise.Apprise()
            if target.add(url):
                self._targets.append((url_label(number, url), target))
            else:
                report(f"{url_label(number, url)}: apprise does not understand it; no notices go there")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notify")

    def send(self, notice: Notice, done: Callable[[str], None]) -> list[Future[None]]:
        """Queue `notice` for every URL; `done` gets a failure message (once per URL), from the worker thread."""
        return [self._pool.submit(self._send_one, label, target, notice, done) for label, target in self._targets]

    def _send_one(self, label: str, target: Any, notice: Notice, done: Callable[[str], None]) -> None:
        try:
            ok = bool(target.notify(title=TITLE, body=notice.text))
            problem = "" if ok else "the service did not accept the notice"
        except Exception as exc:  # a plugin's own error: logged, never fatal
            problem = type(exc).__name__
        if problem and label not in self._failed:
            self._failed.add(label)
            done(f"{label}: sending a notice failed ({problem}); later failures of it are not logged")

    def close(self, wait: bool = True) -> None:
        """Let queued notices go out (when `wait`), then stop the worker thread."""
        self._pool.shutdown(wait=wait)


def open_terminal(mode: str) -> TextIO | None:
    """The controlling terminal (/dev/tty, else stderr) for bells and escapes, or None when they must not go out:
    mode "off", or "auto" while neither stdout nor stderr is a terminal (a redirected log)."""
    if mode == "off":
        return None
    if mode == "auto" and not any(_isatty(stream) for stream in (sys.stdout, sys.stderr)):
        return None
    try:
        return open(os.ctermid(), "w", encoding="utf-8")  # closed by Notifier.close
    except OSError:
        return sys.stderr


def _isatty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):
        return False


class Notifier:
    """Subscribes to the engine's bus and tells each notice: escapes to `write` (the terminal), text to URLs."""

    def __init__(self, settings: NotifySettings, write: Callable[[str], None] | None,
                 active: Callable[[], bool] = lambda: True) -> None:
        self.settings = settings
        self.write = write
        self.active = active
        self.finder = NoticeFinder()
        self.bus: EventBus | None = None
        self.urls: UrlSender | None = None
        self._pending_reports: list[str] = []
        self._settle_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._terminal: TextIO | None = None

    @classmethod
    def to_terminal(cls, settings: NotifySettings) -> Notifier:
        """A notifier that writes escapes to the controlling terminal (see `open_terminal`)."""
        notifier = cls(settings, None)
        stream = notifier._terminal = open_terminal(settings.terminal)
        if stream is not None:
            def write(text: str) -> None:
                stream.write(text)
                stream.flush()

            notifier.write = write
        return notifier

    def attach(self, bus: EventBus) -> Notifier:
        """Subscribe to `bus`; failures of URLs are published on it as log lines."""
        self.bus = bus
        if self.settings.urls:
            self.urls = UrlSender(self.settings.urls, self._report)
        bus.subscribe(self)
        return self

    def __call__(self, event: Event) -> None:
        if not self.active():
            return
        self._find_loop()
        self.tell(self.finder.observe(event))
        if self.finder.unsettled and not self._settle_scheduled:
            if self._loop is None:  # no loop (a synchronous caller): settle now
                self._settle()
            else:
                self._loop.call_soon(self._settle)
                self._settle_scheduled = True
        if self._pending_reports:
            self._flush_reports()

    def _settle(self) -> None:
        self._settle_scheduled = False
        self.tell(self.finder.settle())

    def _find_loop(self) -> None:
        with contextlib.suppress(RuntimeError):  # no running loop: failures of URLs wait for the next event
            self._loop = asyncio.get_running_loop()

    def tell(self, notices: list[Notice]) -> None:
        """Write each notice's escapes to the terminal and queue it for the URLs."""
        self._find_loop()
        for notice in notices:
            escapes = terminal_escapes(notice, self.settings)
            if escapes and self.write is not None:
                try:
                    self.write(escapes)
                except (OSError, ValueError):  # the terminal went away: no more escapes
                    self.write = None
            if self.urls is not None and notice.kind in self.settings.on:
                self.urls.send(notice, self._report_from_thread)

    def _report_from_thread(self, text: str) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to read it
                loop.call_soon_threadsafe(self._report, text)
                return
        self._pending_reports.append(text)

    def _report(self, text: str) -> None:
        if self.bus is not None:
            self.bus.publish(LogLine(time.time(), Level.WARNING, text))

    def _flush_reports(self) -> None:
        reports, self._pending_reports = self._pending_reports, []
        for text in reports:
            self._report(text)

    def close(self) -> None:
        """Wait for queued URL notices, then release the terminal."""
        if self.urls is not None:
            self.urls.close()
        if self._loop is None:  # used without a loop: the failures are told now
            self._flush_reports()
        if self._terminal is not None and self._terminal is not sys.stderr:
            with contextlib.suppress(OSError):
                self._terminal.close()
        self._terminal = None
