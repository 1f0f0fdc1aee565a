"""Runs killed with SIGKILL at random moments (seeded), each restarted until it finishes; the journal judges.

The full campaign is `GEMBATCH_KILL_RUNS=50 .venv/bin/python -m pytest -m slow tests/reliability` (the number
of runs comes from GEMBATCH_KILL_RUNS, default 50; CI may trim it with the same variable). The default test run
keeps a trimmed campaign of 5 runs so that the invariant is always checked.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from gembatch.core.emulator import Emulator, EmulatorSettings

from .support import FIGURES, Workspace, judge, tail, wait_for, write_inputs

RUNS_ENV = "GEMBATCH_KILL_RUNS"
FULL_RUNS = 50
TRIMMED_RUNS = 5
MAX_KILLS_PER_RUN = 4  # restarts may be killed again, this many times at most; then one runs to the end


def kill_runs() -> int:
    """How many runs the slow campaign makes (GEMBATCH_KILL_RUNS, default 50)."""
    text = os.environ.get(RUNS_ENV, "").strip()
    return int(text) if text else FULL_RUNS


def campaign(root: Path, runs: int, seed: int) -> Counter[str]:
    """`runs` independent runs, each on a fresh emulator, each killed and restarted; returns its figures."""
    rng = random.Random(seed)
    figures: Counter[str] = Counter()
    for number in range(1, runs + 1):
        settings = EmulatorSettings(pending_seconds=0.1, running_seconds=rng.choice([0.2, 0.6]),
                                    running_seconds_per_request=0.0, seed=number)
        settings.max_concurrent_jobs = rng.choice([2, 3, 100])
        with Emulator(settings) as emu:
            ws = Workspace(root / f"run-{number:03d}", emu.base_url)
            write_inputs(ws.in_dir, rng.randint(3, 7), rng.randint(1, 5), tag=f"s{seed}r{number}")
            kills = 0
            while True:
                process = ws.start()
                figures["processes started"] += 1
                if kills < MAX_KILLS_PER_RUN and (kills == 0 or rng.random() < 0.6):
                    if rng.random() < 0.2:  # anywhere, start-up and the first checkpoint included
                        time.sleep(rng.uniform(0.3, 1.6))
                    else:  # once it has talked to the server, somewhere in the next 1.5 s
                        seen = len(emu.journal())
                        wait_for(lambda s=seen, p=process: len(emu.journal()) > s or not p.alive(), 30,
                                 "the first call of the restarted run")
                        time.sleep(rng.uniform(0.0, 1.5))
                    if process.kill():
                        kills += 1
                        figures["kills survived"] += 1
                        continue
                outcome = process.finish(timeout=90)
                assert outcome.returncode == 0, (f"run {number}: exit {outcome.returncode} after {kills} kills:\n"
                                                 f"{tail(outcome.stderr)}")
                break
            verdict = judge(emu, ws)
            figures["runs"] += 1
            figures["files"] += verdict.files
            figures["jobs"] += verdict.jobs
            figures["extra uploads (same file uploaded again)"] += verdict.extra_uploads
            figures["duplicates"] += 0  # judge() fails the test on the first one
            figures["lost"] += 0
    return figures


def _report(label: str, figures: Counter[str]) -> None:
    for name, value in figures.items():
        FIGURES[f"{label}: {name}"] += value
    print(f"\n{label}: " + ", ".join(f"{name} {value}" for name, value in sorted(figures.items())))


def test_random_kills_trimmed(tmp_path: Path) -> None:
    figures = campaign(tmp_path, TRIMMED_RUNS, seed=20251)
    _report("random kills (trimmed)", figures)
    assert figures["runs"] == TRIMMED_RUNS and figures["kills survived"] >= TRIMMED_RUNS


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_random_kills_full(tmp_path: Path) -> None:
    runs = kill_runs()
    figures = campaign(tmp_path, runs, seed=7)
    _report("random kills", figures)
    assert figures["runs"] == runs and figures["kills survived"] >= runs
