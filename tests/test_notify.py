"""Notices when something needs a person: derived from engine events, written as terminal escapes, sent to
apprise URLs (a local HTTP server on 127.0.0.1 stands in for the services)."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from gembatch.core import notify
from gembatch.core.config import ConfigError, NotifySettings, load_settings
from gembatch.core.events import (
    AdmissionChanged,
    AdmissionFigures,
    BatchChanged,
    CoolDownStarted,
    EventBus,
    LogLine,
    RunFinished,
)
from gembatch.core.exit_codes import EXIT_INCOMPLETE
from gembatch.core.headless import build_engine, run_headless
from gembatch.core.model import BatchRecord, Stage
from gembatch.core.notify import Notice, NoticeFinder, NoticeKind, Notifier, open_terminal, terminal_escapes
from gembatch.tui.app import MonitorApp

from .conftest import FAKE_KEY, write_batch_files
from .engine.helpers import engine_settings, run_engine


def rec(batch_id: str = "a", stage: Stage = Stage.UPLOADED, **values: object) -> BatchRecord:
    return BatchRecord(batch_id=batch_id, source=f"/in/{batch_id}.jsonl", stage=stage, **values)  # type: ignore[arg-type]


def changed(record: BatchRecord, at: float = 1.0) -> BatchChanged:
    return BatchChanged(at, record)


def figures(cool_down_until: float | None) -> AdmissionFigures:
    return AdmissionFigures(0, 100, 0, None, 0, None, cool_down_until, None, 0)


# ---- notices derived from events ------------------------------------------------------------------------


def test_a_failure_with_attempts_left_is_not_told_but_a_final_one_is_once() -> None:
    finder = NoticeFinder()
    finder.observe(changed(rec(stage=Stage.RUNNING, attempt=1)))
    # the engine publishes the failed job, then at once requeues the batch as its next attempt
    finder.observe(changed(rec(stage=Stage.FAILED, attempt=1)))
    finder.observe(changed(rec(stage=Stage.UPLOADED, attempt=2)))
    assert finder.settle() == []

    finder.observe(changed(rec(stage=Stage.RUNNING, attempt=3)))
    finder.observe(changed(rec(stage=Stage.FAILED, attempt=3, last_error="quota")))
    finder.observe(changed(rec(stage=Stage.FAILED, attempt=3, last_error="quota")))  # the same state again
    notices = finder.settle()
    assert notices == [Notice(NoticeKind.FAILED, "a failed for good: quota")]
    finder.observe(changed(rec(stage=Stage.FAILED, attempt=3)))
    assert finder.settle() == []


def test_a_stuck_job_cancelled_to_be_resubmitted_is_not_a_failure() -> None:
    finder = NoticeFinder()
    finder.observe(changed(rec(stage=Stage.RUNNING)))
    finder.observe(changed(rec(stage=Stage.CANCELLED, resubmit_pending=True)))
    assert finder.settle() == []


def test_what_a_resumed_run_starts_from_is_not_told_again() -> None:
    finder = NoticeFinder()
    assert finder.observe(changed(rec("f", Stage.FAILED, attempt=3))) == []
    assert finder.observe(changed(rec("s", Stage.RUNNING, stuck_since=5.0, job_name="batches/1"))) == []
    assert finder.settle() == []


def test_a_job_flagged_stuck_is_told_once() -> None:
    finder = NoticeFinder()
    finder.observe(changed(rec(stage=Stage.RUNNING, job_name="batches/9")))
    first = finder.observe(changed(rec(stage=Stage.RUNNING, job_name="batches/9", stuck_since=100.0)))
    again = finder.observe(changed(rec(stage=Stage.RUNNING, job_name="batches/9", stuck_since=100.0)))
    assert first == [Notice(NoticeKind.STUCK, "a: batches/9 looks stuck (running)")]
    assert again == []


def test_uploads_that_expire_before_the_cool_down_ends_are_told_together_once() -> None:
    finder = NoticeFinder()
    finder.observe(changed(rec("a", upload_name="files/a", upload_expires_at=1_000.0)))
    finder.observe(changed(rec("b", upload_name="files/b", upload_expires_at=1_500.0)))
    finder.observe(changed(rec("c", upload_name="files/c", upload_expires_at=9_000.0)))  # outlives the wait
    finder.observe(changed(rec("d", Stage.RUNNING, upload_name="files/d", upload_expires_at=1_000.0)))  # created
    assert finder.observe(AdmissionChanged(1.0, figures(None))) == []

    notices = finder.observe(AdmissionChanged(2.0, figures(2_000.0)))
    assert notices == [Notice(NoticeKind.UPLOAD_EXPIRY_RISK, "2 upload(s) expire before the quota wait ends: a, b")]
    assert finder.observe(AdmissionChanged(3.0, figures(2_000.0))) == []
    # a fresh upload of the same batch is a new risk
    again = finder.observe(changed(rec("a", upload_name="files/a2", upload_expires_at=1_200.0)))
    assert [n.kind for n in again] == [NoticeKind.UPLOAD_EXPIRY_RISK]


def test_the_run_finished_is_told_once_and_not_when_stopped_with_work_left() -> None:
    finder = NoticeFinder()
    assert finder.observe(RunFinished(1.0, 75, {"downloaded": 1, "running": 2})) == []
    notices = finder.observe(RunFinished(2.0, 3, {"downloaded": 4, "failed": 1}))
    assert notices == [Notice(NoticeKind.FINISHED, "run finished: 4 downloaded, 1 failed (exit code 3)")]
    assert finder.observe(RunFinished(3.0, 3, {"downloaded": 4, "failed": 1})) == []


# ---- terminal escapes -----------------------------------------------------------------------------------


def test_by_default_only_the_finish_rings_the_bell_and_no_desktop_escape_goes_out() -> None:
    settings = NotifySettings()
    assert terminal_escapes(Notice(NoticeKind.FINISHED, "done"), settings) == "\x07"
    for kind in (NoticeKind.FAILED, NoticeKind.STUCK, NoticeKind.UPLOAD_EXPIRY_RISK):
        assert terminal_escapes(Notice(kind, "x"), settings) == ""


def test_desktop_notices_are_osc_9_and_osc_777_with_control_characters_removed() -> None:
    settings = NotifySettings(desktop=True, bell_on=[])
    text = terminal_escapes(Notice(NoticeKind.FAILED, "b1 failed\x07\x1b]9;evil\x07 now"), settings)
    body = "b1 failed ]9;evil  now"
    assert text == f"\x1b]9;gembatch-tui: {body}\x07\x1b]777;notify;gembatch-tui;{body}\x07"
    assert terminal_escapes(Notice(NoticeKind.FAILED, "x"), NotifySettings(desktop=True, on=["finished"])) == ""


def test_escapes_go_nowhere_when_neither_stdout_nor_stderr_is_a_terminal(monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert open_terminal("auto") is None
    assert open_terminal("off") is None


def test_always_writes_to_the_controlling_terminal(monkeypatch, tmp_path: Path) -> None:
    tty = tmp_path / "tty"
    tty.touch()
    monkeypatch.setattr(notify.os, "ctermid", lambda: str(tty))
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    notifier = Notifier.to_terminal(NotifySettings(terminal="always", desktop=True))
    notifier(RunFinished(1.0, 0, {"downloaded": 2}))
    notifier.close()
    text = tty.read_text()
    assert text.startswith("\x1b]9;gembatch-tui: run finished: 2 downloaded (exit code 0)\x07")
    assert text.endswith("\x07\x07")  # OSC 777's terminator, then the bell


async def test_a_run_against_the_emulator_tells_one_final_failure_and_the_finish(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=1, requests=3)
    emulator.fail_next_jobs(3)
    settings = engine_settings(tmp_path, emulator.base_url, max_attempts=3)
    written: list[str] = []
    notifier = Notifier(NotifySettings(desktop=True, bell_on=[]), written.append)

    code, _, _ = await run_engine(settings, hooks=(notifier,))
    await asyncio.sleep(0)

    assert code == EXIT_INCOMPLETE
    told = [text.split("\x07")[0].removeprefix("\x1b]9;gembatch-tui: ") for text in written]
    assert len(told) == 2, told
    (batch_id,) = [path.stem for path in (tmp_path / "in").glob("*.jsonl")]
    assert told[0].startswith(f"{batch_id} failed for good: ")
    assert told[1] == "run finished: 1 failed (exit code 3)"


async def test_a_stuck_job_resubmitted_is_told_as_stuck_and_never_as_failed(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=1, requests=3)
    emulator.settings.running_seconds = 2.5
    settings = engine_settings(tmp_path, emulator.base_url, stuck_after_hours=1 / 3600, stuck_action="resubmit")
    told: list[Notice] = []
    notifier = Notifier(NotifySettings(), None)
    notifier.tell = told.extend  # type: ignore[method-assign]

    code, engine, _ = await run_engine(settings, hooks=(notifier,))
    await asyncio.sleep(0)

    assert code == 0
    (rec,) = engine.records.values()
    assert rec.stuck_resubmits == 1  # its stuck job was cancelled and submitted once more
    # the first job, then the one submitted in its place (it runs as long): each told once, neither as failed
    assert [notice.kind for notice in told] == [NoticeKind.STUCK, NoticeKind.STUCK, NoticeKind.FINISHED]
    assert told[0].text.startswith(f"{rec.batch_id}: batches/") and told[0].text != told[1].text


async def test_a_cool_down_longer_than_the_uploads_live_is_told_once(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=3, requests=3)
    emulator.settings.file_ttl_seconds = 3.0  # uploads live 3 s here; the service gives 48 h
    emulator.settings.max_concurrent_jobs = 1
    emulator.settings.running_seconds = 1.0
    settings = engine_settings(tmp_path, emulator.base_url, cool_down_seconds=5.0, cool_down_max_seconds=5.0)
    told: list[Notice] = []
    notifier = Notifier(NotifySettings(), None)
    notifier.tell = told.extend  # type: ignore[method-assign]

    code, _, recorder = await run_engine(settings, hooks=(notifier,), timeout=90)

    assert code == 0
    risks = [notice for notice in told if notice.kind is NoticeKind.UPLOAD_EXPIRY_RISK]
    assert risks, told
    named = [name for notice in risks for name in notice.text.partition(": ")[2].split(", ")]
    assert named and set(named) <= {"part_001", "part_002", "part_003"}
    uploads = sum(1 for e in emulator.journal() if e.kind == "upload.start")
    assert len(named) <= uploads - 1  # each upload told once at most; the first one's job was created at once
    assert any(isinstance(e, CoolDownStarted) for e in recorder.events)


def test_a_headless_run_rings_the_bell_on_the_terminal_when_it_finishes(tmp_path: Path, emulator, monkeypatch) -> None:
    tty = tmp_path / "tty"
    tty.touch()
    monkeypatch.setattr(notify.os, "ctermid", lambda: str(tty))
    write_batch_files(tmp_path / "in", files=2, requests=3)
    settings = engine_settings(tmp_path, emulator.base_url)
    settings.notify.terminal = "always"

    assert run_headless(settings, argv=[], api_key=FAKE_KEY) == 0
    assert tty.read_text() == "\x07"


async def test_inside_the_tui_the_escapes_go_through_the_app_driver(tmp_path: Path, emulator, capsys) -> None:
    write_batch_files(tmp_path / "in", files=2, requests=3)
    settings = engine_settings(tmp_path, emulator.base_url)
    app = MonitorApp(build_engine(settings, FAKE_KEY), settings, secrets=(FAKE_KEY,))
    Notifier(NotifySettings(desktop=True, on=["finished"]), app.write_escapes).attach(app.engine.bus)
    written: list[str] = []
    async with app.run_test(size=(120, 40)) as pilot:
        assert app._driver is not None
        app._driver.write = written.append  # type: ignore[method-assign]
        deadline = time.monotonic() + 30
        while app.engine_code is None and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert app.engine_code == 0
    assert written == ["\x1b]9;gembatch-tui: run finished: 2 downloaded (exit code 0)\x07"
                       "\x1b]777;notify;gembatch-tui;run finished: 2 downloaded (exit code 0)\x07\x07"]
    assert "\x07" not in capsys.readouterr().out


# ---- notification URLs through apprise ------------------------------------------------------------------


class Inbox(BaseHTTPRequestHandler):
    """Keeps the JSON body of each POST; answers with the server's `status`."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.server.bodies.append(json.loads(self.rfile.read(length)))  # type: ignore[attr-defined]
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def inbox() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Inbox)
    server.bodies = []  # type: ignore[attr-defined]
    server.status = 200  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def warnings_on(bus: EventBus) -> list[str]:
    lines: list[str] = []
    bus.subscribe(lambda event: lines.append(event.message) if isinstance(event, LogLine) else None)
    return lines


