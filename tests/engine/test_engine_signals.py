"""The headless command stopped by a signal mid-run saves its checkpoint; started again it finishes, no duplicates."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import write_batch_files
from .helpers import assert_one_job_per_attempt, assert_results_match_inputs


def headless(tmp_path: Path, base_url: str) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "gembatch.tui", "--headless",
        "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
        "--base-url", base_url, "--poll-interval", "0.2",
    ]
    return subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def wait_for_creates(emu, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(1 for e in emu.journal() if e.kind == "batches.create" and e.status == 200) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} creates within {timeout}s")


@pytest.mark.parametrize(("signum", "expected"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stopped_mid_run_then_resumed_finishes_without_duplicates(tmp_path: Path, emulator, signum, expected) -> None:
    write_batch_files(tmp_path / "in", files=12, requests=5)
    emulator.settings.running_seconds = 1.5
    emulator.settings.max_concurrent_jobs = 4

    first = headless(tmp_path, emulator.base_url)
    wait_for_creates(emulator, 3)
    first.send_signal(signum)
    _, err = first.communicate(timeout=30)
    assert first.returncode == expected, err
    assert "saving the checkpoint" in err
    assert (tmp_path / "out" / "gembatch.checkpoint.json").exists()

    second = headless(tmp_path, emulator.base_url)
    _, err = second.communicate(timeout=90)
    assert second.returncode == 0, err
    assert "resuming run" in err
    made = assert_one_job_per_attempt(emulator)
    assert len(made) == 12
    assert assert_results_match_inputs(tmp_path / "in", tmp_path / "out") == 12


def test_usage_errors_exit_2_and_send_nothing(tmp_path: Path, emulator) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gembatch.tui", "--headless", "--input", str(tmp_path / "missing"),
         "--output", str(tmp_path / "out"), "--base-url", emulator.base_url],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "missing" in result.stderr
    assert emulator.journal() == []
