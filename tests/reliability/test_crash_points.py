"""SIGKILL at each named crash point of the engine, restart, and let the emulator's journal judge.

Each case: the headless command runs with GEMBATCH_CRASH_AT=point[:n] and must die by SIGKILL (-9) at that
point; started again without it, it must finish (exit 0) with exactly one job per file, every file's results
complete, no temporary `.part` file left, and no upload repeated beyond what the point implies.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from gembatch.core.checkpoint_store import CheckpointStore
from gembatch.core.crash_points import POINTS

from .support import FIGURES, Workspace, judge, leftover_parts, tail, wait_for, write_inputs

FILES = 6
REQUESTS = 4

# (crash spec, send SIGTERM once this many creates went through, slow-only); one case per point in the default
# run, taken mid-run; the slow run adds the first and later passes.
CASES = [
    ("after-upload:2", None, False),
    ("after-intent:2", None, False),
    ("after-create:2", None, False),
    ("during-download:2", None, False),
    ("mid-journal-write:3", None, False),
    ("mid-snapshot-write:2", 2, False),  # the save on SIGTERM is cut in half
    ("after-upload:1", None, True),
    ("after-upload:5", None, True),
    ("after-intent:1", None, True),
    ("after-intent:6", None, True),
    ("after-create:1", None, True),
    ("after-create:6", None, True),
    ("during-download:1", None, True),
    ("during-download:6", None, True),
    ("mid-journal-write:1", None, True),
    ("mid-journal-write:8", None, True),
    ("mid-snapshot-write:1", None, True),  # the very first snapshot of a new run
    ("mid-snapshot-write:2", None, True),  # the final save after every batch ended
]


def _param(spec: str, sigterm: int | None, slow: bool):
    marks = [pytest.mark.slow] if slow else []
    label = spec + ("+sigterm" if sigterm else "")
    return pytest.param(spec, sigterm, marks=marks, id=label)


def test_every_named_point_is_covered() -> None:
    assert {spec.split(":")[0] for spec, _, slow in CASES if not slow} == set(POINTS)


def _creates_200(emulator) -> int:
    return sum(1 for e in emulator.journal() if e.kind == "batches.create" and e.status == 200)


@pytest.mark.parametrize(("spec", "sigterm"), [_param(*case) for case in CASES])
def test_killed_at_a_named_point_then_restarted(workspace: Workspace, emulator, spec: str,
                                                sigterm: int | None) -> None:
    point = spec.split(":")[0]
    write_inputs(workspace.in_dir, FILES, REQUESTS, tag=point)
    emulator.settings.max_concurrent_jobs = 3  # creates wait for jobs to end: the points come mid-run

    process = workspace.start(crash_at=spec)
    if sigterm is not None:
        wait_for(lambda: _creates_200(emulator) >= sigterm or not process.alive(), 30, f"{sigterm} creates")
        process.popen.send_signal(signal.SIGTERM)
    killed = process.finish(timeout=60)
    assert killed.returncode == -signal.SIGKILL, (
        f"{spec}: expected death by SIGKILL at the crash point, got exit {killed.returncode}:\n{tail(killed.stderr)}")
    _check_debris(workspace, point)

    resumed = workspace.run_until_done(attempts=1)
    verdict = judge(emulator, workspace)

    assert verdict.files == FILES and verdict.results_checked == FILES
    if point == "after-create":
        assert "by display name" in resumed.stderr, "the job created before the kill was not adopted by name"
    if point == "after-upload":
        FIGURES["crash-point orphan uploads (after-upload)"] += verdict.extra_uploads
        assert verdict.extra_uploads <= 1, f"{verdict.extra_uploads} input files uploaded twice"
    else:
        assert verdict.extra_uploads == 0, f"{verdict.extra_uploads} input files uploaded twice"
    FIGURES["crash-point kills survived"] += 1
    FIGURES["duplicates"] += 0
    FIGURES["lost"] += 0


def _check_debris(ws: Workspace, point: str) -> None:
    """What the kill left on disk is what the point says, and the checkpoint still loads."""
    store = CheckpointStore(ws.checkpoint)
    if point == "during-download":
        assert leftover_parts(ws.out_dir), "no partial result file: the kill did not come mid-download"
    if point == "mid-journal-write":
        assert store.journal_path.exists(), "no journal: the kill did not come mid-write"
    if point == "mid-snapshot-write":
        tmp = ws.checkpoint.with_name(ws.checkpoint.name + ".tmp")
        assert tmp.exists(), "no half-written snapshot"
        if ws.checkpoint.exists():
            json.loads(ws.checkpoint.read_bytes())  # the snapshot in place is whole
    if ws.checkpoint.exists():
        assert store.load() is not None


def test_crash_point_names_are_checked(tmp_path: Path) -> None:
    """A misspelt point is refused at start, so a crash test cannot pass by never crashing."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", "import gembatch.core.crash_points"],
                            env={"GEMBATCH_CRASH_AT": "after-uplaod", "PATH": ""}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0 and "unknown crash point" in result.stderr
