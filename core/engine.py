"""The submission engine: upload, create, poll and download every input file's batch job, resumably.

Never twice: an intent (display name) is on disk before every create; a create is sent once; an ambiguous
outcome is settled by finding our display name in the server's batch list. Never lost: every state change
is journaled to the checkpoint, and results are renamed into place only when their keys check out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from .admission import Admission, Decision
from .checkpoint import CheckpointStore, CheckpointWriteError, RunState
from .config import Settings
from .crash_points import crash_point
from .events import (
    AdmissionChanged,
    BatchChanged,
    CoolDownEnded,
    CoolDownStarted,
    EventBus,
    Level,
    LogLine,
    PauseChanged,
    Quota,
    RunFinished,
)
from .exit_codes import EXIT_INCOMPLETE, EXIT_OK, EXIT_OVER_COST_LIMIT
from .gateway import Ambiguous, Gateway, GatewayError, Permanent, RateLimited, RemoteJob, Transient
from .input_scan import Rejection, list_input_files, scan_file, stat_inputs
from .model import BatchRecord, Stage
from .naming import job_display_name, result_file_name, upload_display_name
from .poll_schedule import PollSchedule
from .rebuild import all_jobs
from .redact import redact
from .results import check_results, move_into_place
from .workflow.cost import check_cost_limit

log = logging.getLogger(__name__)



class RunRefused(Exception):
    """The run must not start (nothing was submitted); `exit_code` follows the CLI contract."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

_SERVER_END_STATES = {
    "JOB_STATE_SUCCEEDED": Stage.SUCCEEDED,
    "JOB_STATE_FAILED": Stage.FAILED,
    "JOB_STATE_CANCELLED": Stage.CANCELLED,
    "JOB_STATE_EXPIRED": Stage.EXPIRED,
}
_RETRYABLE_SERVER_ENDS = {Stage.FAILED, Stage.EXPIRED}
_TRANSIENT_PAUSE = 2.0  # seconds before the creator tries again after a create that never left
_DISK_PAUSE = 2.0  # seconds before trying again after the checkpoint could not be written (disk full, I/O)


