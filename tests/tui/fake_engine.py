"""A stand-in with the engine's surface and fixed records, for snapshots and measurements (no API, no files)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from gembatch.core.events import (
    AdmissionChanged,
    AdmissionFigures,
    BatchChanged,
    CoolDownStarted,
    EventBus,
    Level,
    LogLine,
    PauseChanged,
    Quota,
    RunFinished,
)
from gembatch.core.model import BatchRecord, HistoryEntry, Stage

NOW = 1_750_000_000.0  # a fixed "now" (2025-06-15 15:06:40 UTC) for frozen-clock snapshots


def frozen_clock() -> float:
    """The clock of every snapshot."""
    return NOW


@dataclass
class FakeAdmission:
    """Returns fixed figures."""

    current: AdmissionFigures

    def figures(self, now: float) -> AdmissionFigures:
        return self.current


@dataclass
class FakeStore:
    """A checkpoint store that only counts lock calls; `refuse` makes the lock look held by another, `holder`
    is who the lock names when probed (None: nobody holds it)."""

    path: Path = Path("/tmp/fake.checkpoint.json")
    refuse: Exception | None = None
    holder: object = None
    locked: int = 0
    released: int = 0
    probes: int = 0

    def read_holder(self) -> object:
        self.probes += 1
        return self.holder

    def acquire_lock(self) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.locked += 1

    def release_lock(self) -> None:
        self.released += 1


class FakeGateway:
    """Nothing to close."""

    closed = False

    async def aclose(self) -> None:
        self.closed = True


def record(index: int, stage: Stage, *, now: float = NOW, requests: int = 100) -> BatchRecord:
    """A plausible record for batch number `index` in `stage`."""
    rec = BatchRecord(batch_id=f"qa_part_{index:03d}", source=f"/data/in/qa_part_{index:03d}.jsonl",
                      size_bytes=40_000 + index, sha256=f"{index:064x}", request_count=requests,
                      est_tokens=11_000)
    rec.stage = stage
    history = [(Stage.VALIDATED, f"validated: {requests} requests")]
    if stage not in (Stage.NEW, Stage.VALIDATED, Stage.REJECTED, Stage.SKIPPED):
        rec.upload_name = f"files/up{index:05d}"
        rec.upload_expires_at = now + 47 * 3600 + index * 60
        history.append((Stage.UPLOADED, f"uploaded as {rec.upload_name}"))
    if stage in (Stage.PENDING, Stage.RUNNING, Stage.SUCCEEDED, Stage.DOWNLOADED, Stage.FAILED, Stage.CANCELLED):
        rec.display_name = f"gembatch-r1-qa_part_{index:03d}-abcd-1"
        rec.job_name = f"batches/job{index:05d}"
        history.append((Stage.PENDING, f"job {rec.job_name} created"))
    if stage is Stage.RUNNING:
        rec.succeeded_count = requests // 2
        rec.job_state = "JOB_STATE_RUNNING"
    if stage in (Stage.SUCCEEDED, Stage.DOWNLOADED):
        rec.succeeded_count, rec.failed_count = requests - 1, 1
        rec.job_state = "JOB_STATE_SUCCEEDED"
    if stage is Stage.FAILED:
        rec.last_error = "job ended JOB_STATE_FAILED: internal error in the batch pipeline"
        rec.attempt = 3
    if stage is Stage.REJECTED:
        rec.last_error = f"qa_part_{index:03d}.jsonl line 7: missing \"key\""
    if stage is Stage.UPLOADED:
        rec.wait_reason = "cool-down (enqueued-tokens)"
    history.append((stage, f"now {stage.value}"))
    for offset, (st, note) in enumerate(history):
        rec.history.append(HistoryEntry(now - 600 + offset * 60, st, note))
    rec.updated_at = now - 5
    return rec


def sample_records(now: float = NOW) -> list[BatchRecord]:
    """Twelve batches, one or more in each interesting stage."""
    stages = [Stage.DOWNLOADED, Stage.DOWNLOADED, Stage.DOWNLOADED, Stage.FAILED, Stage.RUNNING, Stage.RUNNING,
              Stage.PENDING, Stage.UPLOADED, Stage.UPLOADED, Stage.UPLOADING, Stage.VALIDATED, Stage.REJECTED]
    return [record(i, stage, now=now) for i, stage in enumerate(stages, 1)]


def sample_figures(now: float = NOW, cooling: bool = True) -> AdmissionFigures:
    """Figures with a cool-down 42 s from `now` (or none)."""
    return AdmissionFigures(jobs_in_flight=3, max_jobs=100, tokens_enqueued=33_000, token_budget=33_000,
                            creates_last_minute=4, creates_per_minute=None,
                            cool_down_until=now + 42 if cooling else None,
                            cool_down_quota=Quota.ENQUEUED_TOKENS if cooling else None,
                            rate_limited_total=2)


@dataclass
class FakeEngine:
    """The engine's surface (bus, records, commands, run) over fixed records."""

    records_list: list[BatchRecord] = field(default_factory=sample_records)
    figures: AdmissionFigures = field(default_factory=sample_figures)
    clock: object = frozen_clock
    logs: tuple[tuple[Level, str], ...] = (
        (Level.INFO, "new run r1; checkpoint /data/out/gembatch.checkpoint.json"),
        (Level.INFO, "qa_part_004: job batches/job00004 ended failed: internal error"),
        (Level.WARNING, "qa_part_008: rate-limited (enqueued-tokens); cooling down"),
        (Level.ERROR, "rejected qa_part_012.jsonl line 7: missing \"key\""),
    )
    settings: object = None
    exit_code: int = 3

    def __post_init__(self) -> None:
        self.bus = EventBus()
        self.records = {r.batch_id: r for r in self.records_list}
        self.paused = False
        self.started_at = self.clock() - 754
        self.admission = FakeAdmission(self.figures)
        self.store = FakeStore()
        self.gateway = FakeGateway()
        self.calls: list[tuple[str, str]] = []
        self._stop = asyncio.Event()
        self.stopping = False

    def publish_all(self) -> None:
        """Publish every record, the log lines, the figures and the cool-down, as a real engine would."""
        now = self.clock()
        for rec in self.records.values():
            self.bus.publish(BatchChanged(now, rec.copy()))
        for level, text in self.logs:
            self.bus.publish(LogLine(now, level, text))
        self.bus.publish(AdmissionChanged(now, self.figures))
        if self.figures.cool_down_until is not None:
            self.bus.publish(CoolDownStarted(now, self.figures.cool_down_quota or Quota.UNKNOWN,
                                             self.figures.cool_down_until))

    async def run(self) -> int:
        self.publish_all()
        await self._stop.wait()
        self.bus.publish(RunFinished(self.clock(), self.exit_code, {}))
        return self.exit_code

    def request_stop(self) -> None:
        self.stopping = True
        self._stop.set()

    def pause(self) -> None:
        self.calls.append(("pause", ""))
        if not self.paused:
            self.paused = True
            self.bus.publish(PauseChanged(self.clock(), True))

    def resume(self) -> None:
        self.calls.append(("resume", ""))
        if self.paused:
            self.paused = False
            self.bus.publish(PauseChanged(self.clock(), False))

    def retry(self, batch_id: str) -> bool:
        self.calls.append(("retry", batch_id))
        return self.records[batch_id].stage in (Stage.FAILED, Stage.CANCELLED, Stage.EXPIRED, Stage.SKIPPED)

    def skip(self, batch_id: str) -> bool:
        self.calls.append(("skip", batch_id))
        return self.records[batch_id].stage in (Stage.NEW, Stage.VALIDATED, Stage.UPLOADED)

    async def cancel(self, batch_id: str) -> bool:
        self.calls.append(("cancel", batch_id))
        return not self.records[batch_id].stage.ended


