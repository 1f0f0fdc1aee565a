"""Two engines on one checkpoint: the second is refused naming the holder; after the holder died by SIGKILL the lock
is taken over and the run finishes with no job twice."""

from __future__ import annotations

import json
import socket

from .support import FIGURES, Workspace, judge, tail, wait_for, write_inputs


def test_second_engine_is_refused_naming_the_holder_and_takes_over_after_a_kill(workspace: Workspace,
                                                                               emulator) -> None:
    write_inputs(workspace.in_dir, 6, 3, tag="lock")
    emulator.settings.running_seconds = 2.0
    emulator.settings.max_concurrent_jobs = 2
    lock = workspace.checkpoint.with_name(workspace.checkpoint.name + ".lock")

    first = workspace.start()
    wait_for(lambda: any(e.kind == "batches.create" and e.status == 200 for e in emulator.journal()), 30,
             "the first engine's first create")
    assert json.loads(lock.read_text())["pid"] == first.pid

    second = workspace.run(timeout=30)
    assert second.returncode == 2, tail(second.stderr)
    assert f"pid {first.pid} on {socket.gethostname()}" in second.stderr, second.stderr
    assert "new run" not in second.stderr and "resuming" not in second.stderr, "the second engine started a run"
    assert first.alive(), "the refused engine disturbed the holder"

    assert first.kill()
    assert json.loads(lock.read_text())["pid"] == first.pid  # the dead holder's lock file is still there
    third = workspace.run_until_done(attempts=1)
    assert "resuming run" in third.stderr
    judge(emulator, workspace)
    assert not lock.exists(), "the lock file was left behind by a clean exit"
    FIGURES["second engines refused"] += 1
    FIGURES["locks taken over after SIGKILL"] += 1
