"""Deterministic names that let the engine find its own uploads and jobs on the server again."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def job_display_name(run_id: str, batch_id: str, sha256: str, attempt: int) -> str:
    """The display name of a batch job: run id, file stem, content hash and attempt number."""
    stem = _UNSAFE.sub("_", batch_id)[:200]
    return f"gembatch-{run_id}-{stem}-{sha256[:12]}-a{attempt}"


def upload_display_name(sha256: str) -> str:
    """The display name of an uploaded input file: named by its content, so a repeat finds it."""
    return f"gembatch-upload-{sha256[:40]}"


def result_file_name(batch_id: str) -> str:
    """Where the results of input NAME.jsonl are saved, relative to the output folder."""
    return f"{batch_id}.results.jsonl"
