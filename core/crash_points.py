"""Named places where a test can make the engine die at once (SIGKILL), to prove a restart loses nothing.

Set `GEMBATCH_CRASH_AT=point[:n][,point[:n]...]`: the process kills itself the n-th time (default 1st) it
passes `point`. Unset, every call is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "GEMBATCH_CRASH_AT"
POINTS = (
    "after-upload",  # the file is on the server; the checkpoint does not know its name yet
    "after-intent",  # the create intent is on disk; the create was not sent
    "after-create",  # the server accepted the create; its job name is not saved yet
    "during-download",  # the result file is partly on disk under its temporary name
    "mid-journal-write",  # half a journal line is on disk
    "mid-snapshot-write",  # half a new snapshot is in its temporary file
)


def _parse(spec: str) -> dict[str, int]:
    wanted: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, nth = part.partition(":")
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown crash point {name!r}; known: {', '.join(POINTS)}")
        wanted[name] = int(nth) if nth else 1
    return wanted


_wanted = _parse(os.environ.get(ENV, ""))
_passed: Counter[str] = Counter()


def crash_point_armed(name: str) -> bool:
    """True when the next pass of `name` is the one that kills (so a writer can leave half its data first)."""
    return name in _wanted and _passed[name] + 1 == _wanted[name]


def crash_point(name: str) -> None:
    """Die here with SIGKILL if the environment asks for it (tests only)."""
    if name not in _wanted:
        return
    _passed[name] += 1
    if _passed[name] == _wanted[name]:
        os.kill(os.getpid(), signal.SIGKILL)