LONG_ERROR = ("job ended JOB_STATE_FAILED: 3 of 100 requests could not be parsed; the batch pipeline gave up "
              "after 3 attempts (INTERNAL, retryable)")


def job_id(index: int) -> str:
    """A job name as the service gives them: `batches/` and 36 characters (fixed, not random)."""
    return "batches/" + f"{index:04d}k3v9q2m7xw4p8t6r1n5b0c" + f"{index * 7919:010d}"[:10]


def long_records(count: int = 40, now: float = NOW) -> list[BatchRecord]:
    """`count` batches with long realistic names (`refinement_batch_142`), whole job ids, a long last error,
    and uploads that wait for the token budget."""
    cycle = [Stage.DOWNLOADED, Stage.RUNNING, Stage.FAILED, Stage.UPLOADED, Stage.PENDING, Stage.UPLOADED,
             Stage.DOWNLOADED, Stage.REJECTED, Stage.VALIDATED, Stage.DOWNLOADED]
    records = []
    for i in range(count):
        number = 137 + i
        rec = record(number, cycle[i % len(cycle)], now=now)
        name = f"refinement_batch_{number}"
        rec.batch_id, rec.source = name, f"/data/in/{name}.jsonl"
        if rec.job_name:
            rec.job_name = job_id(number)
        if rec.stage is Stage.FAILED:
            rec.last_error = LONG_ERROR
        if rec.stage is Stage.REJECTED:
            rec.last_error = f"{name}.jsonl line 7: missing \"key\""
        if rec.stage is Stage.UPLOADED:
            rec.upload_name = f"files/{number:04d}q8h2k5xv1z"
            rec.wait_reason = "token budget 212k/500k"
        records.append(rec)
    return records
