"""Headless progress: a line every `progress_interval` with counts, admission and an ETA; quota waits logged once
when they start and once when they end."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from pathlib import Path

import pytest
from gembatch.core.cli_args import resolve_settings
from gembatch.core.config import ConfigError, load_settings
from gembatch.core.events import (
    AdmissionFigures,
    BatchChanged,
    EventBus,
    LogLine,
    Quota,
    RunFinished,
    Wait,
)
from gembatch.core.headless import run_engine_headless
from gembatch.core.model import BatchRecord, Stage
from gembatch.core.progress_report import ProgressReport, count_batches, utc_stamp

from .conftest import FAKE_KEY, write_batch_files
from .engine.helpers import engine_settings

T0 = 1_790_000_000.0


def figures(cool_until: float | None = None) -> AdmissionFigures:
    return AdmissionFigures(jobs_in_flight=1, max_jobs=100, tokens_enqueued=212_000, token_budget=250_000,
                            creates_last_minute=1, creates_per_minute=None, cool_down_until=cool_until,
                            cool_down_quota=Quota.ENQUEUED_TOKENS if cool_until else None, rate_limited_total=0)


class FakeAdmission:
    def __init__(self) -> None:
        self.now_figures = figures()

    def figures(self, now: float) -> AdmissionFigures:
        return self.now_figures


class FakeEngine:
    """What the report reads: records, admission, pause, the bus."""

    def __init__(self, stages: list[Stage]) -> None:
        self.bus = EventBus()
        self.paused = False
        self.admission = FakeAdmission()
        self.records = {f"b{i}": BatchRecord(batch_id=f"b{i}", source=f"in/b{i}.jsonl", stage=stage, request_count=10,
                                             succeeded_count=10 if stage is Stage.DOWNLOADED else 0)
                        for i, stage in enumerate(stages, 1)}
        self.lines: list[str] = []
        self.bus.subscribe(lambda e: self.lines.append(e.message) if isinstance(e, LogLine) else None)

    def change(self, at: float, batch_id: str, stage: Stage, reason: str | None = None) -> None:
        rec = self.records[batch_id]
        rec.stage = stage
        rec.wait_reason = reason
        if stage is Stage.DOWNLOADED:
            rec.succeeded_count = rec.request_count
        self.bus.publish(BatchChanged(at, rec.copy()))

    def publish_all(self, at: float) -> None:
        for rec in self.records.values():
            self.bus.publish(BatchChanged(at, rec.copy()))


def reporting(stages: list[Stage], interval: float = 60.0) -> tuple[FakeEngine, ProgressReport]:
    engine = FakeEngine(stages)
    report = ProgressReport(engine, interval, clock=lambda: T0)
    engine.bus.subscribe(report)
    return engine, report


def test_the_line_counts_batches_and_requests_and_has_no_eta_before_a_batch_finished() -> None:
    engine, report = reporting([Stage.DOWNLOADED, Stage.DOWNLOADED, Stage.RUNNING, Stage.UPLOADED, Stage.UPLOADED,
                                Stage.VALIDATED, Stage.FAILED])
    engine.publish_all(T0)  # a resumed run: the two downloaded files are not progress of this run
    line = report.line(T0 + 60)
    assert line.startswith("progress: batches 3/7 done (2 ok, 1 ended badly, 0 skipped), 1 in flight, "
                           "0 downloading, 2 uploaded not created, 1 not uploaded yet; requests 20/70 answered")
    assert line.endswith("ETA unknown (no batch has finished in this run yet)")


def test_the_eta_follows_the_rate_of_requests_finished_in_this_run() -> None:
    engine, report = reporting([Stage.DOWNLOADED, Stage.RUNNING, Stage.UPLOADED, Stage.UPLOADED, Stage.VALIDATED])
    engine.publish_all(T0)
    engine.change(T0 + 60, "b2", Stage.DOWNLOADED)  # 10 requests in 60 s; 30 left: 180 s more
    line = report.line(T0 + 60)
    assert line.endswith(f"ETA {utc_stamp(T0 + 240)} (in 3m00s, from 1 batches finished in 1m00s)")
    assert "batches 2/5 done (2 ok" in line


def test_a_wait_on_the_token_budget_is_logged_once_when_it_starts_and_once_when_it_ends() -> None:
    engine, report = reporting([Stage.UPLOADED, Stage.UPLOADED, Stage.UPLOADED, Stage.VALIDATED])
    engine.publish_all(T0)
    for batch_id in ("b1", "b2", "b3"):
        engine.change(T0 + 1, batch_id, Stage.UPLOADED, "token budget 212k/250k + 10k")
    for batch_id in ("b1", "b2", "b3"):  # the figures move: the same wait, not a new one
        engine.change(T0 + 5, batch_id, Stage.UPLOADED, "token budget 215k/250k + 10k")
    engine.change(T0 + 6, "b4", Stage.UPLOADED)  # a new upload joins the queue before the creator marks it
    assert "admission: waiting for the enqueued-token budget (token budget 212k/250k + 10k) since " \
           f"{utc_stamp(T0 + 1)}, until a job of ours ends" in report.line(T0 + 7)
    for batch_id in ("b1", "b2", "b3"):  # a job ended: creates go again
        engine.change(T0 + 31, batch_id, Stage.UPLOADED, None)
    engine.change(T0 + 31, "b1", Stage.CREATING)
    waits = [line for line in engine.lines if "wait" in line]
    assert waits == [
        "waiting for the enqueued-token budget (token budget 212k/250k + 10k) until a job of ours ends",
        "wait for the enqueued-token budget over after 30s",
    ]


def test_a_change_of_quota_ends_one_wait_and_starts_the_next_with_its_deadline() -> None:
    engine, _ = reporting([Stage.UPLOADED, Stage.UPLOADED])
    engine.publish_all(T0)
    engine.change(T0, "b1", Stage.UPLOADED, "concurrent cap 5/5")
    engine.admission.now_figures = dataclasses.replace(
        figures(), wait=Wait("limit", Quota.CREATES_PER_MINUTE, used=5, limit=5, until=T0 + 42))
    engine.change(T0 + 10, "b1", Stage.UPLOADED, "creates/min 5/5")
    engine.change(T0 + 10, "b2", Stage.UPLOADED, "creates/min 5/5")
    engine.change(T0 + 12, "b1", Stage.UPLOADED, "paused")  # announced by the engine itself: not a quota wait
    engine.change(T0 + 12, "b2", Stage.UPLOADED, "paused")
    assert [line for line in engine.lines if "wait" in line] == [
        "waiting for the concurrent-jobs cap (concurrent cap 5/5) until a job of ours ends",
        "wait for the concurrent-jobs cap over after 10s",
        f"waiting for the creates-per-minute limit (creates/min 5/5) until about {utc_stamp(T0 + 42)}",
        "wait for the creates-per-minute limit over after 2s",
    ]


def test_a_cool_down_and_a_pause_show_in_the_line() -> None:
    engine, report = reporting([Stage.UPLOADED])
    engine.publish_all(T0)
    engine.admission.now_figures = figures(cool_until=T0 + 90)
    assert f"admission: cooling down after a 429 (enqueued-tokens) until {utc_stamp(T0 + 90)}" in report.line(T0)
    engine.paused = True
    assert "admission: paused" in report.line(T0)


async def test_lines_come_every_interval_from_the_first_event_until_the_run_finishes() -> None:
    engine, _ = reporting([Stage.RUNNING, Stage.UPLOADED], interval=0.05)
    engine.publish_all(T0)
    await asyncio.sleep(0.32)
    count = sum(line.startswith("progress: ") for line in engine.lines)
    assert 2 <= count <= 7  # one every 0.05 s; a busy machine may fire a late one
    engine.bus.publish(RunFinished(T0, 75, {}))
    await asyncio.sleep(0.2)
    assert sum(line.startswith("progress: ") for line in engine.lines) == count


def test_counts_of_an_empty_run_leave_work() -> None:
    assert count_batches([]).work_left  # nothing found yet is not "every batch ended"


def test_the_interval_is_a_setting_and_a_flag(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    config = tmp_path / "config.toml"
    config.write_text("progress_interval = 15\n")
    assert load_settings(config).progress_interval == 15.0
    settings = resolve_settings(["--config", str(config), "--input", str(tmp_path / "in"), "--output",
                                 str(tmp_path / "out"), "--progress-interval", "5"])
    assert settings.progress_interval == 5.0
    config.write_text("progress_interval = 0\n")
    with pytest.raises(ConfigError, match="progress_interval"):
        load_settings(config)


async def test_a_headless_run_under_a_token_budget_logs_progress_and_each_wait(tmp_path: Path, emulator) -> None:
    paths = write_batch_files(tmp_path / "in", files=6, requests=4, pad=10)
    one_job = sum(-(-len(line) // 4) for line in paths[0].read_bytes().splitlines() if line.strip())
    emulator.settings.running_seconds = 0.8
    settings = engine_settings(tmp_path, emulator.base_url, token_budget=int(one_job * 2.5), progress_interval=0.3)
    stream = io.StringIO()
    code = await asyncio.wait_for(run_engine_headless(settings, FAKE_KEY, stream), 90)
    text = stream.getvalue()
    assert code == 0, text
    assert not [e for e in emulator.journal() if e.status == 429]  # the waits were ours, not the server's
    started = text.count("INFO    waiting for the enqueued-token budget (token budget ")
    ended = text.count("INFO    wait for the enqueued-token budget over after ")
    assert started >= 1 and started == ended, text
    progress = [line for line in text.splitlines() if " progress: batches " in line]
    assert len(progress) >= 2, text
    assert any(" ETA 20" in line for line in progress), text  # a time once batches have finished
    assert FAKE_KEY not in text


