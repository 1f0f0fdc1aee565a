"""`gembatch-tui status`: a run's state from its checkpoint, without the TUI and without taking the lock."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..admission import OTHER_JOBS_PENDING, OTHER_JOBS_RUNNING, OTHER_JOBS_SEEN_AT
from ..checkpoint_format import CheckpointError, RunState
from ..checkpoint_lock import LockHolder
from ..checkpoint_store import CheckpointStore
from ..model import BatchRecord, Stage
from .common import EXIT_OK, WorkflowError, parser_for, print_json

LAST_ERRORS = 5
_READ_ATTEMPTS = 5  # a compaction running at the same moment can make one read see a half-rotated journal

DESCRIPTION = """\
Show a run's state from its checkpoint file: batches per stage, progress in batches and requests,
uploads waiting for their job to be created (with the time left before the uploaded file expires),
the last errors, and what the engine learned about the quotas. With --json, also one entry per batch
in "batch_list" (file, stage, job name, attempt, requests ok and failed, last error, upload expiry).

It only reads: it does not take the checkpoint's lock, so it works while a run holds it (from another
terminal, over SSH, in a script). A line says whether a run holds the checkpoint now."""

EPILOG = """\
example:
  gembatch-tui status --checkpoint results/gembatch.checkpoint.json
  gembatch-tui status --checkpoint results/gembatch.checkpoint.json --json | jq .counts
  gembatch-tui status --checkpoint results/gembatch.checkpoint.json --json \\
    | jq '.batch_list[] | select(.stage == "failed") | {file, last_error}'

