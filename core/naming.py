"""Deterministic names that let the engine find its own uploads and jobs on the server again: this module
writes them and reads them back (the rebuild), so the two directions cannot drift apart."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_JOB_NAME = re.compile(r"^gembatch-(?P<run>[0-9a-f]+)-(?P<stem>.+)-(?P<sha12>[0-9a-f]{12})-a(?P<attempt>[0-9]+)$")


@dataclass(frozen=True, slots=True)
class JobName:
    """The parts of a job display name made by `job_display_name`."""

    run_id: str
    stem: str  # the file stem as written (unsafe characters replaced, at most 200 characters): see name_stem
    sha12: str
    attempt: int


def name_stem(batch_id: str) -> str:
    """The stem as it appears in a job display name."""
    return _UNSAFE.sub("_", batch_id)[:200]


def run_job_prefix(run_id: str) -> str:
    """What the display name of every job of run `run_id` starts with."""
    return f"gembatch-{run_id}-"


def job_display_name(run_id: str, batch_id: str, sha256: str, attempt: int) -> str:
    """The display name of a batch job: run id, file stem, content hash and attempt number."""
    return f"{run_job_prefix(run_id)}{name_stem(batch_id)}-{sha256[:12]}-a{attempt}"


def parse_job_display_name(display_name: str | None) -> JobName | None:
    """The parts of `gembatch-{run_id}-{stem}-{sha12}-a{attempt}`, or None for any other name."""
    match = _JOB_NAME.match(display_name or "")
    if match is None:
        return None
    return JobName(match["run"], match["stem"], match["sha12"], int(match["attempt"]))


def upload_display_name(sha256: str) -> str:
    """The display name of an uploaded input file: named by its content, so a repeat finds it."""
    return f"gembatch-upload-{sha256[:40]}"


def result_file_name(batch_id: str) -> str:
    """Where the results of input NAME.jsonl are saved, relative to the output folder."""
    return f"{batch_id}.results.jsonl"