class Engine:
    """Runs one checkpointed run over an input folder; the TUI and the headless runner drive it."""

    def __init__(
        self,
        settings: Settings,
        gateway: Gateway,
        store: CheckpointStore,
        *,
        bus: EventBus | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.store = store
        self.bus = bus or EventBus()
        self.clock = clock
        self.admission = Admission(settings.admission)
        self.state: RunState | None = None
        self.paused = False
        self.started_at = clock()
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._cooling: Quota | None = None
        self._reuploads: dict[str, int] = {}
        self._busy: set[str] = set()  # batch ids an upload or download task is working on
        self._side_tasks: set[asyncio.Task[None]] = set()  # e.g. keeping the partial results of an expired job
        self._result_missing_since: dict[str, float] = {}
        self._poll_schedule = PollSchedule(settings.poll_interval)
        self._ambiguous_since: dict[str, float] = {}
        # Records by stage, each in the order they reached it: every loop finds its work without a full scan.
        self._staged: dict[Stage, dict[str, BatchRecord]] = {stage: {} for stage in Stage}
        # Adopted uploads checked for jobs already made from them, and the one batch list walk that checks them.
        self._adopted_uploads_checked: set[str] = set()
        self._live_jobs_by_source: dict[str, list[RemoteJob]] | None = None
        gateway.on_retry = lambda text: self._log(Level.WARNING, f"retrying {text}")

    # ---- views for the UI ----------------------------------------------------------------------

    @property
    def records(self) -> dict[str, BatchRecord]:
        """Every batch of the run, in input order (read-only for callers)."""
        return self.state.records if self.state else {}

    @property
    def run_id(self) -> str:
        """The run's id, part of every display name."""
        return self.state.run_id if self.state else ""

    # ---- commands (the TUI's keys) -----------------------------------------------------------

    def pause(self) -> None:
        """No new uploads or creates; polling and downloads go on."""
        if not self.paused:
            self.paused = True
            self.bus.publish(PauseChanged(self.clock(), True))
            self._log(Level.INFO, "paused: no new uploads or creates")
            self._wake()

    def resume(self) -> None:
        """Uploads and creates go on."""
        if self.paused:
            self.paused = False
            self.bus.publish(PauseChanged(self.clock(), False))
            self._log(Level.INFO, "resumed")
            self._wake()

    def retry(self, batch_id: str) -> bool:
        """Submit an ended batch again as a new attempt; returns False when it cannot be retried now."""
        rec = self.records.get(batch_id)
        if rec is None or rec.stage not in (Stage.FAILED, Stage.CANCELLED, Stage.EXPIRED, Stage.SKIPPED):
            return False
        if rec.job_name is not None or rec.stage is not Stage.SKIPPED:
            rec.attempt += 1
        self._requeue(rec, "retry requested by the user")
        return True

    def skip(self, batch_id: str) -> bool:
        """Never submit this file (only before its job exists)."""
        rec = self.records.get(batch_id)
        if rec is None or rec.stage not in (Stage.NEW, Stage.VALIDATED, Stage.UPLOADED):
            return False
        self._set(rec, Stage.SKIPPED, "skipped by the user")
        return True

    async def cancel(self, batch_id: str) -> bool:
        """Cancel the batch: its job on the server if there is one, else it is just never created."""
        rec = self.records.get(batch_id)
        if rec is None or rec.stage.ended:
            return False
        if rec.stage in (Stage.PENDING, Stage.RUNNING) and rec.job_name:
            try:
                await self.gateway.cancel(rec.job_name)
            except GatewayError as exc:
                self._log(Level.ERROR, f"cancel of {rec.job_name} failed: {exc}", rec.batch_id)
                return False
            rec.last_error = "cancel requested"
            self._emit(rec, f"cancel of {rec.job_name} sent")
            return True
        if rec.stage is Stage.CREATING:
            self._log(Level.WARNING, "a create is in flight; cancel again once its job is known", batch_id)
            return False
        self._set(rec, Stage.CANCELLED, "cancelled by the user before its job was created")
        return True

    def request_stop(self) -> None:
        """Stop soon: finish the call in flight, save the checkpoint, return from `run`."""
        self._stop.set()
        self._wake()

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for."""
        return self._stop.is_set()

    # ---- run -----------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Load or start the checkpoint and bring it in line with the input folder."""
        if self.state is not None:
            return
        state = await asyncio.to_thread(self.store.load)
        if state is None:
            state = RunState(
                run_id=secrets.token_hex(4),
                created_at=self.clock(),
                model=self.settings.model,
                records={},
                learned={},
            )
            await asyncio.to_thread(self.store.create, state)
            self._log(Level.INFO, f"new run {state.run_id}; checkpoint {self.store.path}")
        else:
            self._log(Level.INFO, f"resuming run {state.run_id} from {self.store.path}")
        self.state = state
        self.admission = Admission(self.settings.admission, learned=dict(state.learned))
        await self._scan_inputs()
        not_created = (Stage.VALIDATED, Stage.UPLOADING, Stage.UPLOADED)
        unsubmitted = [r for r in self.records.values() if r.stage in not_created]
        refusal = check_cost_limit(self.settings, unsubmitted)
        if refusal is not None:
            self._log(Level.ERROR, refusal)
            raise RunRefused(refusal, EXIT_OVER_COST_LIMIT)
        for rec in self.records.values():
            self._staged[rec.stage][rec.batch_id] = rec
            if rec.stage.job_in_flight:
                self.admission.job_started(rec.batch_id, rec.est_tokens)
            self.bus.publish(BatchChanged(self.clock(), rec.copy()))
        self._publish_admission()

    async def _scan_inputs(self) -> None:
        assert self.state is not None and self.settings.input_dir is not None
        paths = await asyncio.to_thread(list_input_files, self.settings.input_dir)
        known = self.state.records
        # After a crash thousands of inputs may be VALIDATED: one thread hop stats them all, not one hop each.
        validated = [path for path in paths
                     if getattr(known.get(path.name[: -len(".jsonl")]), "stage", None) is Stage.VALIDATED]
        stats = await asyncio.to_thread(stat_inputs, validated)
        ordered: dict[str, BatchRecord] = {}
        for path in paths:
            batch_id = path.name[: -len(".jsonl")]
            rec = known.get(batch_id)
            if rec is not None and rec.stage not in (Stage.NEW, Stage.VALIDATED, Stage.REJECTED):
                ordered[batch_id] = rec  # its upload or job exists: never re-read it under us
                continue
            if rec is not None and rec.stage is Stage.VALIDATED and _same_file(rec, stats.get(path)):
                ordered[batch_id] = rec
                continue
            scanned = await asyncio.to_thread(scan_file, path, self.settings.tokens_per_byte)
            if rec is None:
                rec = BatchRecord(batch_id=batch_id, source=str(path))
            if isinstance(scanned, Rejection):
                rec.stage = Stage.REJECTED
                rec.last_error = str(scanned)
                rec.note(self.clock(), str(scanned))
                self._log(Level.ERROR, f"rejected {scanned}", batch_id)
            else:
                rec.source = str(path)
                rec.size_bytes = scanned.size_bytes
                rec.mtime_ns = scanned.mtime_ns
                rec.sha256 = scanned.sha256
                rec.request_count = scanned.request_count
                rec.est_tokens = scanned.est_tokens
                rec.stage = Stage.VALIDATED
                rec.last_error = None
                rec.note(self.clock(), f"validated: {scanned.request_count} requests")
            self.store.append(rec)
            ordered[batch_id] = rec
        for batch_id, rec in known.items():
            if batch_id not in ordered:  # its input file is gone; keep what we know
                ordered[batch_id] = rec
        self.state.records = ordered

    async def _unchanged(self, rec: BatchRecord, path: Path) -> bool:
        stats = await asyncio.to_thread(stat_inputs, [path])
        return _same_file(rec, stats[path])

    async def run(self) -> int:
        """Run until every batch has ended or a stop is requested; returns the exit code."""
        await self.prepare()
        assert self.state is not None
        if self.settings.output_dir is not None:
            self.settings.output_dir.mkdir(parents=True, exist_ok=True)
        await self._recover_uploads()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._upload_loop())
                group.create_task(self._create_loop())
                group.create_task(self._poll_loop())
                group.create_task(self._download_loop())
                group.create_task(self._checkpoint_loop())
                group.create_task(self._finish_watch())
        finally:
            for task in self._side_tasks:
                task.cancel()
            await asyncio.gather(*self._side_tasks, return_exceptions=True)
            await asyncio.to_thread(self._save_final)
        code = self.exit_code()
        self.bus.publish(RunFinished(self.clock(), code, self.summary()))
        return code

    def _save_final(self) -> None:
        assert self.state is not None
        self.state.learned = self.admission.learned()
        self.store.close(self.state)

    async def _finish_watch(self) -> None:
        while not self._stop.is_set():
            if self.records and self._ended_count() == len(self.records) and not self._side_tasks:
                self._log(Level.INFO, "every batch has ended")
                self.request_stop()
                break
            await self._wait_change(5.0)

    def _ended_count(self) -> int:
        return sum(len(self._staged[stage]) for stage in Stage if stage.ended)

    def summary(self) -> dict[str, int]:
        """How many batches are in each stage."""
        counts: dict[str, int] = {}
        for rec in self.records.values():
            counts[str(rec.stage)] = counts.get(str(rec.stage), 0) + 1
        return counts

    def exit_code(self) -> int:
        """0 when every file's results are saved (skipped files aside), 3 when some ended otherwise."""
        stages = [rec.stage for rec in self.records.values()]
        if all(stage in (Stage.DOWNLOADED, Stage.SKIPPED) for stage in stages):
            return EXIT_OK
        return EXIT_INCOMPLETE

    # ---- plumbing ------------------------------------------------------------------------------

    def _wake(self) -> None:
        self._changed.set()

    async def _wait_change(self, timeout: float) -> None:
        if self._stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancellation
                await self._changed.wait()
        self._changed.clear()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._stop.wait()

    def _log(self, level: Level, message: str, batch_id: str | None = None) -> None:
        self.bus.publish(LogLine(self.clock(), level, redact(message), batch_id))

    def _emit(self, rec: BatchRecord, note: str | None = None) -> None:
        now = self.clock()
        if note:
            rec.note(now, redact(note))
        if rec.last_error:
            rec.last_error = redact(rec.last_error)
        rec.updated_at = now
        self.store.append(rec)
        self.bus.publish(BatchChanged(now, rec.copy()))
        self._wake()

    def _set(self, rec: BatchRecord, stage: Stage, note: str, level: Level = Level.INFO) -> None:
        previous = rec.stage
        rec.stage = stage
        self._staged[previous].pop(rec.batch_id, None)
        self._staged[stage][rec.batch_id] = rec
        if stage is not Stage.UPLOADED:
            rec.wait_reason = None
        self._emit(rec, note)
        self._log(level, f"{rec.batch_id}: {note}", rec.batch_id)
        if previous.job_in_flight and not stage.job_in_flight:
            self._poll_schedule.forget(rec.batch_id)
            self.admission.job_ended(rec.batch_id)
            self._after_admission_change()

    def _after_admission_change(self) -> None:
        if self._cooling is not None and self.admission.cool_down_until is None:
            ended, self._cooling = self._cooling, None
            self.bus.publish(CoolDownEnded(self.clock(), ended))
            self._log(Level.INFO, f"cool-down over ({ended})")
        self._publish_admission()

    def _publish_admission(self) -> None:
        self._persist_learned()
        self.bus.publish(AdmissionChanged(self.clock(), self.admission.figures(self.clock())))

    def _persist_learned(self) -> None:
        """Journal what admission learned (a budget, a cap) as soon as it changes: a crash must not lose it."""
        assert self.state is not None
        for key, value in self.admission.learned().items():
            if self.state.learned.get(key) != value:
                self.state.learned[key] = value
                self.store.set_learned(key, value)

    def _requeue(self, rec: BatchRecord, note: str) -> None:
        """Send a batch back to be created again (new attempt already counted by the caller)."""
        rec.job_name = None
        rec.job_state = None
        rec.intent_at = None
        rec.display_name = None
        rec.result_name = None
        rec.stuck_since = None
        rec.succeeded_count = rec.failed_count = rec.pending_count = 0
        fresh = rec.upload_name is not None and self._upload_usable(rec)
        self._set(rec, Stage.UPLOADED if fresh else Stage.VALIDATED, f"{note} (attempt {rec.attempt})")

    def _upload_usable(self, rec: BatchRecord) -> bool:
        expires = rec.upload_expires_at
        margin = self.settings.transfer.upload_expiry_margin
        return expires is None or expires - self.clock() > margin

    def _records_in(self, *stages: Stage) -> list[BatchRecord]:
        """The records in these stages (a copy: callers may change stages while walking it)."""
        return [rec for stage in stages for rec in self._staged[stage].values()]

    def _first_in(self, stage: Stage, count: int) -> list[BatchRecord]:
        return list(itertools.islice(self._staged[stage].values(), count))

    # ---- uploads -------------------------------------------------------------------------------

    async def _recover_uploads(self) -> None:
        """Uploads cut short by a stop: adopt the file if the server has it, else upload again."""
        waiting = [rec for rec in self._records_in(Stage.UPLOADING)]
        if not waiting:
            return
        try:
            files = await self.gateway.list_files()
        except GatewayError as exc:
            self._log(Level.WARNING, f"cannot list files to recover uploads ({exc}); uploading again")
            files = []
        by_name = {}
        for remote in files:
            if remote.display_name and remote.state in (None, "ACTIVE"):
                by_name.setdefault(remote.display_name, remote)
        for rec in waiting:
            remote = by_name.get(upload_display_name(rec.sha256))
            if remote is not None and remote.size_bytes in (None, rec.size_bytes) and (
                remote.expires_at is None
                or remote.expires_at - self.clock() > self.settings.transfer.upload_expiry_margin
            ):
                rec.upload_name = remote.name
                rec.upload_expires_at = remote.expires_at
                self._set(rec, Stage.UPLOADED, f"found its earlier upload {remote.name}")
            else:
                self._set(rec, Stage.VALIDATED, "upload was cut short; uploading again")

    async def _worker_pool(
        self,
        stage: Stage,
        concurrency: int,
        room: Callable[[], int],
        work: Callable[[BatchRecord], Awaitable[None]],
    ) -> None:
        """Start `work` on records in `stage`, in order, at most `concurrency` at a time and `room()` per round."""
        limit = asyncio.Semaphore(max(1, concurrency))
        tasks: set[asyncio.Task[None]] = set()

        async def one(rec: BatchRecord) -> None:
            try:
                await work(rec)
            finally:
                self._busy.discard(rec.batch_id)
                limit.release()
                self._wake()

        try:
            while not self._stop.is_set():
                budget = room()
                for rec in self._first_in(stage, max(0, budget) + len(self._busy)):
                    if budget <= 0 or limit.locked():
                        break
                    if rec.batch_id in self._busy:
                        continue
                    budget -= 1
                    await limit.acquire()
                    self._busy.add(rec.batch_id)
                    task = asyncio.create_task(one(rec))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                await self._wait_change(1.0)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _upload_loop(self) -> None:
        def room() -> int:
            if self.paused:
                return 0
            ahead = len(self._staged[Stage.UPLOADING]) + len(self._staged[Stage.UPLOADED])
            return self.settings.transfer.upload_ahead - ahead

        transfer = self.settings.transfer
        await self._worker_pool(Stage.VALIDATED, transfer.upload_concurrency, room, self._upload_one)

    async def _upload_one(self, rec: BatchRecord) -> None:
        try:
            path = Path(rec.source)
            if not await self._unchanged(rec, path):
                self._set(rec, Stage.REJECTED, f"{path}: changed since it was validated; not uploaded",
                          Level.ERROR)
                return
            self._set(rec, Stage.UPLOADING, f"uploading {rec.size_bytes} bytes")
            try:
                await self.store.commit()
            except CheckpointWriteError as exc:  # nothing was sent: back to the queue until the disk has room
                self._set(rec, Stage.VALIDATED, f"upload held back: {exc}", Level.ERROR)
                await self._sleep(_DISK_PAUSE)
                return
            remote = await self.gateway.upload(path, upload_display_name(rec.sha256))
            crash_point("after-upload")
            if remote.sha256_hex is not None and remote.sha256_hex != rec.sha256:
                await self.gateway.delete_file(remote.name)
                self._set(rec, Stage.REJECTED,
                          f"{path}: content changed during upload (server hash differs); not submitted",
                          Level.ERROR)
                return
            rec.upload_name = remote.name
            rec.upload_expires_at = remote.expires_at
            self._set(rec, Stage.UPLOADED, f"uploaded as {remote.name}")
        except GatewayError as exc:
            rec.last_error = str(exc)
            self._set(rec, Stage.VALIDATED, f"upload failed: {exc}; will try again", Level.WARNING)
            await self._sleep(5.0)

    # ---- creates -------------------------------------------------------------------------------

    async def _create_loop(self) -> None:
        while not self._stop.is_set():
            await self._settle_ambiguous()
            rec = next(iter(self._staged[Stage.UPLOADED].values()), None)
            if rec is None or self.paused:
                self._mark_waiting("paused" if self.paused else None)
                await self._wait_change(1.0)
                continue
            if not self._upload_usable(rec):
                rec.upload_name = None
                self._set(rec, Stage.VALIDATED, "its upload expires soon; uploading again")
                continue
            if rec.upload_adopted and await self._job_uses_adopted_upload(rec):
                continue  # adopted an existing job instead of creating (or the check must wait)
            now = self.clock()
            decision = self.admission.decide(rec.est_tokens, now)
            if self._cooling is not None and self.admission.cool_down_until is None:
                self._after_admission_change()
            if not decision.admit:
                self._mark_waiting(decision.reason)
                await self._wait_change(self._wait_for(decision, now))
                continue
            self._mark_waiting(None)  # creates flow again: no stale reason stays on the waiting uploads
            await self._create_one(rec)

    def _wait_for(self, decision: Decision, now: float) -> float:
        if decision.retry_at is not None:
            return min(max(0.05, decision.retry_at - now), 5.0)
        return 5.0

    def _mark_waiting(self, reason: str | None) -> None:
        for rec in self._records_in(Stage.UPLOADED):
            if rec.wait_reason != reason:
                rec.wait_reason = reason
                self._emit(rec)

    async def _create_one(self, rec: BatchRecord) -> None:
        assert self.state is not None
        rec.display_name = job_display_name(self.state.run_id, rec.batch_id, rec.sha256, rec.attempt)
        rec.intent_at = self.clock()
        self._set(rec, Stage.CREATING, f"creating job {rec.display_name}")
        try:
            await self.store.commit()  # the intent is on disk before the create leaves
        except CheckpointWriteError as exc:  # not on disk: the create must not leave
            rec.display_name = None
            rec.intent_at = None
            self._set(rec, Stage.UPLOADED, f"create held back: {exc}", Level.ERROR)
            await self._sleep(_DISK_PAUSE)
            return
        self.admission.job_started(rec.batch_id, rec.est_tokens)
        crash_point("after-intent")
        self.admission.create_sent(self.clock(), rec.batch_id)
        assert rec.upload_name is not None
        try:
            job = await self.gateway.create(rec.upload_name, rec.display_name)
            crash_point("after-create")
        except RateLimited as exc:
            self.admission.job_ended(rec.batch_id)
            until = self.admission.rate_limited(exc.quota, exc.retry_after, rec.est_tokens, self.clock())
            rec.last_error = str(exc)
            self._set(rec, Stage.UPLOADED, f"rate-limited ({exc.quota}); cooling down", Level.WARNING)
            self._cooling = exc.quota
            self.bus.publish(CoolDownStarted(self.clock(), exc.quota, until, str(exc)))
            self._publish_admission()
            return
        except Transient as exc:  # never reached the server
            self.admission.job_ended(rec.batch_id)
            rec.last_error = str(exc)
            self._set(rec, Stage.UPLOADED, f"create not sent: {exc}", Level.WARNING)
            await self._sleep(_TRANSIENT_PAUSE)
            return
        except Ambiguous as exc:
            rec.last_error = str(exc)
            self._ambiguous_since[rec.batch_id] = self.clock()
            self._emit(rec, f"create outcome unknown ({exc}); will look for it in the batch list")
            self._log(Level.WARNING, f"{rec.batch_id}: create outcome unknown: {exc}", rec.batch_id)
            return
        except Permanent as exc:
            self.admission.job_ended(rec.batch_id)
            await self._create_refused(rec, exc)
            return
        self.admission.create_accepted(rec.batch_id, rec.est_tokens, self.clock())
        self._adopt(rec, job, f"job {job.name} created")
        self._after_admission_change()

    async def _create_refused(self, rec: BatchRecord, exc: Permanent) -> None:
        rec.last_error = str(exc)
        gone = rec.upload_name is None or await self.gateway.get_file(rec.upload_name) is None
        count = self._reuploads.get(rec.batch_id, 0)
        if gone and count < 2:
            self._reuploads[rec.batch_id] = count + 1
            rec.upload_name = None
            rec.upload_expires_at = None
            self._set(rec, Stage.VALIDATED, f"create refused, its upload is gone ({exc}); uploading again",
                      Level.WARNING)
            return
        self._set(rec, Stage.FAILED, f"create refused: {exc}", Level.ERROR)

    def _adopt(self, rec: BatchRecord, job: RemoteJob, note: str) -> None:
        """Record that `job` is this batch's job, whatever stage it is in."""
        self._ambiguous_since.pop(rec.batch_id, None)
        rec.job_name = job.name
        rec.last_error = None
        self._apply_job(rec, job, note)

    # ---- adopted uploads ---------------------------------------------------------------------------

    async def _job_uses_adopted_upload(self, rec: BatchRecord) -> bool:
        """Before the first create from an upload another client made (see `adopt`), look for a job on the server
        already made from it (inputConfig.fileName): one batches.list walk, cached for the run. Such a job is
        adopted instead of paying for the file twice. True when the caller must not create now."""
        if rec.batch_id in self._adopted_uploads_checked:
            return False
        if self._live_jobs_by_source is None:
            try:
                jobs = await all_jobs(self.gateway)
            except GatewayError as exc:  # never create blind from an upload someone else may have used
                self._log(Level.WARNING, f"{rec.batch_id}: cannot list batches to check its adopted upload "
                                         f"({exc}); not creating from it yet", rec.batch_id)
                await self._sleep(_TRANSIENT_PAUSE)
                return True
            self._live_jobs_by_source = {}
            for job in jobs:
                if job.input_file and (job.state == "JOB_STATE_SUCCEEDED" or not job.ended):
                    self._live_jobs_by_source.setdefault(job.input_file, []).append(job)
        self._adopted_uploads_checked.add(rec.batch_id)
        users = self._live_jobs_by_source.get(rec.upload_name or "", [])
        if users:
            tracked = {r.job_name for r in self.records.values() if r.job_name}
            users = [job for job in users if job.name not in tracked]
        if not users:
            return False
        job = max(users, key=lambda j: (j.state == "JOB_STATE_SUCCEEDED", -(j.create_time or 0.0)))
        rec.job_name, rec.display_name, rec.last_error = job.name, job.display_name, None
        rec.intent_at = job.create_time or self.clock()
        note = (f"job {job.name} ({job.display_name}, {job.state}) was already made from its adopted upload "
                f"{rec.upload_name}: adopted instead of creating another")
        if not job.ended:
            self.admission.job_started(rec.batch_id, rec.est_tokens)
            self._set(rec, Stage.PENDING, note, Level.WARNING)
            note = None
        self._apply_job(rec, job, note)
        self._publish_admission()
        return True

    # ---- settling ambiguous creates --------------------------------------------------------------

    async def _settle_ambiguous(self) -> None:
        """Creates whose outcome is unknown (or cut short by a stop): find them by display name."""
        creating = [rec for rec in self._records_in(Stage.CREATING) if rec.job_name is None]
        if not creating:
            return
        wanted = {rec.display_name: rec for rec in creating if rec.display_name}
        try:
            found = await self._find_jobs_by_display_name(set(wanted))
        except GatewayError as exc:
            self._log(Level.WARNING, f"cannot list batches to settle {len(wanted)} create(s): {exc}")
            await self._sleep(_TRANSIENT_PAUSE)
            return
        grace = self.settings.recovery.ambiguous_grace
        for display_name, rec in wanted.items():
            job = found.get(display_name)
            if job is not None:
                self.admission.job_started(rec.batch_id, rec.est_tokens)
                self._adopt(rec, job, f"found its job {job.name} by display name")
                continue
            since = rec.intent_at or self.clock()
            if self.clock() - since >= grace:
                self.admission.job_ended(rec.batch_id)
                self._set(rec, Stage.UPLOADED, f"no job named {display_name} after {grace:.0f}s; creating again",
                          Level.WARNING)
        if any(rec.stage is Stage.CREATING for rec in creating):
            await self._sleep(min(5.0, max(0.2, grace / 10)))

    async def _find_jobs_by_display_name(self, names: set[str]) -> dict[str, RemoteJob]:
        found: dict[str, RemoteJob] = {}
        token: str | None = None
        while True:
            jobs, token = await self.gateway.list_jobs_page(token)
            for job in jobs:
                if job.display_name in names and job.display_name not in found:
                    found[job.display_name] = job
            if token is None or len(found) == len(names):
                return found

    # ---- polling -------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while not self._stop.is_set():
            active = {rec.job_name: rec for rec in self._records_in(Stage.PENDING, Stage.RUNNING) if rec.job_name}
            if active:
                try:
                    await self._poll(active)
                except GatewayError as exc:
                    self._log(Level.WARNING, f"poll failed: {exc}")
            in_flight = [rec.batch_id for rec in self._records_in(Stage.PENDING, Stage.RUNNING)]
            await self._sleep(self._poll_schedule.delay(in_flight, self.clock()))

    async def _poll(self, active: dict[str, BatchRecord]) -> None:
        """One cycle: batches.list pages until every active job was seen, then a get for the rest."""
        unseen = dict(active)
        token: str | None = None
        pages = 0
        while unseen:
            jobs, token = await self.gateway.list_jobs_page(token)
            pages += 1
            for job in jobs:
                rec = unseen.pop(job.name, None)
                if rec is not None:
                    self._apply_job(rec, job)
            if token is None:
                break
        for name, rec in unseen.items():  # not in the list (deleted, or beyond it): ask for it alone
            job = await self.gateway.get_job(name)
            if job is None:
                rec.last_error = f"{name} is no longer on the server"
                self._handle_server_end(rec, Stage.FAILED, rec.last_error)
            else:
                self._apply_job(rec, job)
        await self._check_stuck()

    async def _check_stuck(self) -> None:
        """Flag jobs pending or running too long; with the "resubmit" action, cancel them to submit once more."""
        hours = self.settings.recovery.stuck_after_hours
        if hours is None:
            return
        now = self.clock()
        for rec in self._records_in(Stage.PENDING, Stage.RUNNING):
            if rec.stuck_since is not None or rec.intent_at is None or now - rec.intent_at < hours * 3600:
                continue
            rec.stuck_since = now
            note = f"stuck: {rec.stage} for {(now - rec.intent_at) / 3600:.1f} h (limit {hours:g} h)"
            resubmit = self.settings.recovery.stuck_action == "resubmit" and rec.stuck_resubmits == 0
            if resubmit and rec.job_name:
                try:
                    await self.gateway.cancel(rec.job_name)
                except GatewayError as exc:
                    self._log(Level.ERROR, f"{rec.batch_id}: cancel of stuck job failed: {exc}", rec.batch_id)
                else:
                    rec.stuck_resubmits += 1
                    rec.resubmit_pending = True
                    note += "; cancelled, to be submitted once more"
            rec.last_error = note
            self._emit(rec, note)
            self._log(Level.WARNING, f"{rec.batch_id}: {note}", rec.batch_id)

    def _apply_job(self, rec: BatchRecord, job: RemoteJob, note: str | None = None) -> None:
        """Bring a record in line with what the server says about its job."""
        self._poll_schedule.observe(rec.batch_id, job, self.clock())
        changed = rec.job_state != job.state
        rec.job_state = job.state
        for attr, value in (("succeeded_count", job.succeeded), ("failed_count", job.failed),
                            ("pending_count", job.pending)):
            if value is not None and getattr(rec, attr) != value:
                setattr(rec, attr, value)
                changed = True
        end = _SERVER_END_STATES.get(job.state)
        if end is Stage.SUCCEEDED:
            rec.result_name = job.result_file
            self._set(rec, Stage.SUCCEEDED, note or f"job {job.name} succeeded")
        elif end is not None:
            if end is Stage.EXPIRED and job.result_file:
                self._keep_partial_results(rec, job.result_file)
            self._handle_server_end(rec, end, job.error or job.state)
        elif job.state == "JOB_STATE_RUNNING" and rec.stage is not Stage.RUNNING:
            self._set(rec, Stage.RUNNING, note or f"job {job.name} running")
        elif rec.stage is Stage.CREATING:
            self._set(rec, Stage.PENDING, note or f"job {job.name} pending")
        elif changed or note:
            self._emit(rec, note)

    def _keep_partial_results(self, rec: BatchRecord, result_file: str) -> None:
        """An EXPIRED job that left a partial output: save it beside the results, whatever happens next."""
        assert self.settings.output_dir is not None
        target = self.settings.output_dir / f"{rec.batch_id}.results.partial-a{rec.attempt}.jsonl"
        batch_id = rec.batch_id

        async def keep() -> None:
            temporary = target.with_name(f".{target.name}.part")
            try:
                await self.gateway.download(result_file, temporary)
                await asyncio.to_thread(move_into_place, temporary, target)
            except (GatewayError, OSError) as exc:
                self._log(Level.WARNING, f"{batch_id}: could not keep the partial results {result_file}: {exc}",
                          batch_id)
                return
            finally:
                with contextlib.suppress(OSError):
                    temporary.unlink(missing_ok=True)
            current = self.records.get(batch_id)
            if current is not None:
                self._emit(current, f"partial results of the expired job kept as {target}")
            self._log(Level.INFO, f"{batch_id}: partial results of the expired job kept as {target}", batch_id)

        task = asyncio.create_task(keep())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _handle_server_end(self, rec: BatchRecord, end: Stage, reason: str) -> None:
        rec.last_error = reason
        if end is Stage.CANCELLED and rec.resubmit_pending:
            self._set(rec, end, f"stuck job {rec.job_name} cancelled", Level.WARNING)
            rec.stuck_since = None
            rec.resubmit_pending = False
            rec.attempt += 1
            self._requeue(rec, "submitting the stuck job once more")
            return
        if end in _RETRYABLE_SERVER_ENDS and rec.attempt < self.settings.max_attempts:
            self._set(rec, end, f"job {rec.job_name} ended {end}: {reason}", Level.WARNING)
            rec.attempt += 1
            self._requeue(rec, "submitting again")
            return
        self._set(rec, end, f"job {rec.job_name} ended {end}: {reason}", Level.ERROR)

    # ---- downloads -----------------------------------------------------------------------------

    async def _download_loop(self) -> None:
        transfer = self.settings.transfer
        await self._worker_pool(Stage.SUCCEEDED, transfer.download_concurrency, lambda: transfer.download_concurrency,
                                self._download_one)

    async def _download_one(self, rec: BatchRecord) -> None:
        assert self.settings.output_dir is not None
        final = self.settings.output_dir / result_file_name(rec.batch_id)
        temporary = final.with_name(f".{final.name}.part")
        try:
            if not rec.result_name:
                job = await self.gateway.get_job(rec.job_name or "")
                rec.result_name = job.result_file if job else None
                if not rec.result_name:
                    self._handle_server_end(rec, Stage.FAILED, "the job succeeded but names no result file")
                    return
            await self.gateway.download(rec.result_name, temporary)
            crash_point("during-download")
            check = await asyncio.to_thread(check_results, Path(rec.source), temporary)
            rec.succeeded_count, rec.failed_count, rec.pending_count = check.succeeded, check.failed, 0
            if not check.complete:
                bad = final.with_name(f"{rec.batch_id}.results.incomplete.jsonl")
                await asyncio.to_thread(move_into_place, temporary, bad)
                rec.result_path = str(bad)
                self._set(rec, Stage.FAILED, f"results do not match the input: {check.problem()}; kept as {bad}",
                          Level.ERROR)
                return
            await asyncio.to_thread(move_into_place, temporary, final)
            self._result_missing_since.pop(rec.batch_id, None)
            rec.result_path = str(final)
            self._set(rec, Stage.DOWNLOADED,
                      f"results saved: {check.succeeded} succeeded, {check.failed} failed requests")
        except GatewayError as exc:
            if isinstance(exc, Permanent) and exc.code == 404 and self._result_gone(rec):
                rec.result_name = None
                self._handle_server_end(rec, Stage.EXPIRED, f"its result file is gone from the server ({exc})")
                return
            rec.last_error = f"download failed: {exc}"
            self._emit(rec, f"download failed: {exc}; will try again")
            self._log(Level.WARNING, f"{rec.batch_id}: download failed: {exc}", rec.batch_id)
            await self._sleep(5.0)
        finally:
            with contextlib.suppress(OSError):
                if temporary.exists():
                    os.unlink(temporary)

    def _result_gone(self, rec: BatchRecord) -> bool:
        """True once a result file has answered 404 for longer than `result_gone_after` (a job may report
        SUCCEEDED a moment before its file can be read)."""
        first = self._result_missing_since.setdefault(rec.batch_id, self.clock())
        if self.clock() - first < self.settings.recovery.result_gone_after:
            return False
        self._result_missing_since.pop(rec.batch_id, None)
        return True

    # ---- checkpoint ----------------------------------------------------------------------------

    async def _checkpoint_loop(self) -> None:
        while not self._stop.is_set():
            await self._sleep(1.0)
            assert self.state is not None
            try:
                if self.store.needs_compaction:
                    self.state.learned = self.admission.learned()
                    await self.store.compact(self.state)
                else:
                    await self.store.commit()
            except CheckpointWriteError as exc:  # the changes stay in memory; creates wait for a commit that works
                self._log(Level.ERROR, f"{exc}; trying again in {_DISK_PAUSE:.0f}s")
                await self._sleep(_DISK_PAUSE)


def _same_file(rec: BatchRecord, stat: os.stat_result | None) -> bool:
    """True when the input file still has the size and mtime it had when it was validated."""
    return stat is not None and stat.st_size == rec.size_bytes and stat.st_mtime_ns == rec.mtime_ns
