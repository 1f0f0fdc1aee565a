"""The API key never reaches a file or an output: checkpoint, journal, backup, lock file, log lines, results,
tracebacks and crash output, with crashes forced (a bug that puts the key in its message, a refusal quoting it,
a SIGKILL). Every file under the test's folder and every captured output is scanned for it.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from ..conftest import FAKE_KEY
from .support import FIGURES, Workspace, judge, tail, write_inputs

# GOOGLE_API_KEY wins over GEMINI_API_KEY when both are set
OTHER_KEY = "FAKEKEY-gembatch-google-api-key-variable-987654"

_PATCHED_RUN = """
import os, sys
from gembatch.core import gateway
from gembatch.core.backend import Permanent
key = os.environ["GOOGLE_API_KEY"] if os.environ.get("GOOGLE_API_KEY") else os.environ["GEMINI_API_KEY"]
mode = os.environ["SECRET_TEST_MODE"]

async def create(self, file_name, display_name):
    if mode == "bug":
        raise RuntimeError(f"simulated bug in create of {display_name}: key={key}")
    raise Permanent(f"400 INVALID_ARGUMENT: API key {key} not valid for {display_name}", 400)

gateway.Gateway.create = create
from gembatch.tui.launch import main
sys.exit(main(sys.argv[1:]))
"""


def _patched(ws: Workspace) -> list[str]:
    return [sys.executable, "-c", _PATCHED_RUN, *ws.command()[3:]]


def _scan_for_keys(root: Path, outputs: list[str]) -> int:
    """Fail if a key is in any file under `root` or in any captured output; returns the number of files read."""
    scanned = 0
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            scanned += 1
            for key in (FAKE_KEY, OTHER_KEY):
                assert key.encode() not in data, f"THE API KEY LEAKED into {path}"
    for text in outputs:
        for key in (FAKE_KEY, OTHER_KEY):
            assert key not in text, f"THE API KEY LEAKED into captured output:\n{tail(text)}"
    return scanned


def test_the_key_is_in_no_file_and_no_output_through_crashes_and_refusals(workspace: Workspace, emulator) -> None:
    write_inputs(workspace.in_dir, 4, 3, tag="secret")
    emulator.settings.max_concurrent_jobs = 2

    # 1. a bug whose exception message holds the key: the traceback is printed, redacted; exit 1
    bug = workspace.run(argv=_patched(workspace), env={"SECRET_TEST_MODE": "bug", "GOOGLE_API_KEY": OTHER_KEY})
    assert bug.returncode == 1, tail(bug.stderr)
    assert "internal error" in bug.stderr and "Traceback" in bug.stderr and "[redacted]" in bug.stderr, bug.stderr

    # 2. a refusal quoting the key: logged, journaled as the batch's error, all redacted
    refused = workspace.run(argv=_patched(workspace), env={"SECRET_TEST_MODE": "refusal"})
    assert refused.returncode == 3, tail(refused.stderr)
    assert "[redacted]" in refused.stderr

    # 3. SIGKILL in the middle of things, then the normal run to the end (the refused batches retried by hand
    #    are not the point here: start over with the checkpoint kept aside)
    for path in list(workspace.out_dir.iterdir()):
        path.rename(workspace.root / f"kept-{path.name}")
    killed = workspace.run(crash_at="after-create:2")
    assert killed.returncode == -signal.SIGKILL
    done = workspace.run_until_done(attempts=1)
    judge(emulator, workspace)

    outputs = [run.stderr for run in workspace.runs]
    assert len(outputs) == 4 and done.stderr
    scanned = _scan_for_keys(workspace.root, outputs)
    assert scanned >= 12, f"only {scanned} files scanned"
    FIGURES["secret scans: files scanned"] += scanned
    FIGURES["secret scans: outputs scanned"] += len(outputs)
    FIGURES["secret leaks"] += 0
