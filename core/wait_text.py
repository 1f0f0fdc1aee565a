"""Admission's waits and beliefs in words, every time in UTC (the screen and the logs show UTC only).

Admission returns figures (`events.Wait`, `events.Belief`); the TUI panes, the headless progress lines and the
engine's log and record notes render them here, so that one wording and one time zone serve them all.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from .admission import format_tokens
from .events import Belief, Quota, Wait

SHORT_QUOTA = {  # fits the uploads pane at 80 columns
    Quota.ENQUEUED_TOKENS: "tokens",
    Quota.CONCURRENT_JOBS: "job cap",
    Quota.CREATES_PER_MINUTE: "creates/min",
    Quota.UNKNOWN: "429",
    None: "429",
}
_LIMIT_NAME = {
    Quota.ENQUEUED_TOKENS: "token budget",
    Quota.CONCURRENT_JOBS: "concurrent cap",
    Quota.CREATES_PER_MINUTE: "creates/min",
}


def utc_clock(at: float, *, seconds: bool = True) -> str:
    """14:02:05 UTC (or 14:02 UTC), whatever the machine's time zone."""
    return time.strftime("%H:%M:%S" if seconds else "%H:%M", time.gmtime(at)) + " UTC"


def _amount(quota: Quota | None, value: int) -> str:
    return format_tokens(value) if quota is Quota.ENQUEUED_TOKENS else str(value)


def limit_text(wait: Wait) -> str:
    """The limit reached, without the probe: "token budget 9.4k/9.9k + 521", "creates/min 48/48"."""
    name = _LIMIT_NAME.get(wait.quota, SHORT_QUOTA[wait.quota])
    text = f"{name} {_amount(wait.quota, wait.used or 0)}/{_amount(wait.quota, wait.limit or 0)}"
    if wait.adding is not None:
        text += f" + {format_tokens(wait.adding)}"
    return text


def wait_text(wait: Wait) -> str:
    """Why a create waits, in a line: "cooling (tokens) to 14:02:05 UTC", "concurrent cap 3/3 (guess; probe after
    14:17 UTC)", "probing tokens (token budget 9.4k/9.9k + 521)"."""
    if wait.kind == "cooling":
        until = f" to {utc_clock(wait.until)}" if wait.until is not None else ""
        return f"cooling ({SHORT_QUOTA[wait.quota]}){until}"
    text = limit_text(wait)
    if wait.kind == "probing":
        return f"probing {SHORT_QUOTA[wait.quota]} ({text})"
    if wait.probe_at is not None and wait.confidence in ("guess", "held by others"):
        text += f" ({wait.confidence}; probe after {utc_clock(wait.probe_at, seconds=False)})"
    return text


def belief_part(belief: Belief) -> str:
    """One learned limit and why: "tokens ~880k (guess, 14:02 UTC, probing)"."""
    notes = [belief.confidence,
             utc_clock(belief.learned_at, seconds=False) if belief.learned_at is not None else "from the checkpoint"]
    if belief.probing:
        notes.append("probing")
    return f"{SHORT_QUOTA[belief.quota]} ~{_amount(belief.quota, belief.value)} ({', '.join(notes)})"


def belief_text(beliefs: Iterable[Belief], other_jobs: int = 0) -> str:
    """Every learned limit in a line, and the other jobs on the account; "no limit learned" when there is none."""
    parts = [belief_part(b) for b in beliefs]
    if other_jobs:
        parts.append(f"{other_jobs} other jobs on the account")
    return "; ".join(parts) if parts else "no limit learned"
