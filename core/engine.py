"""The submission engine: upload, create, poll and download every input file's batch job, resumably.

Never twice: an intent (display name) is on disk before every create; a create is sent once; an ambiguous
outcome is settled by finding our display name in the server's batch list. Never lost: every state change
is journaled to the checkpoint, and results are renamed into place only when their keys check out.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import itertools
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn

from .admission import Admission, Decision
from .backend import (
    Ambiguous,
    BatchBackend,
    FileState,
    GatewayError,
    JobState,
    Permanent,
    Quota,
    RateLimited,
    RemoteFile,
    RemoteJob,
    Transient,
    Unusable,
    UploadRefused,
)
from .checkpoint_format import RunState
from .checkpoint_store import CheckpointStore, CheckpointWriteError
from .config import Settings
from .cost_estimate import check_cost_limit
from .crash_points import crash_point
from .durable import move_into_place
from .events import (
    AdmissionChanged,
    BatchChanged,
    CoolDownEnded,
    CoolDownStarted,
    EventBus,
    Level,
    LogLine,
    PauseChanged,
    RunFinished,
)
from .exit_codes import EXIT_INCOMPLETE, EXIT_OK, EXIT_OVER_COST_LIMIT, EXIT_USAGE
from .input_scan import (
    INPUT_SUFFIX,
    InputSurvey,
    Rejection,
    ScannedFile,
    find_shared_keys,
    scan_file,
    sha256_of,
    stat_inputs,
    survey_input_folder,
)
from .model import BatchRecord, Stage
from .naming import job_display_name, result_file_name, run_job_prefix, upload_display_name
from .poll_schedule import PollSchedule
from .rebuild import all_jobs
from .redact import redact
from .results import check_results, key_results_by_order, saved_results
from .wait_text import belief_text, wait_text

log = logging.getLogger(__name__)



class RunRefused(Exception):
    """The run must not start (nothing was submitted); `exit_code` follows the CLI contract."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

_SERVER_END_STATES = {
    JobState.SUCCEEDED: Stage.SUCCEEDED,
    JobState.FAILED: Stage.FAILED,
    JobState.CANCELLED: Stage.CANCELLED,
    JobState.EXPIRED: Stage.EXPIRED,
}
_RETRYABLE_SERVER_ENDS = {Stage.FAILED, Stage.EXPIRED}
_TRANSIENT_PAUSE = 2.0  # seconds before the creator tries again after a create that never left
_DISK_PAUSE = 2.0  # seconds before trying again after the checkpoint could not be written (disk full, I/O)
_PROCESSING_CHECKS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # seconds between looks at an upload still PROCESSING
_MAX_NOT_READY = 30  # creates refused FAILED_PRECONDITION for one upload that the server calls ACTIVE: then fail
_LOCAL_ERROR_PAUSES = (2.0, 10.0, 60.0, 300.0)  # back-off of a batch after a local error (disk full, file gone)
_LIFETIME_SHARE = 0.25  # the expiry margin is at most this share of the lifetime the server gave an upload
_UPLOAD_FAILED_RETRIES = 1  # an upload the server marks FAILED is uploaded again this many times


