"""`--rebuild-from-server`: a new checkpoint made from the server's batch and file lists, when the old one is
damaged or lost.

Every job and upload the engine makes carries a display name that ties it to its input file
(core/naming.py): `gembatch-{run_id}-{stem}-{sha256[:12]}-a{attempt}` for jobs and `gembatch-upload-{sha256[:40]}`
for uploads. So the input folder (scanned again) plus the server's lists give back, for every file, its job (and
which attempt it was) or its upload; the run id found in those names is reused, so that the next creates of this
run can never collide with, or repeat, a job that exists. The old checkpoint files are kept, renamed with a
timestamp; nothing is deleted.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .backend import BatchBackend, JobState, RemoteFile, RemoteJob
from .checkpoint_format import CheckpointError, RunState
from .checkpoint_store import CheckpointStore
from .config import Settings
from .durable import fsync_folder
from .input_scan import Rejection, ScannedFile, list_input_files, scan_file
from .model import BatchRecord, Stage
from .naming import JobName, name_stem, parse_job_display_name, result_file_name, upload_display_name
from .results import check_results

_MOVED_SUFFIX = ".before-rebuild-"
_RUNNING = {JobState.PENDING: Stage.PENDING, JobState.RUNNING: Stage.RUNNING,
            JobState.QUEUED: Stage.PENDING, JobState.UNSPECIFIED: Stage.PENDING}
_RETRYABLE = {JobState.FAILED, JobState.EXPIRED}


class RebuildError(Exception):
    """The rebuild cannot or should not go ahead; the message says why and what to do instead."""


@dataclass
class RebuildReport:
    """What the rebuild found and did, for the log."""

    run_id: str
    reused_run_id: bool
    moved: list[tuple[Path, Path]] = field(default_factory=list)
    stages: Counter[str] = field(default_factory=Counter)
    jobs_adopted: int = 0
    uploads_adopted: int = 0
    other_runs: list[str] = field(default_factory=list)
    orphan_jobs: int = 0  # jobs of this run whose input file is not in the folder (left alone)
    old_checkpoint_loaded: bool = False  # the old checkpoint was readable (rebuilt because the user asked)

    def lines(self) -> list[str]:
        """Human-readable summary, one line each."""
        out = [f"moved {old} aside to {new}" for old, new in self.moved]
        if self.old_checkpoint_loaded:
            out.append("the old checkpoint was readable; rebuilt from the server all the same, as asked")
        origin = ("reused from the job names on the server" if self.reused_run_id
                  else "no job on the server matched the input files")
        out.append(f"rebuilt run {self.run_id} ({origin}): {self.jobs_adopted} job(s) and "
                   f"{self.uploads_adopted} upload(s) adopted; "
                   + ", ".join(f"{stage} {n}" for stage, n in sorted(self.stages.items())))
        if self.other_runs:
            out.append(f"jobs of other runs ({', '.join(self.other_runs)}) matched some files; the best job per "
                       "file was adopted, the others were left alone")
        if self.orphan_jobs:
            out.append(f"{self.orphan_jobs} job(s) of run {self.run_id} name files that are not in the input "
                       "folder (or whose content changed); they were left alone")
        return out


async def rebuild_from_server(settings: Settings, gateway: BatchBackend, store: CheckpointStore, *,
                              clock: Callable[[], float] = time.time) -> RebuildReport:
    """Write a new checkpoint for `settings.input_dir` from the server's lists; the caller holds the lock.

    The old checkpoint files are moved aside only once the lists were read, so a failure leaves them as they were.
    If the old checkpoint still loads (the user asked for a rebuild all the same), its run id is preferred and
    the files the user skipped stay skipped; nothing else is taken from it.
    """
    if settings.input_dir is None:
        raise RebuildError("--rebuild-from-server needs the input folder (--input) to match jobs to files")
    try:
        old = await asyncio.to_thread(store.load)
    except CheckpointError:
        old = None  # damaged: what we are here for
    scanned = await asyncio.to_thread(scan_folder, settings)
    jobs = await all_jobs(gateway)
    files = await gateway.list_files()

    now = clock()
    run_id, reused, other_runs = _choose_run(jobs, scanned, old.run_id if old is not None else None)
    report = RebuildReport(run_id=run_id, reused_run_id=reused, other_runs=other_runs,
                           old_checkpoint_loaded=old is not None)
    uploads = _uploads_by_name(files, now, settings.transfer.upload_expiry_margin)
    records: dict[str, BatchRecord] = {}
    matched_jobs: set[str] = set()
    for batch_id, (path, item) in scanned.items():
        rec = _record(settings, run_id, batch_id, path, item, jobs, uploads, now, report, matched_jobs)
        before = old.records.get(batch_id) if old is not None else None
        if before is not None and before.stage is Stage.SKIPPED and rec.stage in (Stage.VALIDATED, Stage.UPLOADED):
            rec.stage = Stage.SKIPPED
            rec.note(now, "skipped by the user (kept from the old checkpoint)")
        records[batch_id] = rec
        report.stages[str(rec.stage)] += 1
    report.orphan_jobs = sum(
        1 for job in jobs
        if (parts := parse_job_display_name(job.display_name)) is not None and parts.run_id == run_id
        and job.name not in matched_jobs
    )
    state = RunState(run_id=run_id, created_at=now, model=settings.model, records=records, learned={})
    report.moved = await asyncio.to_thread(_move_aside, store, now)
    await asyncio.to_thread(store.create, state)
    return report


def scan_folder(settings: Settings) -> dict[str, tuple[Path, ScannedFile | Rejection]]:
    """Every input file of the folder, scanned, by batch id."""
    assert settings.input_dir is not None
    out: dict[str, tuple[Path, ScannedFile | Rejection]] = {}
    for path in list_input_files(settings.input_dir):
        out[path.name[: -len(".jsonl")]] = (path, scan_file(path, settings.tokens_per_byte, job_kind=settings.job_kind))
    return out


async def all_jobs(gateway: BatchBackend) -> list[RemoteJob]:
    """Every batch job of the account, newest first (all pages)."""
    jobs: list[RemoteJob] = []
    token: str | None = None
    while True:
        page, token = await gateway.list_jobs_page(token)
        jobs.extend(page)
        if token is None:
            return jobs


def _choose_run(jobs: list[RemoteJob], scanned: dict[str, tuple[Path, ScannedFile | Rejection]],
                preferred: str | None = None) -> tuple[str, bool, list[str]]:
    """The old checkpoint's run id when it has jobs (or nothing has), else the run id whose jobs match the most
    input files (the newest on a tie), else a new one. Returns (run id, found on the server, other runs)."""
    wanted = {(name_stem(batch_id), item.sha256[:12]) for batch_id, (_, item) in scanned.items()
              if isinstance(item, ScannedFile)}
    files_per_run: dict[str, set[tuple[str, str]]] = {}
    for job in jobs:  # the server lists newest first: dict order keeps the newest run first
        parts = parse_job_display_name(job.display_name)
        if parts is not None and (parts.stem, parts.sha12) in wanted:
            files_per_run.setdefault(parts.run_id, set()).add((parts.stem, parts.sha12))
    if not files_per_run:
        return preferred or secrets.token_hex(4), False, []
    best = max(files_per_run, key=lambda run: len(files_per_run[run]))  # max keeps the first of equals
    if preferred in files_per_run:
        best = preferred
    return best, True, [run for run in files_per_run if run != best]


def _uploads_by_name(files: list[RemoteFile], now: float, margin: float) -> dict[str, RemoteFile]:
    """Usable uploads (active, not about to expire) by display name, the one living longest first."""
    out: dict[str, RemoteFile] = {}
    for remote in files:
        if not remote.display_name or not remote.usable:
            continue
        if remote.expires_at is not None and remote.expires_at - now <= margin:
            continue
        known = out.get(remote.display_name)
        if known is None or (remote.expires_at or 0) > (known.expires_at or 0):
            out[remote.display_name] = remote
    return out


def _job_rank(job: RemoteJob, parts: JobName, run_id: str) -> tuple[int, int, int]:
    state = 3 if job.state is JobState.SUCCEEDED else 2 if job.state in _RUNNING else 1
    return state, int(parts.run_id == run_id), parts.attempt


def _record(settings: Settings, run_id: str, batch_id: str, path: Path, item: ScannedFile | Rejection,
            jobs: list[RemoteJob], uploads: dict[str, RemoteFile], now: float, report: RebuildReport,
            matched_jobs: set[str]) -> BatchRecord:
    rec = BatchRecord(batch_id=batch_id, source=str(path))
    if isinstance(item, Rejection):
        rec.stage = Stage.REJECTED
        rec.last_error = str(item)
        rec.note(now, f"rebuilt from the server: rejected {item}")
        return rec
    try:
        rec.mtime_ns = os.stat(path).st_mtime_ns
    except OSError:
        rec.mtime_ns = 0  # the engine sees a change and scans it again
    rec.size_bytes, rec.sha256 = item.size_bytes, item.sha256
    rec.request_count, rec.est_tokens = item.request_count, item.est_tokens
    rec.job_kind = item.job_kind
    stem, sha12 = name_stem(batch_id), item.sha256[:12]
    mine = [(job, parts) for job in jobs
            if (parts := parse_job_display_name(job.display_name)) is not None
            and parts.stem == stem and parts.sha12 == sha12]
    matched_jobs.update(job.name for job, _ in mine)
    attempts_used = max((parts.attempt for _, parts in mine if parts.run_id == run_id), default=0)
    upload = uploads.get(upload_display_name(item.sha256))
    if upload is not None and upload.size_bytes in (None, item.size_bytes):
        rec.upload_name, rec.upload_expires_at = upload.name, upload.expires_at
    if not mine:
        rec.stage = Stage.UPLOADED if rec.upload_name else Stage.VALIDATED
        if rec.upload_name:
            report.uploads_adopted += 1
        rec.note(now, "rebuilt from the server: no job yet" + (f"; its upload {rec.upload_name} is there"
                                                                 if rec.upload_name else ""))
        return rec
    job, parts = max(mine, key=lambda pair: _job_rank(pair[0], pair[1], run_id))
    report.jobs_adopted += 1
    rec.attempt = max(parts.attempt, attempts_used)
    rec.display_name, rec.job_name, rec.job_state = job.display_name, job.name, job.state_label
    rec.intent_at = job.create_time if getattr(job, "create_time", None) else now
    for attr, value in (("succeeded_count", job.succeeded), ("failed_count", job.failed),
                        ("pending_count", job.pending)):
        if value is not None:
            setattr(rec, attr, value)
    note = f"rebuilt from the server: adopted job {job.name} ({job.display_name}, {job.state_label})"
    if job.state is JobState.SUCCEEDED:
        rec.result_name = job.result_file
        final = (settings.output_dir / result_file_name(batch_id)) if settings.output_dir else None
        if final is not None and final.exists() and check_results(path, final).complete:
            rec.stage, rec.result_path = Stage.DOWNLOADED, str(final)
            note += f"; its results {final} are complete"
        else:
            rec.stage = Stage.SUCCEEDED
    elif job.state in _RUNNING:
        rec.stage = _RUNNING[job.state]
    elif job.state in _RETRYABLE and rec.attempt < settings.max_attempts:
        rec.attempt += 1
        rec.display_name = rec.job_name = rec.job_state = None
        rec.intent_at = None
        rec.succeeded_count = rec.failed_count = rec.pending_count = 0
        rec.last_error = job.error or job.state_label
        rec.stage = Stage.UPLOADED if rec.upload_name else Stage.VALIDATED
        note += f"; submitting again as attempt {rec.attempt}"
    elif job.state is JobState.CANCELLED:
        rec.stage, rec.last_error = Stage.CANCELLED, job.error or "cancelled"
    else:
        rec.stage, rec.last_error = Stage.FAILED, job.error or job.state_label
    if rec.upload_name and rec.stage in (Stage.UPLOADED, Stage.VALIDATED):
        report.uploads_adopted += 1
    rec.note(now, note)
    return rec


def _move_aside(store: CheckpointStore, now: float) -> list[tuple[Path, Path]]:
    """Rename every file of the old checkpoint to NAME.before-rebuild-STAMP (kept, never deleted)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    siblings = [store.path, store.journal_path, store.journal_bak_path, store.bak_path,
                store.path.with_name(store.path.name + ".tmp"), store.path.with_name(store.path.name + ".bak.tmp")]
    moved = []
    for old in siblings:
        if not old.exists():
            continue
        new = old.with_name(f"{old.name}{_MOVED_SUFFIX}{stamp}")
        serial = 1
        while new.exists():
            serial += 1
            new = old.with_name(f"{old.name}{_MOVED_SUFFIX}{stamp}-{serial}")
        os.replace(old, new)
        moved.append((old, new))
    if moved:
        fsync_folder(store.path.parent)
    return moved
