"""What a user needs on leaving a run: jobs still on the server, uploads waiting, counts, and how to resume."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

from .config import CONFIG_ENV, Settings
from .exit_codes import EXIT_INCOMPLETE, EXIT_OK
from .model import BatchRecord, Stage
from .progress_report import count_batches, span, utc_stamp
from .redact import redact

PROGRAM = "gembatch-tui"
LIST_LIMIT = 20  # names listed per section; `status` lists them all
_PATH_FLAGS = frozenset({"--input", "--output", "--checkpoint", "--config"})
_VALUE_FLAGS = _PATH_FLAGS | {
    "--model", "--base-url", "--poll-interval", "--max-attempts", "--max-concurrent-jobs", "--token-budget",
    "--creates-per-minute", "--upload-concurrency", "--cost-limit-usd", "--progress-interval",
}
_ONCE_FLAGS = frozenset({"--rebuild-from-server"})  # done by the run that was given it; not again on resume


def resume_command(settings: Settings, argv: Sequence[str] | None = None, cwd: Path | None = None) -> str | None:
    """The command that resumes this run from any folder: the same flags, paths made absolute, one-off flags
    dropped, --config added when the file came from $GEMBATCH_CONFIG; None for the demo (nothing to resume)."""
    if settings.demo:
        return None
    here = cwd or Path.cwd()
    words = list(argv) if argv is not None else _flags_from(settings)
    out: list[str] = [PROGRAM]
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        flag, equals, value = word.partition("=")
        if flag in _ONCE_FLAGS:
            continue
        if flag in _VALUE_FLAGS:
            if not equals:
                if index >= len(words):
                    out.append(word)
                    break
                value = words[index]
                index += 1
            if flag in _PATH_FLAGS:
                value = os.path.normpath(here / Path(value).expanduser())
            out.extend((flag, value))
            continue
        out.append(word)
    if "--config" not in out and settings.config_path is not None and os.environ.get(CONFIG_ENV):
        out.extend(("--config", os.path.normpath(here / settings.config_path)))
    return redact(shlex.join(out))


def _flags_from(settings: Settings) -> list[str]:
    """The flags of a run known only by its settings (no command line at hand)."""
    words: list[str] = []
    for flag, value in (("--config", settings.config_path), ("--input", settings.input_dir),
                        ("--output", settings.output_dir), ("--checkpoint", settings.checkpoint),
                        ("--base-url", settings.base_url)):
        if value is not None:
            words.extend((flag, str(value)))
    if settings.headless:
        words.append("--headless")
    return words


def leaving_summary(
    records: Iterable[BatchRecord],
    settings: Settings,
    exit_code: int,
    *,
    now: float,
    argv: Sequence[str] | None = None,
    log_path: Path | None = None,
    cwd: Path | None = None,
) -> str:
    """The text printed on stdout when a run (TUI or headless) is left, finished or not."""
    recs = list(records)
    counts = count_batches(recs)
    lines: list[str] = []
    if not counts.work_left:
        if exit_code == EXIT_OK:
            lines.append(f"{PROGRAM}: finished (exit code {exit_code}): every file's results are saved.")
        else:
            lines.append(f"{PROGRAM}: finished (exit code {exit_code}): {counts.ended_badly} batch(es) ended "
                         "without results; `r` in the UI submits one again, `retry-failures` collects failed requests.")
    else:
        lines.append(f"{PROGRAM}: stopped with work left (exit code {exit_code}); the checkpoint is saved.")
    stages = ", ".join(f"{n} {stage}" for stage, n in counts.by_stage.items())
    lines.append(f"  batches: {counts.total} ({stages or 'none'})")
    lines.append(f"  requests answered: {counts.requests_answered} of {counts.requests_total}")
    on_server = [r for r in recs if r.job_name and r.stage in (Stage.CREATING, Stage.PENDING, Stage.RUNNING)]
    if on_server:
        lines.append(f"  jobs still on the server ({len(on_server)}); they go on running without us and the resumed "
                     "run picks them up:")
        lines.extend(_listed(on_server, lambda r: f"{r.batch_id}  {r.job_name}  {r.job_state or r.stage}"))
    results = [r for r in recs if r.stage is Stage.SUCCEEDED]
    if results:
        lines.append(f"  jobs succeeded, results not downloaded yet ({len(results)}):")
        lines.extend(_listed(results, lambda r: f"{r.batch_id}  {r.job_name or '?'}  results {r.result_name or '?'}"))
    unknown = [r for r in recs if r.stage is Stage.CREATING and not r.job_name]
    if unknown:
        lines.append(f"  creates whose outcome is unknown ({len(unknown)}); the resumed run looks for them by "
                     "display name before creating anything:")
        lines.extend(_listed(unknown, lambda r: f"{r.batch_id}  {r.display_name or '?'}"))
    waiting = [r for r in recs if r.stage is Stage.UPLOADED and r.upload_name]
    if waiting:
        lines.append(f"  uploads waiting for their job ({len(waiting)}); uploaded again if they expire first:")
        lines.extend(_listed(waiting, lambda r: f"{r.batch_id}  {r.upload_name}  {_expiry(r, now)}"))
    ended_badly = [r for r in recs if r.stage in (Stage.FAILED, Stage.CANCELLED, Stage.EXPIRED, Stage.REJECTED)]
    if ended_badly:
        lines.append(f"  ended without results ({len(ended_badly)}):")
        lines.extend(_listed(ended_badly, lambda r: f"{r.batch_id}  {r.stage}  {_short(r.last_error)}"))
    if log_path is not None:
        lines.append(f"  log: {log_path}")
    lines.append(f"  status: {PROGRAM} status --checkpoint {shlex.quote(_absolute(settings, cwd))}")
    if counts.work_left:
        command = resume_command(settings, argv, cwd)
        if command is None:
            lines.append("  resume: none (the demo's emulator stops with it)")
        else:
            lines.append(f"  resume: {command}")
    elif exit_code == EXIT_INCOMPLETE:
        lines.append(f"  retry failed requests: {PROGRAM} retry-failures --help")
    return redact("\n".join(lines) + "\n")


def _listed(recs: list[BatchRecord], describe) -> list[str]:
    shown = [f"    {describe(r)}" for r in recs[:LIST_LIMIT]]
    if len(recs) > LIST_LIMIT:
        shown.append(f"    ... and {len(recs) - LIST_LIMIT} more (`{PROGRAM} status` lists them all)")
    return shown


def _expiry(rec: BatchRecord, now: float) -> str:
    if rec.upload_expires_at is None:
        return "expiry unknown"
    left = rec.upload_expires_at - now
    when = utc_stamp(rec.upload_expires_at)
    return f"expires {when} (in {span(left)})" if left > 0 else f"expired {when}"


def _short(text: str | None, width: int = 100) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _absolute(settings: Settings, cwd: Path | None) -> str:
    return os.path.normpath((cwd or Path.cwd()) / settings.checkpoint_path())
