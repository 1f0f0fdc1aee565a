"""`gembatch-tui adopt`: take over a run that another script left half done, so nothing is uploaded or created twice.

Every job on the account (batches.list, all pages) is tied to an input file when it can be: by its source file
(the upload it was made from, whose sha256 equals the input file's), by its display name (an input file's name
in it), or by the report that names it (`--job`, `--jobs-file`: the report's line names the input file). Uploads
are named (`--upload`) or found by listing the files (`--match-uploads`) and tied by content. An upload that a
live or succeeded job already uses is never created from again: that job is adopted. The result is a checkpoint
that the normal command resumes: adopted jobs are polled and downloaded, adopted uploads are created from (after
one more check that no job uses them), and only the rest is uploaded and created.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..backend import BatchBackend, GatewayError, JobState, RemoteFile, RemoteJob
from ..checkpoint_format import CheckpointError, RunState
from ..checkpoint_lock import CheckpointLocked
from ..checkpoint_store import CheckpointStore
from ..config import Settings
from ..input_scan import Rejection, ScannedFile
from ..model import BatchRecord, Stage
from ..rebuild import all_jobs, scan_folder
from ..redact import MISSING_KEY_MESSAGE, api_key_from_env
from .common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    WorkflowError,
    add_config_flag,
    existing_dir,
    load_config,
    open_backend,
    parser_for,
)

DESCRIPTION = """\
Take over work that another script started, so that it finishes under gembatch-tui without uploading or
creating anything twice: existing batch jobs and files already uploaded.

