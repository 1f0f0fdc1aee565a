"""`gembatch-tui cleanup`: delete a finished run's files from the project's storage, and show what it uses."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backend import BatchBackend, GatewayError, RemoteFile
from ..model import Stage
from ..naming import upload_display_name
from ..redact import api_key_from_env, redact
from .common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    WorkflowError,
    human_bytes,
    load_config,
    open_backend,
    parser_for,
    print_json,
)
from .status import read_state

STORAGE_CAP_BYTES = 20 * 1000**3  # 20 GB per project

DESCRIPTION = """\
Delete the files a finished run left in the project's storage: the uploaded input files of batches
whose results are downloaded (stage "downloaded"), including earlier uploads of the same content, and
the result files (files/batch-...) of those jobs. Only files that files.list shows are deleted.
Files of batches that are not downloaded yet, and files that another batch of the run still uses,
are kept. The checkpoint is only read (a run may hold it).

It shows the project's storage use (the sizes files.list reports, all files of the project) against the
20 GB cap, before and after. Files expire by themselves after 48 hours; cleanup frees the space sooner.
Without --dry-run or --yes it asks before deleting (and refuses when there is no terminal to ask on).

Needs the API key in GEMINI_API_KEY (or GOOGLE_API_KEY)."""

EPILOG = """\
example:
  gembatch-tui cleanup --checkpoint results/gembatch.checkpoint.json --dry-run
  gembatch-tui cleanup --checkpoint results/gembatch.checkpoint.json --yes