class Engine:
    """Runs one checkpointed run over an input folder; the TUI and the headless runner drive it."""

    def __init__(
        self,
        settings: Settings,
        gateway: BatchBackend,
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
        self._not_before: dict[str, float] = {}  # batch id -> when its upload or create may be tried again
        self._not_ready_count: dict[str, int] = {}  # looks at an upload still PROCESSING, per batch
        self._not_ready_refusals: dict[str, int] = {}  # creates refused FAILED_PRECONDITION, per batch
        self._failed_uploads: dict[str, int] = {}  # uploads the server marked FAILED, per batch
        self._processing_since: dict[str, float] = {}  # when we first saw a batch's upload PROCESSING
        self._local_errors: dict[str, int] = {}  # consecutive local errors per batch (for the back-off)
        self._reasons_logged: set[tuple[str, str]] = set()  # (batch id, reason) logged once
        self._fatal: str | None = None  # why the run had to stop (exit 2): a refused key, no usable MIME type, ...
        self._storage_wait_logged = False
        self._input_bytes: int | None = None  # the run's inputs, summed on first need (see _all_input_bytes)
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
        assert self.settings.input_dir is not None
        home = Path(os.path.realpath(self.settings.input_dir))
        await asyncio.to_thread(self.store.check_one_name)  # a writer's check: readers may open any name
        state = await asyncio.to_thread(self.store.load)
        survey = await asyncio.to_thread(survey_input_folder, home)
        if not survey.taken and not survey.bad_names and not (state and state.records):
            self._refuse(f"no {INPUT_SUFFIX} input file in the input folder {home}"
                         + (f"; passed over: {_listing(survey.passed_over)}" if survey.passed_over else "")
                         + f" (input files end in lower-case {INPUT_SUFFIX}; see the README, \"The input folder\")")
        if state is None:
            state = RunState(
                run_id=secrets.token_hex(4),
                created_at=self.clock(),
                model=self.settings.model,
                records={},
                learned={},
                input_dir=str(home),
            )
            await asyncio.to_thread(self.store.create, state)
            self._log(Level.INFO, f"new run {state.run_id}; checkpoint {self.store.path}")
        else:
            self._log(Level.INFO, f"resuming run {state.run_id} from {self.store.path}")
        moved = self._check_input_home(state, str(home))
        self.state = state
        self.admission = Admission(self.settings.admission, learned=dict(state.learned))
        if survey.passed_over:
            self._log(Level.INFO, f"not taken from {home}: {_listing(survey.passed_over)}")
        await self._scan_inputs(survey)
        self._repair_jobless_records()
        await self._check_saved_results()
        if moved:  # the snapshot header holds the folder: write it now, not only at the end of the run
            await self.store.compact(state)
        not_created = (Stage.VALIDATED, Stage.UPLOADING, Stage.UPLOADED)
        unsubmitted = [r for r in self.records.values() if r.stage in not_created]
        refusal = check_cost_limit(self.settings, unsubmitted)
        if refusal is not None:
            self._log(Level.ERROR, refusal)
            raise RunRefused(refusal, EXIT_OVER_COST_LIMIT)
        for rec in self.records.values():
            self._staged[rec.stage][rec.batch_id] = rec
            if rec.stage.job_in_flight:  # a create whose answer never came holds its slots, proves no limit
                self.admission.job_started(rec.batch_id, rec.est_tokens, unknown=rec.job_name is None)
            self.bus.publish(BatchChanged(self.clock(), rec.copy()))
        self.admission.creates_restored(self._recent_create_intents(), self.clock())
        self._publish_admission()

    def _recent_create_intents(self) -> list[float]:
        """When this run's creates that the server may have accepted were sent (a restart's creates window)."""
        return [rec.intent_at for rec in self.records.values()
                if rec.intent_at is not None and (rec.job_name or rec.stage is Stage.CREATING)]

    async def _scan_inputs(self, survey: InputSurvey) -> None:
        assert self.state is not None
        paths = survey.taken
        known = self.state.records
        # Thousands of known inputs (e.g. VALIDATED after a crash): one thread hop stats them all, not one hop each.
        # Sources are stored absolute (resolved): the checkpoint may live anywhere (--checkpoint), and a resume
        # from another working directory (cron) must find the same files; a moved folder is caught by its path.
        seen = [path for path in paths if path.name[: -len(INPUT_SUFFIX)] in known]
        stats = await asyncio.to_thread(stat_inputs, seen)
        ordered: dict[str, BatchRecord] = {}
        fresh: list[ScannedFile] = []
        for path in paths:
            batch_id = path.name[: -len(INPUT_SUFFIX)]
            rec = known.get(batch_id)
            if rec is not None and rec.source != str(path):
                rec.source = str(path)  # an older checkpoint's path relative to its cwd, or a moved folder
                self.store.append(rec)
            if rec is not None and rec.stage not in (Stage.NEW, Stage.VALIDATED, Stage.REJECTED):
                ordered[batch_id] = rec  # its upload or job exists: never re-read it under us, unless it changed
                if not _same_file(rec, stats.get(path)) and stats.get(path) is not None:
                    await self._input_changed(rec, path, fresh)
                continue
            if rec is not None and rec.stage is Stage.VALIDATED and _same_file(rec, stats.get(path)):
                ordered[batch_id] = rec
                continue
            scanned = await asyncio.to_thread(scan_file, path, self.settings.tokens_per_byte,
                                              self.settings.request_check, self.settings.job_kind)
            if rec is None:
                rec = BatchRecord(batch_id=batch_id, source=str(path))
            if isinstance(scanned, Rejection):
                rec.stage = Stage.REJECTED
                rec.last_error = str(scanned)
                rec.note(self.clock(), str(scanned))
                self._log(Level.ERROR, f"rejected {scanned}", batch_id)
            else:
                _take_scan(rec, scanned)
                rec.note(self.clock(), f"validated: {scanned.request_count} requests")
                for warning in scanned.request_warnings:  # request_check = "warn": submitted anyway
                    self._log(Level.WARNING, f"the API may refuse {warning}", batch_id)
                if scanned.request_warning_count > len(scanned.request_warnings):
                    self._log(Level.WARNING, f"{batch_id}: {scanned.request_warning_count} request lines in all that "
                              f"the API may refuse (gembatch-tui lint {path})", batch_id)
                fresh.append(scanned)
            self.store.append(rec)
            ordered[batch_id] = rec
        for bad in survey.bad_names:  # a name that is not UTF-8 could not even be written to the checkpoint
            batch_id = bad.path.name.removesuffix(INPUT_SUFFIX)
            rec = known.get(batch_id) or BatchRecord(batch_id=batch_id, source=str(bad.path))
            if rec.stage is not Stage.REJECTED or rec.last_error != str(bad):
                rec.stage = Stage.REJECTED
                rec.last_error = str(bad)
                rec.note(self.clock(), str(bad))
                self.store.append(rec)
            self._log(Level.ERROR, f"rejected {bad}", batch_id)
            ordered.setdefault(batch_id, rec)
        for batch_id, rec in known.items():
            if batch_id not in ordered:  # its input file is gone; keep what we know
                ordered[batch_id] = rec
        self.state.records = ordered
        self._check_duplicate_inputs(ordered, {item.sha256 for item in fresh})
        await self._warn_shared_keys(fresh)

    def _refuse(self, message: str) -> NoReturn:
        """Log why the run cannot start and refuse it with exit 2 (nothing submitted)."""
        self._log(Level.ERROR, message)
        raise RunRefused(message, EXIT_USAGE)

    def _check_input_home(self, state: RunState, home: str) -> bool:
        """The checkpoint belongs to one input folder; another one is refused unless --input-moved. True when
        the snapshot must be written again to keep the (new) folder."""
        if state.input_dir == home:
            return False
        if state.input_dir is None:  # written before the folder was kept: take this one
            state.input_dir = home
            return True
        if not self.settings.input_moved:
            self._refuse(
                f"checkpoint {self.store.path} belongs to the input folder {state.input_dir}, not {home}: resuming "
                f"it with other inputs would mix two runs. Give --input {state.input_dir}; or, if that folder "
                "moved here with the same files, add --input-moved; or start a new run with another --output "
                "or --checkpoint"
            )
        self._log(Level.WARNING, f"input folder moved from {state.input_dir} to {home} (--input-moved)")
        state.input_dir = home
        return True

    async def _input_changed(self, rec: BatchRecord, path: Path, fresh: list[ScannedFile]) -> None:
        """An input whose upload or job exists has another size or mtime: warn and keep its job (default), or,
        with --resubmit-changed, submit the new content as a new attempt once no job of it is in flight."""
        try:
            digest = await asyncio.to_thread(sha256_of, path)
        except OSError:
            return  # unreadable now: the stages that read it say so
        if digest == rec.sha256:  # touched, not changed
            stat = (await asyncio.to_thread(stat_inputs, [path]))[path]
            if stat is not None:
                rec.mtime_ns = stat.st_mtime_ns
                self.store.append(rec)
            return
        what = f"{path} changed after its {'job' if rec.job_name else 'upload'} (content hash differs)"
        if not self.settings.resubmit_changed:
            kept = "the job of the old content is kept, and so are its results" if rec.job_name else \
                "the upload of the old content is the one submitted"
            self._log(Level.WARNING, f"{rec.batch_id}: {what}; {kept}: start with --resubmit-changed to submit "
                                     "the new content", rec.batch_id)
            return
        if rec.stage.job_in_flight or rec.stage in (Stage.UPLOADING, Stage.SUCCEEDED):
            self._log(Level.WARNING, f"{rec.batch_id}: {what}; its current {rec.stage} step goes on: the new content "
                                     "is submitted when you start again with --resubmit-changed after it ended",
                      rec.batch_id)
            return
        scanned = await asyncio.to_thread(scan_file, path, self.settings.tokens_per_byte,
                                          self.settings.request_check, self.settings.job_kind)
        if isinstance(scanned, Rejection):
            self._log(Level.ERROR, f"{rec.batch_id}: {what}, and the new content is refused: {scanned}; "
                                   "the batch is kept as it was", rec.batch_id)
            return
        if rec.job_name is not None:
            rec.attempt += 1
        _take_scan(rec, scanned)
        for attr in ("upload_name", "upload_expires_at", "display_name", "job_name", "job_state", "intent_at",
                     "result_name", "result_path", "result_sha256", "result_size", "result_mtime_ns",
                     "last_error", "wait_reason", "stuck_since"):
            setattr(rec, attr, None)
        rec.succeeded_count = rec.failed_count = rec.pending_count = 0
        rec.stage = Stage.VALIDATED
        note = f"{what}: submitting the new content ({scanned.request_count} requests, attempt {rec.attempt})"
        rec.note(self.clock(), note)
        self.store.append(rec)
        self._log(Level.WARNING, f"{rec.batch_id}: {note} (--resubmit-changed)", rec.batch_id)
        fresh.append(scanned)

    def _check_duplicate_inputs(self, records: dict[str, BatchRecord], fresh: set[str]) -> None:
        """Two inputs with the same content would both be paid for: refused (exit 2) unless allowed."""
        by_hash: dict[str, list[BatchRecord]] = {}
        for rec in records.values():
            if rec.sha256 and rec.stage not in (Stage.REJECTED, Stage.SKIPPED):
                by_hash.setdefault(rec.sha256, []).append(rec)
        twins = [group for digest, group in by_hash.items()
                 if len(group) > 1 and any(r.stage is Stage.VALIDATED for r in group)]
        if not twins:
            return
        described = "; ".join(" and ".join(Path(r.source).name for r in group) + f" (sha256 {group[0].sha256[:12]})"
                              for group in twins[:10])
        more = f"; and {len(twins) - 10} more" if len(twins) > 10 else ""
        if self.settings.allow_duplicate_inputs:
            if any(group[0].sha256 in fresh for group in twins):
                self._log(Level.WARNING, f"input files with identical content, each submitted "
                                         f"(allow_duplicate_inputs): {described}{more}")
            return
        self._refuse(f"input files with identical content would each be submitted and paid for: {described}{more}. "
                     "Remove the copies, or allow it with --allow-duplicate-inputs (allow_duplicate_inputs = true)")

    async def _warn_shared_keys(self, fresh: list[ScannedFile]) -> None:
        """A key used in two files is allowed, but `merge` will refuse it: say so (checked for the files read now)."""
        if len(fresh) < 2:
            return
        shared, total = await asyncio.to_thread(find_shared_keys, fresh, 10)
        for key, first, second in shared:
            self._log(Level.WARNING, f"key {key!r} is in both {first.name} and {second.name}: each gets its result, "
                                     "but `merge` refuses keys that are not unique across the run")
        if total > len(shared):
            self._log(Level.WARNING, f"{total - len(shared)} more key(s) are in more than one input file")

    def _repair_jobless_records(self) -> None:
        """A record in flight that names no job (edited by hand) would wait forever: look for its job by display
        name, as after a create whose answer was lost, and create it if the server has none."""
        assert self.state is not None
        for rec in self.records.values():
            jobless = rec.stage in (Stage.PENDING, Stage.RUNNING) and rec.job_name is None
            jobless |= rec.stage is Stage.CREATING and rec.display_name is None
            jobless |= rec.stage is Stage.SUCCEEDED and rec.job_name is None and rec.result_name is None
            if not jobless:
                continue
            was = rec.stage
            # Look for its job by display name first in every case: a job made from an upload since deleted (our
            # uploads go once results are saved) is still on the server under that name.
            rec.display_name = job_display_name(self.state.run_id, rec.batch_id, rec.sha256, rec.attempt)
            rec.intent_at = self.clock()
            rec.stage = Stage.CREATING
            note = (f"the checkpoint says {was} but names no job; looking for job {rec.display_name} in the "
                    "batch list, created if it is not there")
            rec.note(self.clock(), note)
            self.store.append(rec)
            self._log(Level.WARNING, f"{rec.batch_id}: {note}", rec.batch_id)

    async def _check_saved_results(self) -> None:
        """Saved results that are gone or differ from what was saved are fetched again (if the server still has
        them) or reported; a size+mtime that did not change skips the hash."""
        done = [rec for rec in self.records.values() if rec.stage is Stage.DOWNLOADED and rec.result_path]

        def look() -> list[tuple[BatchRecord, str]]:
            trouble = []
            for rec in done:
                assert rec.result_path is not None
                path = Path(rec.result_path)
                now = saved_results(path, with_hash=False)
                if now is None:
                    trouble.append((rec, f"its results file {path} is missing"))
                elif rec.result_sha256 is None or (now.size, now.mtime_ns) == (rec.result_size, rec.result_mtime_ns):
                    continue
                elif now.size != rec.result_size or (saved_results(path, with_hash=True) or now).sha256 \
                        != rec.result_sha256:
                    trouble.append((rec, f"its results file {path} differs from the one saved"))
                else:
                    rec.result_mtime_ns = now.mtime_ns  # touched, not changed
            return trouble

        for rec, problem in await asyncio.to_thread(look):
            on_server = False
            if rec.result_name:
                try:
                    on_server = await self.gateway.get_file(rec.result_name) is not None
                except GatewayError:
                    on_server = True  # cannot tell now: the download tries, and reports if the file is gone
            if on_server:
                rec.stage = Stage.SUCCEEDED
                note = f"{problem}; fetching {rec.result_name} again"
                level = Level.WARNING
            else:
                rec.stage = Stage.FAILED
                rec.last_error = (f"{problem}, and the server no longer has it"
                                  f"{f' ({rec.result_name})' if rec.result_name else ''}: retry submits it again")
                note, level = rec.last_error, Level.ERROR
            rec.note(self.clock(), note)
            self.store.append(rec)
            self._log(level, f"{rec.batch_id}: {note}", rec.batch_id)

    async def _unchanged(self, rec: BatchRecord, path: Path) -> bool:
        stats = await asyncio.to_thread(stat_inputs, [path])
        return _same_file(rec, stats[path])

    async def run(self) -> int:
        """Run until every batch has ended or a stop is requested; returns the exit code."""
        await self.prepare()
        assert self.state is not None
        if self.settings.output_dir is not None:
            self.settings.output_dir.mkdir(parents=True, exist_ok=True)
        await self._check_model()
        await self._recover_uploads()
        self._sweep_saved_uploads()
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

    async def _check_model(self) -> None:
        """Refuse the run (exit 2, nothing uploaded) when the server does not know the model and a create is
        still to come; a server that cannot be asked right now does not stop the run."""
        to_create = (Stage.VALIDATED, Stage.UPLOADING, Stage.UPLOADED)
        if not any(self._staged[stage] for stage in to_create):
            return
        try:
            known = await self.gateway.model_known()
        except Unusable as exc:
            self._log(Level.ERROR, str(exc))
            raise RunRefused(str(exc), EXIT_USAGE) from None
        except GatewayError as exc:
            self._log(Level.WARNING, f"could not check the model {self.settings.model} ({exc}); going on")
            return
        if known:
            await self._check_model_kinds()
            return
        names = await self.gateway.model_names()
        close = difflib.get_close_matches(self.settings.model.removeprefix("models/"), names, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        message = f"the server does not know the model {self.settings.model!r}{hint} (nothing was uploaded)"
        self._log(Level.ERROR, message)
        raise RunRefused(message, EXIT_USAGE)

    async def _check_model_kinds(self) -> None:
        """Refuse the run (exit 2, nothing uploaded) when the model's listed methods show it cannot run the kind of
        job (generate or embed) a file still to create needs; no refusal unless the listing says so plainly."""
        to_create = (Stage.VALIDATED, Stage.UPLOADING, Stage.UPLOADED)
        kinds = {rec.job_kind for stage in to_create for rec in self._staged[stage].values()}
        try:
            offered = await self.gateway.model_job_kinds()
        except GatewayError:
            return
        wrong = next((kind for kind in ("embed", "generate") if kind in kinds and offered and kind not in offered),
                     None)
        if wrong is None:
            return
        files = sorted(rec.batch_id for stage in to_create for rec in self._staged[stage].values()
                       if rec.job_kind == wrong)
        what, use = (("embedding requests", "an embedding model such as gemini-embedding-001") if wrong == "embed"
                     else ("generate requests", "a generative model, or --job-kind embed for embedding lines"))
        message = (f"the model {self.settings.model!r} cannot run {what}, which {_listing(files, 5)} hold "
                   f"(it offers {' and '.join(sorted(offered))} jobs); use {use} (nothing was uploaded)")
        self._log(Level.ERROR, message)
        raise RunRefused(message, EXIT_USAGE)

    def _sweep_saved_uploads(self) -> None:
        """Uploads of batches whose results were saved before a stop: delete them now (storage cap)."""
        saved = [rec for rec in self._records_in(Stage.DOWNLOADED) if rec.upload_name]
        if not saved or not self.settings.transfer.delete_uploads_after_download:
            return

        async def sweep() -> None:
            for rec in saved:
                await self._free_storage(rec)

        self._side_task(sweep())

    def _side_task(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` beside the loops; the run does not end before it does (its end wakes the finish watch)."""
        task = asyncio.create_task(work)
        self._side_tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._side_tasks.discard(finished)
            self._wake()

        task.add_done_callback(done)

    def _stop_run(self, message: str) -> None:
        """Stop the whole run with exit 2: every further call would fail the same way."""
        if self._fatal is None:
            self._fatal = message
            self._log(Level.ERROR, f"stopping the run: {message}")
        self.request_stop()

    def _save_final(self) -> None:
        assert self.state is not None
        self.state.learned = self.admission.learned()
        self.store.close(self.state)

    async def _finish_watch(self) -> None:
        while not self._stop.is_set():
            if self._ended_count() == len(self.records) and not self._side_tasks:  # none at all: ended too
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
        if self._fatal is not None:
            return EXIT_USAGE
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
        return expires is None or expires - self.clock() > self._expiry_margin(rec)

    def _expiry_margin(self, rec: BatchRecord) -> float:
        """The setting, but never more than a share of the lifetime the server gave this upload: a server that
        gives files less than the margin must not make every fresh upload look expired (an upload loop)."""
        margin = self.settings.transfer.upload_expiry_margin
        if rec.upload_lifetime is not None:
            margin = min(margin, rec.upload_lifetime * _LIFETIME_SHARE)
        return margin

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
        except Unusable as exc:
            self._stop_run(str(exc))
            return
        except GatewayError as exc:
            self._log(Level.WARNING, f"cannot list files to recover uploads ({exc}); uploading again")
            files = []
        by_name = {}
        for remote in files:
            if remote.display_name and remote.state in (None, FileState.ACTIVE, FileState.PROCESSING):
                by_name.setdefault(remote.display_name, remote)
        for rec in waiting:
            remote = by_name.get(upload_display_name(rec.sha256))
            if remote is not None and remote.size_bytes in (None, rec.size_bytes):
                self._take_upload(rec, remote)
                if self._upload_usable(rec):
                    self._set(rec, Stage.UPLOADED, f"found its earlier upload {remote.name}")
                    continue
            rec.upload_name = None
            self._set(rec, Stage.VALIDATED, "upload was cut short; uploading again")

    def _take_upload(self, rec: BatchRecord, remote: RemoteFile) -> None:
        rec.upload_name = remote.name
        rec.upload_expires_at = remote.expires_at
        rec.upload_lifetime = remote.lifetime
        rec.upload_active = remote.usable

    async def _worker_pool(
        self,
        stage: Stage,
        concurrency: int,
        room: Callable[[], int],
        work: Callable[[BatchRecord], Awaitable[None]],
    ) -> None:
        """Start `work` on records in `stage`, in order, at most `concurrency` at a time and `room()` per round.

        A record backing off after an error (`_not_before`) is passed over until its time comes."""
        limit = asyncio.Semaphore(max(1, concurrency))
        tasks: set[asyncio.Task[None]] = set()

        async def one(rec: BatchRecord) -> None:
            try:
                await self._contained(rec, work)
            finally:
                self._busy.discard(rec.batch_id)
                limit.release()
                self._wake()

        try:
            while not self._stop.is_set():
                budget = room()
                now = self.clock()
                if self._not_before:
                    self._not_before = {k: v for k, v in self._not_before.items() if v > now}
                for rec in self._first_in(stage, max(0, budget) + len(self._busy) + len(self._not_before)):
                    if budget <= 0 or limit.locked():
                        break
                    if rec.batch_id in self._busy or self._not_before.get(rec.batch_id, 0.0) > now:
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

    async def _contained(self, rec: BatchRecord, work: Callable[[BatchRecord], Awaitable[None]]) -> None:
        """Run one batch's work; an error of this machine (disk full, a file gone, a name too long) or a bug marks
        that batch with the reason and backs it off, logged once per distinct reason: never a storm."""
        try:
            await work(rec)
        except asyncio.CancelledError:
            raise
        except Unusable as exc:
            self._stop_run(str(exc))
        except CheckpointWriteError:
            raise  # the checkpoint loop reports these, and creates wait for a write that works
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, GatewayError) else str(exc)
            self._back_off(rec, redact(reason))
        else:
            self._local_errors.pop(rec.batch_id, None)

    def _back_off(self, rec: BatchRecord, reason: str) -> None:
        count = self._local_errors.get(rec.batch_id, 0)
        self._local_errors[rec.batch_id] = count + 1
        pause = _LOCAL_ERROR_PAUSES[min(count, len(_LOCAL_ERROR_PAUSES) - 1)]
        self._not_before[rec.batch_id] = self.clock() + pause
        rec.last_error = reason
        if (rec.batch_id, reason) in self._reasons_logged:
            return
        self._reasons_logged.add((rec.batch_id, reason))
        self._emit(rec, f"{reason}; trying again in {pause:.0f}s")
        self._log(Level.ERROR, f"{rec.batch_id}: {reason}; trying again in {pause:.0f}s (logged once)", rec.batch_id)

    def _held_bytes(self) -> int:
        """Bytes of our uploads on the server (what the storage cap counts): uploading up to saved results."""
        held = 0
        for stage in (Stage.UPLOADING, Stage.UPLOADED, Stage.CREATING, Stage.PENDING, Stage.RUNNING,
                      Stage.SUCCEEDED, Stage.DOWNLOADED, Stage.FAILED, Stage.CANCELLED, Stage.EXPIRED):
            for rec in self._staged[stage].values():
                if rec.upload_name is not None or stage is Stage.UPLOADING:
                    held += rec.size_bytes
        return held

    def _storage_room(self, slots: int) -> int:
        """How many of the next uploads (at most `slots`) fit under the storage cap with what we hold."""
        cap = self.settings.transfer.storage_cap_bytes
        if slots <= 0 or self._all_input_bytes() <= cap:  # the usual run: all of it fits, nothing to count
            return slots
        held = self._held_bytes() + sum(  # uploads picked up but not yet UPLOADING
            self.records[b].size_bytes for b in self._busy
            if b in self.records and self.records[b].stage is Stage.VALIDATED)
        fits, blocked = 0, False
        for rec in itertools.islice(self._staged[Stage.VALIDATED].values(), slots + len(self._busy)):
            if rec.batch_id in self._busy:
                continue
            if held + rec.size_bytes > cap:
                blocked = True
                break
            held += rec.size_bytes
            fits += 1
            if fits == slots:
                break
        if blocked and not fits and not self._storage_wait_logged:
            self._storage_wait_logged = True
            self._log(Level.INFO, f"uploads wait: {held / 1e9:.2f} GB of ours on the server, storage cap "
                                  f"{cap / 1e9:.2f} GB; waiting for results to be saved and their uploads deleted")
        elif fits and self._storage_wait_logged:
            self._storage_wait_logged = False
            self._log(Level.INFO, "uploads go on: there is room under the storage cap")
        return fits

    def _all_input_bytes(self) -> int:
        """The size of every input of the run (counted once: the inputs are fixed once the run has started)."""
        if self._input_bytes is None:
            self._input_bytes = sum(rec.size_bytes for rec in self.records.values())
        return self._input_bytes

    async def _upload_loop(self) -> None:
        def room() -> int:
            if self.paused:
                return 0
            ahead = len(self._staged[Stage.UPLOADING]) + len(self._staged[Stage.UPLOADED])
            slots = self.settings.transfer.upload_ahead - ahead
            return self._storage_room(slots)

        transfer = self.settings.transfer
        await self._worker_pool(Stage.VALIDATED, transfer.upload_concurrency, room, self._upload_one)

    async def _upload_one(self, rec: BatchRecord) -> None:
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
        try:
            remote = await self.gateway.upload(path, upload_display_name(rec.sha256))
            crash_point("after-upload")
        except Unusable:
            self._set(rec, Stage.VALIDATED, "upload stopped: the run cannot go on", Level.ERROR)
            raise
        except UploadRefused as exc:  # permanent for this file: no loop
            rec.last_error = str(exc)
            self._set(rec, Stage.FAILED, f"upload refused by the server: {exc}", Level.ERROR)
            return
        except RateLimited as exc:  # most likely the storage cap: wait for our own deletions, then try again
            rec.last_error = str(exc)
            self._not_before[rec.batch_id] = self.clock() + 60.0
            self._set(rec, Stage.VALIDATED, f"upload refused for now ({exc}); waiting for room", Level.WARNING)
            return
        except GatewayError as exc:
            rec.last_error = str(exc)
            self._not_before[rec.batch_id] = self.clock() + 5.0
            self._set(rec, Stage.VALIDATED, f"upload failed: {exc}; will try again", Level.WARNING)
            return
        except Exception:  # a local error (the file gone, unreadable): back to the queue, backed off by the caller
            # (a cancellation, i.e. a stop, is not caught: the batch stays UPLOADING and the next start looks for
            # the file on the server before it uploads again)
            self._set(rec, Stage.VALIDATED, "upload could not be sent")
            raise
        if remote.sha256_hex is not None and remote.sha256_hex != rec.sha256:
            await self.gateway.delete_file(remote.name)
            self._set(rec, Stage.REJECTED,
                      f"{path}: content changed during upload (server hash differs); not submitted",
                      Level.ERROR)
            return
        self._take_upload(rec, remote)
        if remote.state is FileState.FAILED:
            await self._upload_failed(rec, remote.error or "the server marked the upload FAILED")
            return
        state = "" if rec.upload_active else f" ({remote.state.value if remote.state else 'processing'})"
        self._set(rec, Stage.UPLOADED, f"uploaded as {remote.name}{state}")

    async def _upload_failed(self, rec: BatchRecord, reason: str) -> None:
        """The server marked an upload FAILED: upload it once more, then the batch fails with its message."""
        count = self._failed_uploads.get(rec.batch_id, 0)
        name, rec.upload_name, rec.upload_active = rec.upload_name, None, False
        if name is not None:
            with contextlib.suppress(GatewayError):
                await self.gateway.delete_file(name)
        rec.last_error = f"upload {name} FAILED on the server: {reason}"
        if count < _UPLOAD_FAILED_RETRIES:
            self._failed_uploads[rec.batch_id] = count + 1
            self._set(rec, Stage.VALIDATED, f"{rec.last_error}; uploading once more", Level.WARNING)
            return
        self._set(rec, Stage.FAILED, rec.last_error, Level.ERROR)

    # ---- creates -------------------------------------------------------------------------------

    async def _create_loop(self) -> None:
        while not self._stop.is_set():
            await self._settle_ambiguous()
            rec = self._next_to_create()
            if rec is None or self.paused:
                self._mark_waiting("paused" if self.paused else None)
                await self._wait_change(self._until_next_create())
                continue
            if not self._upload_usable(rec):
                rec.upload_name = None
                rec.upload_active = False
                self._set(rec, Stage.VALIDATED, "its upload expires soon; uploading again")
                continue
            if not rec.upload_active:
                await self._check_uploads_ready(rec)
                continue
            if rec.upload_adopted and await self._job_uses_adopted_upload(rec):
                continue  # adopted an existing job instead of creating (or the check must wait)
            now = self.clock()
            decision = self.admission.decide(rec.est_tokens, now)
            if self._cooling is not None and self.admission.cool_down_until is None:
                self._after_admission_change()
            if not decision.admit:
                self._mark_waiting(wait_text(decision.wait) if decision.wait is not None else None)
                await self._wait_change(self._wait_for(decision, now))
                continue
            self._mark_waiting(None)  # creates flow again: no stale reason stays on the waiting uploads
            await self._create_group(self._reserve_group(rec, decision))

    def _next_to_create(self) -> BatchRecord | None:
        """The first uploaded batch that is not backing off (an upload still PROCESSING waits its turn)."""
        now = self.clock()
        for rec in self._staged[Stage.UPLOADED].values():
            if self._not_before.get(rec.batch_id, 0.0) <= now:
                return rec
        return None

    def _until_next_create(self) -> float:
        waits = [self._not_before.get(r.batch_id, 0.0) for r in self._staged[Stage.UPLOADED].values()]
        later = [t - self.clock() for t in waits if t > self.clock()]
        return min([1.0, *later]) if later else 1.0

    async def _check_uploads_ready(self, first: BatchRecord) -> None:
        """Look at `first`'s upload and, when creates go several at a time, at the next ones' too (at once)."""
        now = self.clock()
        more = [rec for rec in self._staged[Stage.UPLOADED].values()
                if rec is not first and not rec.upload_active and rec.upload_name is not None
                and self._not_before.get(rec.batch_id, 0.0) <= now and self._upload_usable(rec)]
        batch = [first, *more[:self.settings.admission.create_concurrency - 1]]
        if len(batch) == 1:
            await self._check_upload_ready(first)
            return
        await asyncio.gather(*(self._check_upload_ready(rec) for rec in batch))

    async def _check_upload_ready(self, rec: BatchRecord) -> None:
        """Ask the server whether an upload is ACTIVE before a create names it (a create naming a PROCESSING
        file is refused 400 FAILED_PRECONDITION: see the field reports in gemini-batch-protocol.md)."""
        assert rec.upload_name is not None
        try:
            remote = await self.gateway.get_file(rec.upload_name)
        except Unusable as exc:
            self._stop_run(str(exc))
            return
        except GatewayError as exc:
            self._not_before[rec.batch_id] = self.clock() + 5.0
            rec.last_error = f"cannot look at its upload: {exc}"
            self._emit(rec)
            return
        if remote is None:
            self._reupload_gone(rec, f"its upload {rec.upload_name} is gone from the server")
            return
        self._take_upload(rec, remote)
        if remote.state is FileState.FAILED:
            await self._upload_failed(rec, remote.error or "the server marked the upload FAILED")
            return
        if rec.upload_active:
            self._not_ready_count.pop(rec.batch_id, None)
            self._processing_since.pop(rec.batch_id, None)
            self._emit(rec, f"its upload {rec.upload_name} is ACTIVE")
            return
        looks = self._not_ready_count.get(rec.batch_id, 0)
        self._not_ready_count[rec.batch_id] = looks + 1
        waited = self.clock() - self._processing_since.setdefault(rec.batch_id, self.clock())
        if waited > self.settings.transfer.upload_processing_timeout:
            self._processing_since.pop(rec.batch_id, None)
            await self._upload_failed(rec, f"still PROCESSING after {waited:.0f}s")
            return
        pause = _PROCESSING_CHECKS[min(looks, len(_PROCESSING_CHECKS) - 1)]
        self._not_before[rec.batch_id] = self.clock() + pause
        if rec.wait_reason != "upload processing on the server":
            rec.wait_reason = "upload processing on the server"
            self._emit(rec)

    def _reupload_gone(self, rec: BatchRecord, note: str) -> None:
        count = self._reuploads.get(rec.batch_id, 0)
        rec.upload_name = None
        rec.upload_expires_at = None
        rec.upload_active = False
        if count >= 2:
            rec.last_error = note
            self._set(rec, Stage.FAILED, f"{note}, for the third time; giving up", Level.ERROR)
            return
        self._reuploads[rec.batch_id] = count + 1
        self._set(rec, Stage.VALIDATED, f"{note}; uploading again", Level.WARNING)

    def _wait_for(self, decision: Decision, now: float) -> float:
        if decision.retry_at is not None:
            return min(max(0.05, decision.retry_at - now), 5.0)
        return 5.0

    def _mark_waiting(self, reason: str | None) -> None:
        for rec in self._records_in(Stage.UPLOADED):
            if rec.wait_reason != reason:
                rec.wait_reason = reason
                self._emit(rec)

    def _reserve_group(self, first: BatchRecord, decision: Decision) -> list[BatchRecord]:
        """`first` (admitted) and up to create_concurrency - 1 more batches ready to create that admission has
        room for, each reserved (job, tokens, a place in the creates window) before the next is asked about.
        A probe goes alone: it tests one create past a learned limit."""
        group = [first]
        self._reserve(first)
        limit = self.settings.admission.create_concurrency
        if decision.quota is not None or limit <= 1:
            return group
        now = self.clock()
        for rec in list(self._staged[Stage.UPLOADED].values()):
            if len(group) >= limit:
                break
            if (rec is first or self._not_before.get(rec.batch_id, 0.0) > now or not rec.upload_active
                    or rec.upload_name is None or not self._upload_usable(rec)
                    or (rec.upload_adopted and rec.batch_id not in self._adopted_uploads_checked)):
                continue
            if not self.admission.room_for_more(rec.est_tokens):
                break
            more = self.admission.decide(rec.est_tokens, now)
            if not more.admit or more.quota is not None:
                break
            self._reserve(rec)
            group.append(rec)
        return group

    def _reserve(self, rec: BatchRecord) -> None:
        self.admission.job_started(rec.batch_id, rec.est_tokens)
        self.admission.create_sent(self.clock(), rec.batch_id)

    async def _create_group(self, group: list[BatchRecord]) -> None:
        """The intents of a reserved group saved in one commit (one fsync), then their creates sent at once;
        each create's outcome is handled for its own batch."""
        assert self.state is not None
        for rec in group:
            rec.display_name = job_display_name(self.state.run_id, rec.batch_id, rec.sha256, rec.attempt)
            rec.intent_at = self.clock()
            self._set(rec, Stage.CREATING, f"creating job {rec.display_name}")
        try:
            await self.store.commit()  # every intent is on disk before any create leaves
        except CheckpointWriteError as exc:  # not on disk: no create may leave
            for rec in group:
                self.admission.create_withdrawn(rec.batch_id)
                rec.display_name = None
                rec.intent_at = None
                self._set(rec, Stage.UPLOADED, f"create held back: {exc}", Level.ERROR)
            await self._sleep(_DISK_PAUSE)
            return
        for _ in group:
            crash_point("after-intent")  # the n-th intent is on disk; no create of its group has left
        await asyncio.gather(*(self._send_create(rec) for rec in group))

    async def _send_create(self, rec: BatchRecord) -> None:
        """Send one create whose intent is on disk and whose slots are reserved; handle its answer."""
        assert rec.upload_name is not None
        create = self.gateway.create_embeddings if rec.job_kind == "embed" else self.gateway.create
        try:
            job = await create(rec.upload_name, rec.display_name)
            crash_point("after-create")
        except RateLimited as exc:
            self.admission.job_ended(rec.batch_id)
            until = self.admission.rate_limited(exc.quota, exc.retry_after, rec.est_tokens, self.clock(),
                                                rec.batch_id)
            self._log_verdict()
            rec.last_error = str(exc)
            self._set(rec, Stage.UPLOADED, f"rate-limited ({exc.quota}); cooling down", Level.WARNING)
            self._cooling = self.admission.cool_down_quota or exc.quota  # a bare 429 read from our state
            self.bus.publish(CoolDownStarted(self.clock(), self._cooling, until, str(exc)))
            self._publish_admission()
            return
        except Transient as exc:  # never reached the server
            self.admission.job_ended(rec.batch_id)
            rec.last_error = str(exc)
            self._set(rec, Stage.UPLOADED, f"create not sent: {exc}", Level.WARNING)
            await self._sleep(_TRANSIENT_PAUSE)
            return
        except Ambiguous as exc:
            self.admission.create_unknown(rec.batch_id)
            rec.last_error = str(exc)
            self._ambiguous_since[rec.batch_id] = self.clock()
            self._emit(rec, f"create outcome unknown ({exc}); will look for it in the batch list")
            self._log(Level.WARNING, f"{rec.batch_id}: create outcome unknown: {exc}", rec.batch_id)
            return
        except Unusable as exc:
            self.admission.job_ended(rec.batch_id)
            self._set(rec, Stage.UPLOADED, f"create not made: {exc}", Level.ERROR)
            self._stop_run(str(exc))
            return
        except Permanent as exc:
            self.admission.job_ended(rec.batch_id)
            if exc.status == "FAILED_PRECONDITION":
                self._create_not_yet(rec, exc)
                return
            await self._create_refused(rec, exc)
            return
        self.admission.create_accepted(rec.batch_id, rec.est_tokens, self.clock())
        self._adopt(rec, job, f"job {job.name} created")
        self._after_admission_change()

    def _log_verdict(self) -> None:
        """Say how admission read the last 429 and what it believes now."""
        verdict = self.admission.last_verdict
        if verdict is not None:
            self._log(Level.INFO, f"429 read as {verdict.why} [{verdict.confidence}]; now: "
                      f"{belief_text(self.admission.beliefs(), sum(self.admission.other_jobs.values()))}")

    def _create_not_yet(self, rec: BatchRecord, exc: Permanent) -> None:
        """400 FAILED_PRECONDITION: the upload is not ACTIVE yet. Not a failure of the batch: no job was made,
        so the same display name is used again once the upload is ready."""
        # Counted apart from the looks: a server that says ACTIVE yet refuses every create must end, not loop.
        count = self._not_ready_refusals.get(rec.batch_id, 0) + 1
        self._not_ready_refusals[rec.batch_id] = count
        rec.display_name = None
        rec.intent_at = None
        rec.upload_active = False
        rec.last_error = str(exc)
        if count > _MAX_NOT_READY:
            self._set(rec, Stage.FAILED, f"create refused {count} times as not ready: {exc}", Level.ERROR)
            return
        self._not_before[rec.batch_id] = self.clock() + _PROCESSING_CHECKS[min(count, len(_PROCESSING_CHECKS) - 1)]
        self._set(rec, Stage.UPLOADED, f"create refused for now, its upload is not ACTIVE yet ({exc})")

    async def _create_refused(self, rec: BatchRecord, exc: Permanent) -> None:
        rec.last_error = str(exc)
        try:
            gone = rec.upload_name is None or await self.gateway.get_file(rec.upload_name) is None
        except GatewayError:
            gone = False
        if gone:
            self._reupload_gone(rec, f"create refused, its upload is gone ({exc})")
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
                if job.input_file and (job.state is JobState.SUCCEEDED or not job.ended):
                    self._live_jobs_by_source.setdefault(job.input_file, []).append(job)
        self._adopted_uploads_checked.add(rec.batch_id)
        users = self._live_jobs_by_source.get(rec.upload_name or "", [])
        if users:
            tracked = {r.job_name for r in self.records.values() if r.job_name}
            users = [job for job in users if job.name not in tracked]
        if not users:
            return False
        job = max(users, key=lambda j: (j.state is JobState.SUCCEEDED, -(j.create_time or 0.0)))
        rec.job_name, rec.display_name, rec.last_error = job.name, job.display_name, None
        rec.intent_at = job.create_time or self.clock()
        note = (f"job {job.name} ({job.display_name}, {job.state_label}) was already made from its adopted upload "
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
        except Unusable as exc:
            self._stop_run(str(exc))
            return
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
                if rec.upload_name is None:  # its upload is gone (or never was): upload, then create
                    self._set(rec, Stage.VALIDATED, f"no job named {display_name} after {grace:.0f}s; uploading and "
                              "creating it", Level.WARNING)
                    continue
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
                except Unusable as exc:  # e.g. the key was revoked mid-run: every poll would fail the same way
                    self._stop_run(str(exc))
                except GatewayError as exc:
                    self._log(Level.WARNING, f"poll failed: {exc}")
            in_flight = [rec.batch_id for rec in self._records_in(Stage.PENDING, Stage.RUNNING)]
            await self._sleep(self._poll_schedule.delay(in_flight, self.clock()))

    async def _poll(self, active: dict[str, BatchRecord]) -> None:
        """One cycle: batches.list pages until every active job was seen, then a get for the rest.

        The list's order is not documented (newest first today), so correctness never depends on it and its cost
        is bounded: the walk reads the pages our jobs could fill plus two, and after that only while each page
        still holds one of our jobs (a page is one call, as one get is); jobs not seen by then are asked for one
        by one. A cycle costs at most that many pages plus one get per active job, whatever the order and however
        many other jobs the account holds."""
        started = self.clock()
        unseen = dict(active)
        token: str | None = None
        pages = 0
        budget = -(-len(active) // self.gateway.list_page_size) + 2
        listed: list[RemoteJob] = []
        while unseen:
            jobs, token = await self.gateway.list_jobs_page(token)
            pages += 1
            listed += jobs
            found = 0
            for job in jobs:
                rec = unseen.pop(job.name, None)
                if rec is not None:
                    found += 1
                    self._apply_job(rec, job)
            if token is None or (pages >= budget and found == 0):
                break
        self._see_other_jobs(listed)
        for name, rec in unseen.items():  # not in the list (deleted, or beyond it): ask for it alone
            job = await self.gateway.get_job(name)
            if job is None:
                rec.last_error = f"{name} is no longer on the server"
                self._handle_server_end(rec, Stage.FAILED, rec.last_error)
            else:
                self._apply_job(rec, job)
        self.admission.poll_seen(started)
        await self._check_stuck()

    def _see_other_jobs(self, listed: list[RemoteJob]) -> None:
        """Tell admission about the unended jobs in the list that are not ours: they hold part of the quota.
        Counted only, never touched."""
        assert self.state is not None
        ours = {rec.job_name for rec in self.records.values() if rec.job_name}
        prefix = run_job_prefix(self.state.run_id)
        states: dict[JobState, int] = {}
        recent: list[float] = []
        for job in listed:
            if job.name in ours or (job.display_name or "").startswith(prefix):
                continue
            if not job.ended:
                states[job.state] = states.get(job.state, 0) + 1
            if job.create_time is not None:
                recent.append(job.create_time)
        before = self.admission.other_jobs
        self.admission.others_seen(states, recent, self.clock())
        if states != before:
            self._log(Level.INFO, "other jobs on the account (not ours, left alone): "
                      + (", ".join(f"{n} {state.value}" for state, n in states.items())
                         or "none"))
            self._publish_admission()

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
        changed = rec.job_state != job.state_label
        rec.job_state = job.state_label
        for attr, value in (("succeeded_count", job.succeeded), ("failed_count", job.failed),
                            ("pending_count", job.pending)):
            if value is not None and getattr(rec, attr) != value:
                setattr(rec, attr, value)
                changed = True
        end = _SERVER_END_STATES.get(job.state)
        if end is Stage.SUCCEEDED:
            rec.result_name = job.result_file
            rec.results_inline = job.results_inline and not job.result_file
            self._set(rec, Stage.SUCCEEDED, note or f"job {job.name} succeeded")
        elif end is not None:
            if end is Stage.EXPIRED and job.result_file:
                self._keep_partial_results(rec, job.result_file)
            self._handle_server_end(rec, end, job.error or job.state_label)
        elif job.state is JobState.RUNNING and rec.stage is not Stage.RUNNING:
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

        self._side_task(keep())

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
            if not rec.result_name and not rec.results_inline:
                job = await self.gateway.get_job(rec.job_name or "")
                rec.result_name = job.result_file if job else None
                rec.results_inline = bool(job and job.results_inline and not job.result_file)
                if not rec.result_name and not rec.results_inline:
                    self._handle_server_end(rec, Stage.FAILED, "the job succeeded but names no results")
                    return
            if rec.results_inline:  # results in the job itself (metadata.output.inlinedResponses)
                await self.gateway.save_inline_results(rec.job_name or "", temporary)
                await asyncio.to_thread(key_results_by_order, Path(rec.source), temporary)
            else:
                assert rec.result_name is not None
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
            await self._remember_saved_results(rec, check.sha256, final)
            where = "inline results" if rec.results_inline else "results"
            self._set(rec, Stage.DOWNLOADED,
                      f"{where} saved: {check.succeeded} succeeded, {check.failed} failed requests")
        except Unusable:
            raise
        except GatewayError as exc:
            gone = isinstance(exc, Permanent) and exc.code in (403, 404)  # the service answers 403 for a gone file
            if gone and self._result_gone(rec):
                rec.result_name = None
                self._handle_server_end(rec, Stage.EXPIRED, f"its result file is gone from the server ({exc})")
                return
            rec.last_error = f"download failed: {exc}"
            self._not_before[rec.batch_id] = self.clock() + 5.0
            self._emit(rec, f"download failed: {exc}; will try again")
            self._log(Level.WARNING, f"{rec.batch_id}: download failed: {exc}", rec.batch_id)
            return
        finally:
            with contextlib.suppress(OSError):
                if temporary.exists():
                    os.unlink(temporary)
        if rec.stage is Stage.DOWNLOADED:
            self._side_task(self._free_storage(rec))  # the run ends only once it is done

    async def _free_storage(self, rec: BatchRecord) -> None:
        """Results saved: delete the job's input upload (and, when asked, its result file) so a long run stays
        under the project's storage cap. A failed delete is logged, never a reason to fetch again."""
        transfer = self.settings.transfer
        names = []
        if transfer.delete_uploads_after_download and rec.upload_name:
            names.append(("upload", rec.upload_name))
        if transfer.delete_results_after_download and rec.result_name:
            names.append(("result file", rec.result_name))
        for what, name in names:
            try:
                await self.gateway.delete_file(name)
            except GatewayError as exc:
                self._log(Level.WARNING, f"{rec.batch_id}: could not delete its {what} {name}: {exc}", rec.batch_id)
                continue
            if what == "upload":
                rec.upload_name = None
                rec.upload_expires_at = None
                rec.upload_active = False
            self._emit(rec, f"deleted its {what} {name} from the server")
        if names:
            self._wake()  # uploads held back by the storage cap may go on

    async def _remember_saved_results(self, rec: BatchRecord, sha256: str, final: Path) -> None:
        """Keep the saved file's hash, size and mtime, so that a later start notices it is gone or changed."""
        saved = await asyncio.to_thread(saved_results, final, with_hash=False)
        if saved is not None:
            rec.result_sha256, rec.result_size, rec.result_mtime_ns = sha256, saved.size, saved.mtime_ns

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


def _take_scan(rec: BatchRecord, scanned: ScannedFile) -> None:
    """Copy a passed scan's figures into the record and make it VALIDATED."""
    rec.source = str(scanned.path)
    rec.size_bytes = scanned.size_bytes
    rec.mtime_ns = scanned.mtime_ns
    rec.sha256 = scanned.sha256
    rec.request_count = scanned.request_count
    rec.est_tokens = scanned.est_tokens
    rec.job_kind = scanned.job_kind
    rec.stage = Stage.VALIDATED
    rec.last_error = None


def _listing(items: list, limit: int = 20) -> str:
    """'a (why), b (why) and 3 more'."""
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _same_file(rec: BatchRecord, stat: os.stat_result | None) -> bool:
    """True when the input file still has the size and mtime it had when it was validated."""
    return stat is not None and stat.st_size == rec.size_bytes and stat.st_mtime_ns == rec.mtime_ns
