"""Reliability fixtures: a workspace on the in-process emulator, and the figures printed after the run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .support import FIGURES, Workspace

FIGURES_FILE_ENV = "GEMBATCH_FIGURES_FILE"


@pytest.fixture
def workspace(tmp_path: Path, emulator) -> Workspace:
    """Input/output/log folders and a fast config, pointed at the test's emulator."""
    return Workspace(tmp_path / "ws", emulator.base_url)


def pytest_terminal_summary(terminalreporter) -> None:
    """Print what the reliability tests tried (kills, faults, bad inputs) and what they found."""
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name, value in sorted(FIGURES.items()):
        terminalreporter.write_line(f"{name}: {value}")
    target = os.environ.get(FIGURES_FILE_ENV)
    if target:
        Path(target).write_text(json.dumps(dict(sorted(FIGURES.items())), indent=1) + "\n", encoding="utf-8")
