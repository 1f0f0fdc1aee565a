"""Exit codes that tell the truth: never 0 with work left, the same number logged and returned; no traceback for a
Ctrl-C at start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gembatch.core.config import Settings
from gembatch.core.exit_codes import EXIT_INCOMPLETE, EXIT_OK, EXIT_STOPPED, EXIT_USAGE, leaving_code
from gembatch.tui import launch

from .conftest import write_batch_files


@pytest.mark.parametrize(("run_code", "work_left", "signum", "expected"), [
    (EXIT_OK, False, None, 0),
    (EXIT_INCOMPLETE, False, None, 3),
    (EXIT_OK, False, signal.SIGINT, 0),  # the signal came after the last batch ended: the run's own code
    (EXIT_INCOMPLETE, True, None, EXIT_STOPPED),  # q with work left
    (EXIT_OK, True, None, EXIT_STOPPED),
    (EXIT_OK, True, signal.SIGINT, 130),
    (EXIT_OK, True, signal.SIGTERM, 143),
    (EXIT_INCOMPLETE, True, signal.SIGHUP, 129),
    (None, True, None, EXIT_STOPPED),  # the engine was cancelled: no code of its own
    (EXIT_USAGE, True, None, EXIT_USAGE),  # the run stopped itself (a refused key, no accepted MIME type)
])
def test_leaving_code_is_never_0_with_work_left(run_code, work_left, signum, expected) -> None:
    assert leaving_code(run_code, work_left, signum) == expected


def _headless(tmp_path: Path, base_url: str, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "gembatch.tui", "--headless", "--input", str(tmp_path / "in"),
               "--output", str(tmp_path / "out"), "--base-url", base_url, "--poll-interval", "0.2", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def _wait_for_jobs(emu, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(emu.jobs()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} jobs within {timeout}s")


def _last_code(stderr: str) -> int:
    """The exit code named by the last log line."""
    last = [line for line in stderr.splitlines() if "exit code" in line][-1]
    return int(last.split("exit code ", 1)[1].split(":")[0].split(";")[0])


@pytest.mark.parametrize(("signum", "expected"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_run_logs_and_returns_the_same_code(tmp_path: Path, emulator, signum, expected) -> None:
    write_batch_files(tmp_path / "in", files=6, requests=3)
    emulator.settings.running_seconds = 30.0  # nothing ends before the signal
    emulator.settings.max_concurrent_jobs = 2
    process = _headless(tmp_path, emulator.base_url)
    _wait_for_jobs(emulator, 2)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == expected, err
    assert _last_code(err) == expected
    assert f"stopped by {signal.Signals(signum).name} with work left: exit code {expected}" in err
    assert "finished with exit code" not in err


def test_a_finished_run_logs_the_code_it_returns(tmp_path: Path, emulator) -> None:
    write_batch_files(tmp_path / "in", files=3, requests=3)
    process = _headless(tmp_path, emulator.base_url)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert _last_code(err) == 0
    assert "finished with exit code 0: downloaded 3" in err


def test_ctrl_c_during_the_start_is_130_without_a_traceback(tmp_path: Path) -> None:
    """The process is inside `main` (its start guard is in place, it printed "ready") and in `main`'s imports.

    "ready" is printed from inside the guard: printed before `main`, the signal could land between the print and
    the guard (it did, on a loaded CI machine), which a user's Ctrl-C cannot hit in the same way."""
    write_batch_files(tmp_path / "in", files=2, requests=2)
    code = ("import sys; from gembatch.tui import launch\n"
            "enter = launch.StartGuard.__enter__\n"
            "def ready(guard):\n"
            "    entered = enter(guard)\n"
            "    print('ready', flush=True)\n"
            "    return entered\n"
            "launch.StartGuard.__enter__ = ready\n"
            f"sys.exit(launch.main(['--headless', '--input', {str(tmp_path / 'in')!r}, "
            f"'--output', {str(tmp_path / 'out')!r}, '--base-url', 'http://127.0.0.1:9']))")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=dict(os.environ))
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "exit code 130" in err


def test_an_interrupt_while_resolving_the_flags_is_one_line_and_130(monkeypatch, capsys) -> None:
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr("gembatch.core.cli_args.resolve_settings", interrupted)
    assert launch.main(["--headless", "--input", "x", "--output", "y"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("gembatch-tui: interrupted while starting (exit code 130)")
    assert "Traceback" not in err


def test_an_interrupt_that_an_import_swallowed_still_stops_the_start(monkeypatch, tmp_path: Path, capsys) -> None:
    """A library's bare `except:` may eat the KeyboardInterrupt; the start must stop anyway, before the run."""
    def swallowing(argv):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here and raises
        except BaseException:  # what a careless import does
            pass
        return Settings(input_dir=tmp_path, output_dir=tmp_path, headless=True)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the run started after a Ctrl-C")

    monkeypatch.setattr("gembatch.core.cli_args.resolve_settings", swallowing)
    monkeypatch.setattr("gembatch.core.headless.run_headless", must_not_run)
    assert launch.main(["--headless"]) == 130
    assert "interrupted while starting" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back