Every job on the account is matched to the input files: by its source file (the upload it was made from has
the same content, sha256, as an input file), by its display name (an input file's name appears in it), or by
the report that names it (--job, --jobs-file: a hand-written report whose line names the file). Uploads are
named (--upload) or found by listing the files (--match-uploads), and matched by content. An upload that a
running, pending or succeeded job already uses is never created from again: that job is adopted instead.
When several jobs match one file, a succeeded one is preferred, then a running or pending one.

The checkpoint then holds them, and the normal command (its exact line is printed at the end) polls the
adopted jobs, downloads their results, creates jobs from the adopted uploads, and uploads and creates only
what is left. Batches the checkpoint already tracks are left as they are. Failed, cancelled or expired jobs
are not adopted: their files are submitted again. Stop the other script before you adopt its work.

Needs the API key in GEMINI_API_KEY (or GOOGLE_API_KEY)."""

EPILOG = """\
example:
  gembatch-tui adopt --input batches/ --output results/ --jobs-file report.md --match-uploads
  gembatch-tui adopt --input batches/ --output results/ --match-uploads --dry-run

exit codes:
  0  adopted (or, with --dry-run, listed what would be adopted)
  3  some named jobs or uploads match no input file (the others were adopted; those are listed)
  2  bad usage, no API key, a checkpoint in use by a running engine, or the server could not be read"""

_JOB_NAME = re.compile(r"batches/[A-Za-z0-9_-]+")
_STAGE_OF_JOB = {JobState.SUCCEEDED: Stage.SUCCEEDED, JobState.RUNNING: Stage.RUNNING}  # any other live: pending


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("adopt", DESCRIPTION, EPILOG)
    parser.add_argument("--input", metavar="DIR", type=Path, required=True, help="the folder of batch files")
    parser.add_argument("--output", metavar="DIR", type=Path, required=True, help="where results will be saved")
    parser.add_argument("--checkpoint", metavar="FILE", type=Path,
                        help="the checkpoint to write or extend (default: OUTPUT/gembatch.checkpoint.json)")
    parser.add_argument("--job", metavar="NAME", action="append", default=[],
                        help="a job to adopt (batches/...); repeatable")
    parser.add_argument("--jobs-file", metavar="FILE", type=Path,
                        help="a text file naming jobs (every batches/... in it is taken, e.g. a hand-written report)")
    parser.add_argument("--match-display-names", action="store_true",
                        help="kept for old command lines: every job on the account is matched by default now")
    parser.add_argument("--upload", metavar="NAME", action="append", default=[],
                        help="an uploaded file to adopt (files/...); repeatable")
    parser.add_argument("--match-uploads", action="store_true",
                        help="list the project's files and adopt uploads whose content equals an input file's")
    parser.add_argument("--model", metavar="NAME", help="model for the jobs still to create (default: config)")
    parser.add_argument("--base-url", metavar="URL", help="API endpoint instead of Google's")
    parser.add_argument("--dry-run", action="store_true", help="say what would be adopted; write nothing")
    add_config_flag(parser)
    return parser


@dataclass
class Adoption:
    """What adopt matched, left alone and could not place."""

    jobs: dict[str, RemoteJob] = field(default_factory=dict)  # batch id -> adopted job
    why: dict[str, str] = field(default_factory=dict)  # batch id -> how its job was matched
    uploads: dict[str, RemoteFile] = field(default_factory=dict)  # batch id -> adopted upload
    upload_notes: dict[str, str] = field(default_factory=dict)  # batch id -> what became of its upload's jobs
    not_adopted: dict[str, str] = field(default_factory=dict)  # job name -> why (ended unsuccessfully, …)
    unmatched: list[str] = field(default_factory=list)  # named jobs/uploads that fit no input file
    already_tracked: list[str] = field(default_factory=list)  # batch ids the checkpoint already follows
    foreign_jobs: int = 0  # jobs on the account that match no input file and that nobody named

    def lines(self) -> list[str]:
        """A human summary, one line each."""
        out = [f"{batch_id}: job {job.name} ({job.display_name or 'no display name'}, {job.state_label}) "
               f"matched {self.why.get(batch_id, '')}; "
               + ("its results will be downloaded" if job.state is JobState.SUCCEEDED else "it will be polled")
               for batch_id, job in sorted(self.jobs.items())]
        out += [f"{batch_id}: upload {f.name} ("
                + self.upload_notes.get(batch_id, "no job on the account uses it")
                + ": a job will be created from it)"
                for batch_id, f in sorted(self.uploads.items())]
        out += [f"left alone: {name}: {why}" for name, why in sorted(self.not_adopted.items())]
        out += [f"already tracked by the checkpoint: {batch_id}" for batch_id in self.already_tracked]
        out += [f"matches no input file: {name}" for name in self.unmatched]
        if self.foreign_jobs:
            out.append(f"{self.foreign_jobs} other job(s) on the account match no input file (left alone)")
        return out


def names_in_report(text: str) -> list[str]:
    """Every `batches/...` job name in a free-form text, in order, once each."""
    return list(dict.fromkeys(_JOB_NAME.findall(text)))


def report_lines(text: str) -> dict[str, str]:
    """Each job name of a report -> the rest of the first line naming it (where a report says which file)."""
    lines: dict[str, str] = {}
    for line in text.splitlines():
        for name in _JOB_NAME.findall(line):
            lines.setdefault(name, _JOB_NAME.sub(" ", line))
    return lines


def match_by_display_name(display_name: str | None, batch_ids: list[str]) -> str | None:
    """The input file whose name appears in the display name (the longest, when several do); None if none."""
    if not display_name:
        return None
    hits = [b for b in batch_ids  # every job on the account meets every file: a plain `in` first, then the regex
            if b in display_name and re.search(rf"(?<![A-Za-z0-9]){re.escape(b)}(?![A-Za-z0-9])", display_name)]
    return max(hits, key=len) if hits else None


def job_is_usable(job: RemoteJob) -> bool:
    """A job worth adopting: succeeded, or not ended yet (failed, cancelled and expired jobs are not)."""
    return job.state is JobState.SUCCEEDED or not job.ended


def job_preference(job: RemoteJob) -> tuple[int, float]:
    """Sort key, best last: succeeded, then running or pending; among equals the oldest (closest to done)."""
    return (2 if job.state is JobState.SUCCEEDED else 1 if job_is_usable(job) else 0), -(job.create_time or 0.0)


class _Matcher:
    """Ties jobs and uploads to input files: by source file content, by display name, by the report."""

    def __init__(self, gateway: BatchBackend, scanned: dict[str, ScannedFile], files: list[RemoteFile],
                 report: dict[str, str], named: set[str]) -> None:
        self.gateway = gateway
        self.by_sha = {item.sha256: batch_id for batch_id, item in scanned.items()}
        self.batch_ids = list(scanned)
        self.files = {f.name: f for f in files}
        self.report = report
        self.named = named

    async def sha_of(self, job: RemoteJob) -> str | None:
        """The sha256 of the upload the job was made from, when the server still has it."""
        if not job.input_file:
            return None
        remote = self.files.get(job.input_file)
        if remote is None and job.name in self.named:  # not listed: ask once, for the jobs the user named
            remote = await self.gateway.get_file(job.input_file)
            if remote is not None:
                self.files[remote.name] = remote
        return remote.sha256_hex if remote is not None else None

    async def place_job(self, job: RemoteJob) -> tuple[str | None, str]:
        """(the input file's batch id or None, how it was matched or why it was not)."""
        by_report = job.name in self.named
        by_line = match_by_display_name(self.report.get(job.name), self.batch_ids)
        by_name = match_by_display_name(job.display_name, self.batch_ids)
        sha = await self.sha_of(job)
        if sha is not None:
            batch_id = self.by_sha.get(sha)
            if batch_id is None:  # the content says another file, whatever the names say
                return None, f"its source file {job.input_file} has the content of no input file"
            ways = [f"by file ({job.input_file}, same sha256)"]
        elif by_name is not None:
            batch_id, ways = by_name, []
        elif by_line is not None:
            batch_id, ways = by_line, []
        else:
            return None, "neither its source file, its display name nor the report names an input file"
        if by_name == batch_id:
            ways.append("by display name")
        if by_report:
            ways.append("by report" + (" (its line names the file)" if by_line == batch_id else ""))
        return batch_id, ", ".join(ways)

    def batch_of_upload(self, remote: RemoteFile) -> str | None:
        return self.by_sha.get(remote.sha256_hex or "")


async def find_adoptions(args: argparse.Namespace, gateway: BatchBackend, scanned: dict[str, ScannedFile],
                         now: float, margin: float) -> Adoption:
    """Match every job on the account and the named or listed uploads to input files."""
    adoption = Adoption()
    text = args.jobs_file.read_text("utf-8", "replace") if args.jobs_file else ""
    named = list(dict.fromkeys(args.job + names_in_report(text)))
    jobs = await all_jobs(gateway)
    listed = {job.name for job in jobs}
    for name in named:
        if name in listed:
            continue
        job = await gateway.get_job(name)
        if job is None:
            adoption.unmatched.append(f"{name} (the server does not know it)")
        else:
            jobs.append(job)
    files = await gateway.list_files()
    matcher = _Matcher(gateway, scanned, files, report_lines(text), set(named))
    candidates: dict[str, list[tuple[RemoteJob, str]]] = {}
    ended: list[tuple[RemoteJob, str]] = []
    for job in jobs:
        batch_id, how = await matcher.place_job(job)
        if batch_id is None:
            if job.name in named:
                adoption.unmatched.append(f"{job.name} ({how})")
            elif job_is_usable(job):
                adoption.foreign_jobs += 1
            continue
        if job_is_usable(job):
            candidates.setdefault(batch_id, []).append((job, how))
        else:
            ended.append((job, batch_id))
    for batch_id, found in candidates.items():
        found.sort(key=lambda pair: job_preference(pair[0]), reverse=True)
        (best, how), rest = found[0], found[1:]
        adoption.jobs[batch_id] = best
        adoption.why[batch_id] = how
        if rest:
            adoption.why[batch_id] += (f"; {len(found)} jobs match {batch_id}: this one was chosen "
                                       "(succeeded first, then running or pending, then the oldest)")
        for other, _ in rest:
            adoption.not_adopted[other.name] = (f"{other.state_label}, a second job of {batch_id} ({best.name} was "
                                                "adopted); cancel it yourself if you do not want to pay for it")
    for job, batch_id in ended:
        chosen = adoption.jobs.get(batch_id)
        adoption.not_adopted[job.name] = job.state_label + (f" ({batch_id} has {chosen.name} adopted instead)" if chosen
                                                      else f" ({batch_id} will be submitted again)")
    dead_users = {job.input_file: job for job, _ in ended if job.input_file}
    remotes: list[RemoteFile] = []
    for name in args.upload:
        remote = matcher.files.get(name) or await gateway.get_file(name)
        if remote is None:
            adoption.unmatched.append(f"{name} (the server does not have it: expired or deleted)")
        else:
            remotes.append(remote)
    if args.match_uploads:
        remotes += [f for f in files if f.name not in args.upload]
    for remote in remotes:
        batch_id = matcher.batch_of_upload(remote)
        usable = remote.usable and (remote.expires_at is None or remote.expires_at - now > margin)
        if batch_id is None or not usable:
            if remote.name in args.upload:
                adoption.unmatched.append(remote.name if usable else f"{remote.name} (expires too soon to use)")
            continue
        if batch_id in adoption.jobs or batch_id in adoption.uploads:
            continue
        adoption.uploads[batch_id] = remote
        if remote.name in dead_users:
            dead = dead_users[remote.name]
            adoption.upload_notes[batch_id] = f"its job {dead.name} ended {dead.state_label}"
    return adoption


def apply_adoption(state: RunState, scanned: dict[str, tuple[Path, ScannedFile | Rejection]], adoption: Adoption,
                   now: float) -> list[BatchRecord]:
    """Records for the adopted jobs and uploads (and new ones for the other files); returns those it changed."""
    changed = []
    for batch_id, (path, item) in scanned.items():
        rec = state.records.get(batch_id)
        if rec is not None and rec.stage not in (Stage.NEW, Stage.VALIDATED, Stage.REJECTED):
            if batch_id in adoption.jobs or batch_id in adoption.uploads:
                adoption.already_tracked.append(batch_id)
                adoption.jobs.pop(batch_id, None)
                adoption.uploads.pop(batch_id, None)
            continue
        job, upload = adoption.jobs.get(batch_id), adoption.uploads.get(batch_id)
        if isinstance(item, Rejection) or (rec is not None and job is None and upload is None):
            continue  # the engine's own scan reports rejections and validates the rest
        if rec is None:
            rec = BatchRecord(batch_id=batch_id, source=str(path))
            state.records[batch_id] = rec
        rec.size_bytes, rec.sha256 = item.size_bytes, item.sha256
        rec.request_count, rec.est_tokens = item.request_count, item.est_tokens
        rec.job_kind = item.job_kind
        rec.mtime_ns = path.stat().st_mtime_ns
        if job is not None:
            rec.job_name, rec.display_name, rec.job_state = job.name, job.display_name, job.state_label
            rec.intent_at = job.create_time or now
            rec.result_name = job.result_file
            rec.stage = _STAGE_OF_JOB.get(job.state, Stage.PENDING)
            rec.note(now, f"adopted job {job.name} ({job.display_name}, {job.state_label}) made by another client, "
                          f"matched {adoption.why.get(batch_id, '')}")
        elif upload is not None:
            rec.upload_name, rec.upload_expires_at = upload.name, upload.expires_at
            rec.upload_adopted = True  # the engine looks once more for a job using it before its first create
            rec.stage = Stage.UPLOADED
            rec.note(now, f"adopted upload {upload.name} made by another client "
                          f"({adoption.upload_notes.get(batch_id, 'no job on the account uses it')})")
        else:
            rec.stage = Stage.VALIDATED
            rec.note(now, f"validated: {item.request_count} requests")
        changed.append(rec)
    return changed


async def _adopt(args: argparse.Namespace, settings: Settings, api_key: str,
                 clock: Callable[[], float] = time.time) -> Adoption:
    store = CheckpointStore(settings.checkpoint_path())
    gateway = open_backend(settings, api_key)
    try:
        if not args.dry_run:
            store.acquire_lock()
        state = await asyncio.to_thread(store.load)
        all_scanned = await asyncio.to_thread(scan_folder, settings)
        scanned = {b: item for b, (_, item) in all_scanned.items() if isinstance(item, ScannedFile)}
        now = clock()
        adoption = await find_adoptions(args, gateway, scanned, now, settings.transfer.upload_expiry_margin)
        fresh = state is None
        if state is None:
            state = RunState(run_id=secrets.token_hex(4), created_at=now, model=settings.model, records={},
                             learned={})
        changed = apply_adoption(state, all_scanned, adoption, now)
        if not args.dry_run:
            if fresh:
                await asyncio.to_thread(store.create, state)
            else:
                for rec in changed:
                    store.append(rec)
                await store.compact(state)
        return adoption
    finally:
        if not args.dry_run:
            store.release_lock()
        await gateway.aclose()


def run(args: argparse.Namespace) -> int:
    api_key = api_key_from_env()
    if api_key is None:
        raise WorkflowError(MISSING_KEY_MESSAGE)
    settings = load_config(args.config)
    settings.input_dir = existing_dir(args.input, "--input")
    settings.output_dir = args.output
    settings.checkpoint = args.checkpoint
    settings.model = args.model or settings.model
    settings.base_url = args.base_url or settings.base_url
    if args.jobs_file is not None and not args.jobs_file.is_file():
        raise WorkflowError(f"--jobs-file: file not found: {args.jobs_file}")
    try:
        adoption = asyncio.run(_adopt(args, settings, api_key))
    except CheckpointLocked as exc:
        raise WorkflowError(f"{exc}: stop that run first (adopt changes the checkpoint)") from None
    except (CheckpointError, GatewayError) as exc:
        raise WorkflowError(str(exc)) from None
    for line in adoption.lines():
        print(line)
    verb = "would adopt" if args.dry_run else "adopted"
    print(f"{verb} {len(adoption.jobs)} job(s) and {len(adoption.uploads)} upload(s); "
          f"checkpoint {settings.checkpoint_path()}" + ("" if args.dry_run else f"; now run: {next_command(args)}"))
    return EXIT_PROBLEMS if adoption.unmatched else EXIT_OK


def next_command(args: argparse.Namespace) -> str:
    """The command that resumes the adopted run, with the adopt command's own endpoint, checkpoint and config."""
    words = ["gembatch-tui", "--input", str(args.input), "--output", str(args.output)]
    for flag, value in (("--checkpoint", args.checkpoint), ("--config", args.config), ("--model", args.model),
                        ("--base-url", args.base_url)):
        if value is not None:
            words += [flag, str(value)]
    return shlex.join(words)