exit codes:
  0  done (or nothing to delete, or the dry run listed what would go)
  3  some files could not be deleted (listed; they expire after 48 h anyway)
  2  bad usage, no API key, an unreadable checkpoint, or the file list could not be read"""


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("cleanup", DESCRIPTION, EPILOG)
    parser.add_argument("--checkpoint", metavar="FILE", type=Path, required=True, help="the run's checkpoint")
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    parser.add_argument("--yes", action="store_true", help="delete without asking")
    parser.add_argument("--base-url", metavar="URL",
                        help="API endpoint instead of Google's (default: base_url of the config, if any)")
    parser.add_argument("--json", action="store_true", help="print the plan and the outcome as JSON")
    parser.add_argument("--config", metavar="FILE", type=Path, help="TOML config file (for base_url and timeouts)")
    return parser


@dataclass
class Candidate:
    """A file that may go: its name, why, its size when the server listed it."""

    name: str
    batch_id: str
    kind: str  # "upload" or "result"
    size_bytes: int | None


@dataclass
class Plan:
    """What cleanup found and did."""

    storage_before: int = 0
    files_before: int = 0
    candidates: list[Candidate] = field(default_factory=list)
    kept_in_use: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # the run's files the server no longer lists
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def freed(self) -> int:
        sizes = {c.name: c.size_bytes or 0 for c in self.candidates}
        return sum(sizes[name] for name in self.deleted)

    def to_json(self, dry_run: bool) -> dict[str, Any]:
        return {
            "dry_run": dry_run, "storage_cap_bytes": STORAGE_CAP_BYTES,
            "storage_bytes_before": self.storage_before, "files_before": self.files_before,
            "storage_bytes_after": self.storage_before - self.freed,
            "candidates": [{"name": c.name, "batch_id": c.batch_id, "kind": c.kind, "size_bytes": c.size_bytes}
                           for c in self.candidates],
            "kept_in_use": self.kept_in_use, "already_gone": self.gone, "deleted": self.deleted,
            "failed": self.failed,
        }


def plan_cleanup(state_records: dict[str, Any], files: list[RemoteFile]) -> Plan:
    """Which files may go, from the checkpoint's records and the server's file list."""
    plan = Plan(storage_before=sum(f.size_bytes or 0 for f in files), files_before=len(files))
    listed = {f.name: f for f in files}
    by_display: dict[str, list[RemoteFile]] = {}
    for f in files:
        if f.display_name:
            by_display.setdefault(f.display_name, []).append(f)
    in_use: set[str] = set()  # names and upload display names a batch that is not done may still need
    for rec in state_records.values():
        if rec.stage is not Stage.DOWNLOADED:
            if rec.upload_name:
                in_use.add(rec.upload_name)
            if rec.sha256:
                in_use.add(upload_display_name(rec.sha256))
    seen: set[str] = set()

    def add(name: str, batch_id: str, kind: str) -> None:
        remote = listed.get(name)
        if name in seen:
            return
        seen.add(name)
        if remote is None:  # the list is what the server holds: a file not in it is gone (expired or deleted)
            plan.gone.append(name)
            return
        plan.candidates.append(Candidate(name, batch_id, kind, remote.size_bytes))

    for rec in state_records.values():
        if rec.stage is not Stage.DOWNLOADED:
            continue
        uploads = [rec.upload_name] if rec.upload_name else []
        if rec.sha256:  # earlier uploads of the same content (re-uploads after an expiry)
            uploads += [f.name for f in by_display.get(upload_display_name(rec.sha256), [])]
        for name in uploads:
            display = listed[name].display_name if name in listed else None
            if name in in_use or (display is not None and display in in_use):
                if name not in plan.kept_in_use:
                    plan.kept_in_use.append(name)
                continue
            add(name, rec.batch_id, "upload")
        if rec.result_name:
            add(rec.result_name, rec.batch_id, "result")
    return plan


async def _list_files(gateway: BatchBackend) -> list[RemoteFile]:
    try:
        return await gateway.list_files()
    except GatewayError as exc:
        raise WorkflowError(f"cannot list the project's files: {redact(str(exc))}") from None


async def _delete(gateway: BatchBackend, plan: Plan) -> None:
    for candidate in plan.candidates:
        try:
            await gateway.delete_file(candidate.name)
        except GatewayError as exc:
            reason = redact(str(exc))
            if candidate.kind == "result" and "40 characters" in reason:
                reason += " (a known server limit on long files/batch-… names)"
            plan.failed[candidate.name] = reason
        else:
            plan.deleted.append(candidate.name)


def _confirm(plan: Plan) -> bool:
    if not sys.stdin.isatty():
        raise WorkflowError("there is no terminal to ask on: give --yes to delete, or --dry-run to only list")
    size = human_bytes(sum(c.size_bytes or 0 for c in plan.candidates))
    answer = input(f"delete {len(plan.candidates)} file(s), {size}? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _storage_line(used: int, label: str) -> str:
    return (f"storage {label}: {human_bytes(used)} of {human_bytes(STORAGE_CAP_BYTES)} "
            f"({100 * used / STORAGE_CAP_BYTES:.1f}% of the per-project cap)")


def _print_plan(plan: Plan, dry_run: bool) -> None:
    print(_storage_line(plan.storage_before, "now") + f", {plan.files_before} file(s)")
    if not plan.candidates:
        print("nothing to delete: no downloaded batch has files left on the server")
    else:
        verb = "would delete" if dry_run else "to delete"
        print(f"{verb} {len(plan.candidates)} file(s):")
        for c in plan.candidates:
            size = human_bytes(c.size_bytes) if c.size_bytes is not None else "size unknown"
            print(f"  {c.name}  {c.kind} of {c.batch_id}  {size}")
    if plan.gone:
        print(f"{len(plan.gone)} file(s) of finished batches are gone already (expired or deleted)")
    for name in plan.kept_in_use:
        print(f"  kept {name}: a batch that is not done yet may still use it")


async def _cleanup(args: argparse.Namespace, api_key: str) -> tuple[Plan, bool]:
    settings = load_config(args.config)
    state, _holder = read_state(args.checkpoint)
    base_url = args.base_url or settings.base_url
    gateway = open_backend(settings, api_key, model=state.model, base_url=base_url)
    try:
        files = await _list_files(gateway)
        plan = plan_cleanup(state.records, files)
        if not args.json:
            _print_plan(plan, args.dry_run)
        if args.dry_run or not plan.candidates:
            return plan, True
        if not args.yes and not _confirm(plan):
            print("nothing deleted")
            return plan, True
        await _delete(gateway, plan)
        return plan, False
    finally:
        await gateway.aclose()


def run(args: argparse.Namespace) -> int:
    api_key = api_key_from_env()
    if api_key is None:
        raise WorkflowError("no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment")
    if args.base_url is not None and not args.base_url.startswith(("http://", "https://")):
        raise WorkflowError(f"--base-url: expected an http:// or https:// URL, got {args.base_url!r}")
    plan, nothing_done = asyncio.run(_cleanup(args, api_key))
    if args.json:
        print_json(plan.to_json(args.dry_run))
    elif not nothing_done:
        print(f"deleted {len(plan.deleted)} file(s), freed {human_bytes(plan.freed)}")
        for name, reason in plan.failed.items():
            print(f"  could not delete {name}: {reason}")
        print(_storage_line(plan.storage_before - plan.freed, "after"))
    return EXIT_PROBLEMS if plan.failed else EXIT_OK