async def test_a_notice_goes_to_a_url_in_a_worker_thread(inbox: ThreadingHTTPServer) -> None:
    url = f"json://127.0.0.1:{inbox.server_address[1]}/hook"
    notifier = Notifier(NotifySettings(urls=[url], on=["finished"]), None).attach(EventBus())

    notifier.tell([Notice(NoticeKind.FINISHED, "run finished: 3 downloaded (exit code 0)"),
                   Notice(NoticeKind.STUCK, "not in `on`: not sent")])
    await asyncio.to_thread(notifier.close)

    assert [(b["title"], b["message"]) for b in inbox.bodies] == [  # type: ignore[attr-defined]
        ("gembatch-tui", "run finished: 3 downloaded (exit code 0)")]


async def test_a_failing_url_is_logged_once_and_never_shown(inbox: ThreadingHTTPServer) -> None:
    inbox.status = 500  # type: ignore[attr-defined]
    url = f"json://user:s3cr3t-token@127.0.0.1:{inbox.server_address[1]}/hook"
    bus = EventBus()
    lines = warnings_on(bus)
    notifier = Notifier(NotifySettings(urls=[url]), None).attach(bus)

    notifier.tell([Notice(NoticeKind.FAILED, "one"), Notice(NoticeKind.FAILED, "two")])
    await asyncio.to_thread(notifier.close)
    await asyncio.sleep(0.05)

    assert len(inbox.bodies) == 2  # type: ignore[attr-defined]
    assert len(lines) == 1, lines
    assert lines[0].startswith("notify URL #1 (json://…): sending a notice failed")
    assert "s3cr3t" not in lines[0] and "127.0.0.1" not in lines[0]


def test_a_url_apprise_does_not_understand_is_reported_without_its_text() -> None:
    bus = EventBus()
    lines = warnings_on(bus)
    notifier = Notifier(NotifySettings(urls=["nosuchscheme://token-xyz@host"]), None).attach(bus)
    notifier.close()
    assert lines == ["notify URL #1 (nosuchscheme://…): apprise does not understand it; no notices go there"]


# ---- the [notify] table -----------------------------------------------------------------------------------


def test_the_notify_table_is_read_and_a_bad_kind_names_file_line_and_item(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[notify]\ndesktop = true\non = ["finished"]\nurls = ["ntfy://topic"]\n', encoding="utf-8")
    settings = load_settings(config)
    assert settings.notify.desktop is True
    assert settings.notify.on == ["finished"] and settings.notify.urls == ["ntfy://topic"]
    assert settings.notify.bell_on == ["finished"]

    config.write_text('[notify]\n\nbell_on = ["finished", "done"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config\.toml:3: notify\.bell_on: item 2: expected one of .*got 'done'"):
        load_settings(config)
