"""Reliability fixtures: a workspace on the in-process emulator (the figures are printed by tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .support import Workspace


@pytest.fixture
def workspace(tmp_path: Path, emulator) -> Workspace:
    """Input/output/log folders and a fast config, pointed at the test's emulator."""
    return Workspace(tmp_path / "ws", emulator.base_url)
