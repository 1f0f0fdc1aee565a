"""On leaving a run: a summary on stdout (jobs on the server, uploads waiting, counts, the command that resumes)
and a rotated log file beside the checkpoint with the lines headless prints, never a secret."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from pathlib import Path

from gembatch.core.config import Settings
from gembatch.core.events import BatchChanged, Event, Level, LogLine
from gembatch.core.headless import run_engine_headless
from gembatch.core.leaving_summary import leaving_summary, resume_command
from gembatch.core.model import BatchRecord, Stage
from gembatch.core.progress_report import utc_stamp
from gembatch.core.run_log import RunLogFile, log_file_path
from gembatch.tui import app as app_module
from gembatch.tui.app import MonitorApp

from .conftest import FAKE_KEY, write_batch_files
from .engine.helpers import engine_settings

T0 = 1_790_000_000.0


def test_the_log_file_sits_beside_the_checkpoint() -> None:
    assert log_file_path(Path("out/gembatch.checkpoint.json")) == Path("out/gembatch.log")
    assert log_file_path(Path("/r/run.checkpoint.toml")) == Path("/r/run.log")
    assert log_file_path(Path("state.json")) == Path("state.log")


def test_the_resume_command_keeps_the_flags_makes_paths_absolute_and_drops_one_off_flags(monkeypatch) -> None:
    monkeypatch.delenv("GEMBATCH_CONFIG", raising=False)
    settings = Settings(input_dir=Path("in"), output_dir=Path("out"))
    argv = ["--input", "in", "--output=out", "--checkpoint", "../state/run.json", "--base-url",
            "http://127.0.0.1:8765", "--config", "cfg.toml", "--headless", "--rebuild-from-server",
            "--poll-interval", "5"]
    command = resume_command(settings, argv, cwd=Path("/home/u/work"))
    assert command == ("gembatch-tui --input /home/u/work/in --output /home/u/work/out --checkpoint "
                       "/home/u/state/run.json --base-url http://127.0.0.1:8765 --config /home/u/work/cfg.toml "
                       "--headless --poll-interval 5")


def test_the_resume_command_names_a_config_that_came_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("GEMBATCH_CONFIG", "/etc/gembatch.toml")
    settings = Settings(input_dir=Path("in"), output_dir=Path("out"), config_path=Path("/etc/gembatch.toml"))
    command = resume_command(settings, ["--input", "in", "--output", "out"], cwd=Path("/w"))
    assert command == "gembatch-tui --input /w/in --output /w/out --config /etc/gembatch.toml"


def test_the_summary_lists_jobs_on_the_server_uploads_and_their_expiry() -> None:
    settings = Settings(input_dir=Path("/w/in"), output_dir=Path("/w/out"))
    records = [
        BatchRecord("a", "/w/in/a.jsonl", stage=Stage.DOWNLOADED, request_count=5, succeeded_count=5),
        BatchRecord("b", "/w/in/b.jsonl", stage=Stage.RUNNING, request_count=5, job_name="batches/job-b",
                    job_state="JOB_STATE_RUNNING"),
        BatchRecord("c", "/w/in/c.jsonl", stage=Stage.UPLOADED, request_count=5, upload_name="files/up-c",
                    upload_expires_at=T0 + 47 * 3600),
        BatchRecord("d", "/w/in/d.jsonl", stage=Stage.CREATING, display_name="gembatch-r1-d-abc-a1"),
        BatchRecord("e", "/w/in/e.jsonl", stage=Stage.FAILED, last_error=f"bad thing with key={FAKE_KEY}"),
    ]
    text = leaving_summary(records, settings, 130, now=T0, argv=["--input", "/w/in", "--output", "/w/out"],
                           log_path=Path("/w/out/gembatch.log"))
    lines = text.splitlines()
    assert lines[0] == "gembatch-tui: stopped with work left (exit code 130); the checkpoint is saved."
    assert "  batches: 5 (1 uploaded, 1 creating, 1 running, 1 downloaded, 1 failed)" in lines
    assert "    b  batches/job-b  JOB_STATE_RUNNING" in lines
    assert f"    c  files/up-c  expires {utc_stamp(T0 + 47 * 3600)} (in 47h00m)" in lines
    assert "    d  gembatch-r1-d-abc-a1" in lines
    assert "  log: /w/out/gembatch.log" in lines
    assert "  resume: gembatch-tui --input /w/in --output /w/out" in lines
    assert "  requests answered: 5 of 15" in lines
    assert FAKE_KEY not in text and "[redacted]" in text


def test_a_finished_run_has_no_resume_line() -> None:
    settings = Settings(input_dir=Path("/w/in"), output_dir=Path("/w/out"))
    records = [BatchRecord("a", "/w/in/a.jsonl", stage=Stage.DOWNLOADED)]
    text = leaving_summary(records, settings, 0, now=T0)
    assert text.startswith("gembatch-tui: finished (exit code 0): every file's results are saved.")
    assert "resume:" not in text


def test_the_log_file_rotates_and_never_holds_a_secret(tmp_path: Path) -> None:
    log = RunLogFile(tmp_path / "gembatch.log", secrets=("other-secret-value",), max_bytes=2000, backups=2)
    for n in range(200):
        log.write(f"line {n:04d} key={FAKE_KEY} other=other-secret-value\n")
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["gembatch.log", "gembatch.log.1", "gembatch.log.2"]
    text = "".join((tmp_path / name).read_text() for name in files)
    assert "line 0199" in (tmp_path / "gembatch.log").read_text()
    assert FAKE_KEY not in text and "other-secret-value" not in text
    assert all(path.stat().st_size <= 2100 for path in tmp_path.iterdir())


def test_an_unwritable_log_file_is_given_up_quietly(tmp_path: Path, capsys) -> None:
    log = RunLogFile(tmp_path / "no-such-folder" / "gembatch.log")
    log.write("a line\n")
    assert log.error is not None and "no-such-folder" in log.error
    assert capsys.readouterr().err == ""


def _stop_after_jobs(count: int):
    seen: set[str] = set()

    def hook(event: Event) -> None:
        if isinstance(event, BatchChanged) and event.record.stage is Stage.PENDING:
            seen.add(event.record.batch_id)
            if len(seen) == count:
                os.kill(os.getpid(), signal.SIGINT)  # the run's own handler takes it, as a user's Ctrl-C

    return hook


async def test_a_headless_run_stopped_mid_way_prints_the_summary_and_keeps_the_log(tmp_path: Path, emulator,
                                                                                  monkeypatch) -> None:
    write_batch_files(tmp_path / "in", files=6, requests=3)
    emulator.settings.running_seconds = 30.0
    emulator.settings.max_concurrent_jobs = 2  # two jobs run, the rest wait uploaded (and one meets a 429)
    settings = engine_settings(tmp_path, emulator.base_url, upload_ahead=3)
    stream, summary = io.StringIO(), io.StringIO()
    from gembatch.core import headless

    real_build = headless.build_engine

    def build(*args, **kwargs):
        engine = real_build(*args, **kwargs)
        engine.bus.subscribe(_stop_after_jobs(2))
        engine.bus.publish(LogLine(T0, Level.INFO, f"a line holding the key {FAKE_KEY}"))
        return engine

    monkeypatch.setattr(headless, "build_engine", build)
    argv = ["--headless", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--checkpoint",
            str(settings.checkpoint_path()), "--base-url", emulator.base_url]
    code = await asyncio.wait_for(run_engine_headless(settings, FAKE_KEY, stream, argv=argv, summary=summary), 60)
    assert code == 130, stream.getvalue()
    text = summary.getvalue()
    jobs = {job["name"] for job in emulator.jobs()}
    assert len(jobs) == 2
    assert text.startswith("gembatch-tui: stopped with work left (exit code 130); the checkpoint is saved.\n")
    assert all(f"  {name}  JOB_STATE_" in text for name in jobs), text
    assert "uploads waiting for their job" in text and " expires 20" in text, text
    assert (f"  resume: gembatch-tui --headless --input {tmp_path / 'in'} --output {tmp_path / 'out'} --checkpoint "
            f"{settings.checkpoint_path()} --base-url {emulator.base_url}\n") in text
    log_path = tmp_path / "out" / "run.log"  # beside run.checkpoint.json
    assert f"  log: {log_path}" in text
    logged = log_path.read_text()
    printed = [line for line in stream.getvalue().splitlines() if line[:4].isdigit()]
    assert printed and all(line in logged for line in printed)  # the same lines as the terminal
    assert logged.rstrip().endswith("stopped by SIGINT with work left: exit code 130; " + printed[-1].split("; ")[1]
                                    + "; the same command resumes")
    assert FAKE_KEY not in logged and FAKE_KEY not in text and FAKE_KEY not in stream.getvalue()


def test_the_ui_writes_the_log_file_and_prints_the_summary(tmp_path: Path, emulator, monkeypatch, capsys) -> None:
    write_batch_files(tmp_path / "in", files=2, requests=3)
    settings = engine_settings(tmp_path, emulator.base_url, progress_interval=0.05)

    def fake_run(self: MonitorApp, **kwargs) -> int:  # the engine runs as in the app, without a terminal
        async def go() -> None:
            self.engine.store.acquire_lock()
            try:
                await self.engine.run()
                await asyncio.sleep(0)
            finally:
                self.engine.store.release_lock()
                await self.engine.gateway.aclose()

        asyncio.run(go())
        return 0

    monkeypatch.setattr(MonitorApp, "run", fake_run)
    assert app_module.run_app(settings, FAKE_KEY, argv=["--input", "in"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gembatch-tui: finished (exit code 0): every file's results are saved.")
    logged = (tmp_path / "out" / "run.log").read_text()
    assert "gembatch-tui started (pid" in logged and "UI)" in logged
    assert "part_001: results saved" in logged
    assert logged.rstrip().endswith("finished with exit code 0: downloaded 2")


def test_a_read_only_ui_writes_no_log_file(tmp_path: Path, monkeypatch, capsys) -> None:
    settings = Settings(input_dir=tmp_path, output_dir=tmp_path / "out", read_only=True)

    def fake_run(self: MonitorApp, **kwargs) -> int:
        self.read_only = "--read-only"
        self.engine.bus.publish(LogLine(T0, Level.INFO, "a line the watcher saw"))
        return 0

    monkeypatch.setattr(MonitorApp, "run", fake_run)
    assert app_module.run_app(settings, "read-only-no-calls") == 0
    assert not (tmp_path / "out" / "gembatch.log").exists()
    assert capsys.readouterr().out == ""
