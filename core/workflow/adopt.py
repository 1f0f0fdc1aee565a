"""`gembatch-tui adopt`: take over a run that another script left half done, so nothing is uploaded or created twice.

Jobs are named by the user (`--job`, `--jobs-file` with a hand-written report) or found by listing the account's
batches (`--match-display-names`); uploads are named (`--upload`) or found by listing the files (`--match-uploads`).
Each is tied to an input file by content first (the job's input file, or the upload, carries the sha256 of the
bytes it was made from), then by the input file's name appearing in the job's display name. The result is a
checkpoint that the normal command resumes: adopted jobs are polled and downloaded, adopted uploads are created
from, and only the rest is uploaded and created.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import CheckpointError, CheckpointLocked, CheckpointStore, RunState
from ..config import Settings
from ..gateway import Gateway, GatewayError, RemoteFile, RemoteJob
from ..input_scan import Rejection, ScannedFile
from ..model import BatchRecord, Stage
from ..rebuild import all_jobs, scan_folder
from ..redact import MISSING_KEY_MESSAGE, api_key_from_env
from .common import EXIT_OK, EXIT_PROBLEMS, WorkflowError, add_config_flag, existing_dir, load_config, parser_for

DESCRIPTION = """\
Take over work that another script started, so that it finishes under gembatch-tui without uploading or
creating anything twice: existing batch jobs (named, listed in a text file such as a hand-written report,
or found by listing the account's batches) and files already uploaded (named, or found by listing).

Each job or upload is tied to an input file by content (the sha256 of the file it was made from), else by
the input file's name appearing in the job's display name. The checkpoint then holds them, and the normal
command (gembatch-tui --input DIR --output DIR) polls the adopted jobs, downloads their results, creates
jobs from the adopted uploads, and uploads and creates only what is left. Batches the checkpoint already
tracks are left as they are. Failed, cancelled or expired jobs are not adopted: their files are submitted again.

Needs the API key in GEMINI_API_KEY (or GOOGLE_API_KEY)."""

EPILOG = """\
example:
  gembatch-tui adopt --input batches/ --output results/ --jobs-file report.txt
  gembatch-tui adopt --input batches/ --output results/ --match-display-names --match-uploads --dry-run

exit codes:
  0  adopted (or, with --dry-run, listed what would be adopted)
  3  some named jobs or uploads match no input file (the others were adopted; those are listed)
  2  bad usage, no API key, a checkpoint in use by a running engine, or the server could not be read"""

_JOB_NAME = re.compile(r"batches/[A-Za-z0-9_-]+")
_LIVE_JOB_STAGES = {"JOB_STATE_PENDING": Stage.PENDING, "JOB_STATE_RUNNING": Stage.RUNNING,
                    "JOB_STATE_SUCCEEDED": Stage.SUCCEEDED}
_RANK = {"JOB_STATE_SUCCEEDED": 3, "JOB_STATE_RUNNING": 2, "JOB_STATE_PENDING": 2}


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
                        help="list the account's batches and adopt those whose display name names an input file")
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
    uploads: dict[str, RemoteFile] = field(default_factory=dict)  # batch id -> adopted upload
    not_adopted: dict[str, str] = field(default_factory=dict)  # job name -> why (ended unsuccessfully, …)
    unmatched: list[str] = field(default_factory=list)  # named jobs/uploads that fit no input file
    already_tracked: list[str] = field(default_factory=list)  # batch ids the checkpoint already follows

    def lines(self) -> list[str]:
        """A human summary, one line each."""
        out = [f"{batch_id}: job {job.name} ({job.display_name or 'no display name'}, {job.state})"
               for batch_id, job in sorted(self.jobs.items())]
        out += [f"{batch_id}: upload {f.name} (no job yet: a job will be created from it)"
                for batch_id, f in sorted(self.uploads.items())]
        out += [f"left alone: {name}: {why}" for name, why in sorted(self.not_adopted.items())]
        out += [f"already tracked by the checkpoint: {batch_id}" for batch_id in self.already_tracked]
        out += [f"matches no input file: {name}" for name in self.unmatched]
        return out


def names_in_report(text: str) -> list[str]:
    """Every `batches/...` job name in a free-form text, in order, once each."""
    return list(dict.fromkeys(_JOB_NAME.findall(text)))


def match_by_display_name(display_name: str | None, batch_ids: list[str]) -> str | None:
    """The input file whose name appears in the display name (the longest, when several do); None if none."""
    if not display_name:
        return None
    hits = [b for b in batch_ids if re.search(rf"(?<![A-Za-z0-9]){re.escape(b)}(?![A-Za-z0-9])", display_name)]
    return max(hits, key=len) if hits else None


class _Matcher:
    """Ties jobs and uploads to input files: by content hash first, then by name."""

    def __init__(self, gateway: Gateway, scanned: dict[str, ScannedFile]) -> None:
        self.gateway = gateway
        self.by_sha = {item.sha256: batch_id for batch_id, item in scanned.items()}
        self.batch_ids = list(scanned)
        self._file_sha: dict[str, str | None] = {}

    async def sha_of(self, file_name: str) -> str | None:
        if file_name not in self._file_sha:
            remote = await self.gateway.get_file(file_name)
            self._file_sha[file_name] = remote.sha256_hex if remote is not None else None
        return self._file_sha[file_name]

    async def batch_of_job(self, job: RemoteJob) -> str | None:
        if job.input_file:
            sha = await self.sha_of(job.input_file)
            if sha in self.by_sha:
                return self.by_sha[sha]
        return match_by_display_name(job.display_name, self.batch_ids)

    def batch_of_upload(self, remote: RemoteFile) -> str | None:
        return self.by_sha.get(remote.sha256_hex or "")


async def find_adoptions(args: argparse.Namespace, gateway: Gateway, scanned: dict[str, ScannedFile],
                         now: float, margin: float) -> Adoption:
    """Look up the named or listed jobs and uploads and tie each to an input file."""
    adoption = Adoption()
    matcher = _Matcher(gateway, scanned)
    named = list(dict.fromkeys(args.job + (names_in_report(args.jobs_file.read_text("utf-8", "replace"))
                                            if args.jobs_file else [])))
    jobs: list[RemoteJob] = []
    for name in named:
        job = await gateway.get_job(name)
        if job is None:
            adoption.unmatched.append(f"{name} (the server does not know it)")
        else:
            jobs.append(job)
    if args.match_display_names:
        jobs += [job for job in await all_jobs(gateway) if job.name not in named]
    for job in jobs:
        batch_id = await matcher.batch_of_job(job)
        if batch_id is None:
            if job.name in named:
                adoption.unmatched.append(job.name)
            continue
        if job.state not in _LIVE_JOB_STAGES:
            adoption.not_adopted[job.name] = f"{job.state} ({batch_id} will be submitted again)"
            continue
        best = adoption.jobs.get(batch_id)
        if best is None or _RANK[job.state] > _RANK[best.state]:
            adoption.jobs[batch_id] = job
    remotes: list[RemoteFile] = []
    for name in args.upload:
        remote = await gateway.get_file(name)
        if remote is None:
            adoption.unmatched.append(f"{name} (the server does not have it: expired or deleted)")
        else:
            remotes.append(remote)
    if args.match_uploads:
        remotes += [f for f in await gateway.list_files() if f.name not in args.upload]
    for remote in remotes:
        batch_id = matcher.batch_of_upload(remote)
        usable = remote.state in (None, "ACTIVE") and (remote.expires_at is None or remote.expires_at - now > margin)
        if batch_id is None or not usable:
            if remote.name in args.upload:
                adoption.unmatched.append(remote.name if usable else f"{remote.name} (expires too soon to use)")
            continue
        if batch_id not in adoption.jobs:
            adoption.uploads.setdefault(batch_id, remote)
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
        rec.mtime_ns = path.stat().st_mtime_ns
        if job is not None:
            rec.job_name, rec.display_name, rec.job_state = job.name, job.display_name, job.state
            rec.intent_at = job.create_time or now
            rec.result_name = job.result_file
            rec.stage = _LIVE_JOB_STAGES[job.state]
            rec.note(now, f"adopted job {job.name} ({job.display_name}) made by another client")
        elif upload is not None:
            rec.upload_name, rec.upload_expires_at = upload.name, upload.expires_at
            rec.stage = Stage.UPLOADED
            rec.note(now, f"adopted upload {upload.name} made by another client")
        else:
            rec.stage = Stage.VALIDATED
            rec.note(now, f"validated: {item.request_count} requests")
        changed.append(rec)
    return changed


async def _adopt(args: argparse.Namespace, settings: Settings, api_key: str,
                 clock: Callable[[], float] = time.time) -> Adoption:
    store = CheckpointStore(settings.checkpoint_path())
    gateway = Gateway(api_key=api_key, model=settings.model, base_url=settings.base_url,
                      timeout=settings.transfer.request_timeout, max_retries=settings.transfer.max_retries,
                      retry_max_wait=settings.transfer.retry_max_wait)
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
    if not (args.job or args.jobs_file or args.match_display_names or args.upload or args.match_uploads):
        raise WorkflowError("nothing to adopt: give --job, --jobs-file, --match-display-names, --upload or "
                            "--match-uploads")
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
          f"checkpoint {settings.checkpoint_path()}" + ("" if args.dry_run else
                                                        "; now run: gembatch-tui --input DIR --output DIR"))
    return EXIT_PROBLEMS if adoption.unmatched else EXIT_OK