exit codes:
  0  the status was shown
  2  bad usage, or the checkpoint is missing or cannot be read"""


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("status", DESCRIPTION, EPILOG)
    parser.add_argument("--checkpoint", metavar="FILE", type=Path, required=True,
                        help="the run's checkpoint (default name: OUTPUT/gembatch.checkpoint.json)")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    return parser


def read_state(path: Path) -> tuple[RunState, LockHolder | None]:
    """The run state (journal replayed) and who holds the lock; raises WorkflowError when unreadable."""
    if not path.exists():
        raise WorkflowError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise WorkflowError(f"{path}: is a folder; give the checkpoint file (e.g. {path}/gembatch.checkpoint.json)")
    last: CheckpointError | None = None
    for attempt in range(_READ_ATTEMPTS):
        store = CheckpointStore(path)
        try:
            state = store.load()
        except CheckpointError as exc:
            last = exc
            time.sleep(0.05 * (attempt + 1))
            continue
        if state is None:
            raise WorkflowError(f"{path}: checkpoint not found")
        return state, store.read_holder()
    raise WorkflowError(str(last))


def _ended(records: list[BatchRecord]) -> int:
    return sum(1 for rec in records if rec.stage.ended)


def _results_missing(records: list[BatchRecord]) -> list[dict[str, Any]]:
    """Batches counted as done whose results file is gone or has another size than when it was saved."""
    missing = []
    for rec in records:
        if rec.stage is not Stage.DOWNLOADED or not rec.result_path:
            continue
        try:
            size: int | None = os.stat(rec.result_path).st_size
        except OSError:
            size = None
        if size is None or (rec.result_size is not None and size != rec.result_size):
            missing.append({"batch_id": rec.batch_id, "result_path": rec.result_path,
                            "problem": "missing" if size is None else "changed"})
    return missing


def status_dict(path: Path, state: RunState, holder: LockHolder | None, now: float) -> dict[str, Any]:
    """Everything the status shows, as plain data (the --json output)."""
    records = list(state.records.values())
    counts = {str(stage): n for stage in Stage if (n := sum(1 for r in records if r.stage is stage))}
    waiting = [
        {
            "batch_id": rec.batch_id, "upload_name": rec.upload_name, "expires_at": rec.upload_expires_at,
            "seconds_left": None if rec.upload_expires_at is None else round(rec.upload_expires_at - now, 1),
            "wait_reason": rec.wait_reason,
        }
        for rec in records if rec.stage is Stage.UPLOADED
    ]
    errors = sorted((rec for rec in records if rec.last_error), key=lambda r: r.updated_at, reverse=True)
    in_flight = [{"batch_id": r.batch_id, "stage": str(r.stage), "job_name": r.job_name, "job_state": r.job_state,
                  "attempt": r.attempt} for r in records if r.stage.job_in_flight]
    return {
        "checkpoint": str(path),
        "run_id": state.run_id,
        "model": state.model,
        "created_at": state.created_at,
        "held_by": None if holder is None else {"pid": holder.pid, "host": holder.host,
                                                "since": holder.started_at},
        "batches": len(records),
        "ended": _ended(records),
        "counts": counts,
        "requests": {
            "total": sum(r.request_count for r in records),
            "succeeded": sum(r.succeeded_count for r in records),
            "failed": sum(r.failed_count for r in records),
            "done_batches_requests": sum(r.request_count for r in records if r.stage is Stage.DOWNLOADED),
        },
        "est_tokens": sum(r.est_tokens for r in records),
        "uploads_waiting": waiting,
        "jobs_in_flight": in_flight,
        "last_errors": [{"batch_id": r.batch_id, "stage": str(r.stage), "at": r.updated_at, "error": r.last_error}
                        for r in errors[:LAST_ERRORS]],
        "errors_total": len(errors),
        "learned": {k: v for k, v in state.learned.items() if k not in _OTHER_JOBS_KEYS},
        "other_jobs": _other_jobs(state.learned),
        "results_missing": _results_missing(records),
        "now": now,
        "batch_list": [batch_entry(rec, now) for rec in records],
    }


_OTHER_JOBS_KEYS = (OTHER_JOBS_PENDING, OTHER_JOBS_RUNNING, OTHER_JOBS_SEEN_AT)


def _other_jobs(learned: dict[str, float | int]) -> dict[str, Any] | None:
    """Unended jobs on the account that are not this run's, as the run's last poll saw them (None: not looked)."""
    if OTHER_JOBS_SEEN_AT not in learned:
        return None
    return {"pending": int(learned.get(OTHER_JOBS_PENDING, 0)), "running": int(learned.get(OTHER_JOBS_RUNNING, 0)),
            "since": learned[OTHER_JOBS_SEEN_AT]}


def batch_entry(rec: BatchRecord, now: float) -> dict[str, Any]:
    """One batch as `status --json` lists it: what a script asks about a file (which stage, which job, why)."""
    expires = rec.upload_expires_at
    return {
        "batch_id": rec.batch_id, "file": rec.source, "stage": str(rec.stage), "job_name": rec.job_name,
        "job_state": rec.job_state, "attempt": rec.attempt, "requests": rec.request_count,
        "requests_ok": rec.succeeded_count, "requests_failed": rec.failed_count, "last_error": rec.last_error,
        "upload_name": rec.upload_name, "upload_expires_at": expires,
        "upload_seconds_left": None if expires is None else round(expires - now, 1),
        "result_path": rec.result_path,
    }


def _clock(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "expired"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


_LEARNED_LABELS: dict[str, tuple[str, Callable[[float], str]]] = {
    "token_budget": ("enqueued-token budget", lambda v: f"{int(v):,} tokens"),
    "max_jobs": ("concurrent jobs", lambda v: f"{int(v)}"),
    "creates_per_minute": ("creates per minute", lambda v: f"{int(v)}"),
    "accepted_tokens_max": ("most tokens the server accepted at once", lambda v: f"{int(v):,}"),
    "accepted_jobs_max": ("most jobs the server held at once", lambda v: f"{int(v)}"),
    "accepted_creates_max": ("most creates it accepted in a minute", lambda v: f"{int(v)}"),
}


def format_status(data: dict[str, Any]) -> str:
    lines = [f"checkpoint {data['checkpoint']}",
             f"run {data['run_id']}, model {data['model']}, started {_clock(data['created_at'])}"]
    held = data["held_by"]
    lines.append("a run holds it now: pid {pid} on {host}, since {since}".format(
        pid=held["pid"], host=held["host"], since=_clock(held["since"]) if held["since"] else "?")
        if held else "no run holds it now")
    total, ended = data["batches"], data["ended"]
    counts = ", ".join(f"{stage} {n}" for stage, n in data["counts"].items()) or "none"
    lines.append(f"batches: {total} ({counts})")
    req = data["requests"]
    share = f" ({100 * ended / total:.0f}%)" if total else ""
    lines.append(f"progress: {ended}/{total} batches ended{share}; requests {req['succeeded']:,} answered, "
                 f"{req['failed']:,} failed, of {req['total']:,}")
    if data["jobs_in_flight"]:
        lines.append(f"jobs in flight: {len(data['jobs_in_flight'])}")
    waiting = data["uploads_waiting"]
    if waiting:
        lines.append(f"uploads waiting for their job ({len(waiting)}):")
        for item in waiting:
            left = "expiry unknown" if item["seconds_left"] is None else f"expires in {_duration(item['seconds_left'])}"
            reason = f"; waiting: {item['wait_reason']}" if item["wait_reason"] else ""
            lines.append(f"  {item['batch_id']}  {item['upload_name'] or '?'}  {left}{reason}")
    if data["last_errors"]:
        lines.append(f"last errors ({len(data['last_errors'])} of {data['errors_total']}):")
        for item in data["last_errors"]:
            lines.append(f"  {item['batch_id']} [{item['stage']}] {_clock(item['at']) if item['at'] else ''}: "
                         f"{item['error']}")
    if data.get("results_missing"):
        gone = data["results_missing"]
        lines.append(f"results missing or changed since saved ({len(gone)}; the next run fetches them again): "
                     + ", ".join(f"{item['result_path']} ({item['problem']})" for item in gone[:5])
                     + (f" and {len(gone) - 5} more" if len(gone) > 5 else ""))
    others = data.get("other_jobs")
    if others is not None:
        held = ", ".join(f"{others[state]} {state}" for state in ("pending", "running") if others[state]) or "none"
        lines.append(f"other jobs on the account (not this run's, left alone): {held} "
                     f"(as seen since {_clock(others['since'])})")
    learned = data["learned"]
    if learned:
        parts = []
        for key, value in learned.items():
            label, show = _LEARNED_LABELS.get(key, (key, lambda v: f"{v:g}"))
            parts.append(f"{label} {show(value)}")
        lines.append("learned from the server: " + "; ".join(parts))
    else:
        lines.append("learned from the server: nothing yet (no quota answer so far)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    state, holder = read_state(args.checkpoint)
    data = status_dict(args.checkpoint, state, holder, time.time())
    if args.json:
        print_json(data)
    else:
        print(format_status(data))
    return EXIT_OK
