"""Running the headless command as a real process against the in-process emulator, and judging the outcome.

The emulator's journal and job list are the witness: what the client did, not what it printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gembatch.core.checkpoint_format import CheckpointError
from gembatch.core.checkpoint_store import CheckpointStore
from gembatch.core.crash_points import ENV as CRASH_ENV
from gembatch.core.input_scan import ScannedFile, list_input_files, scan_file
from gembatch.core.naming import name_stem, parse_job_display_name, upload_display_name

# Figures gathered by the tests of this folder; conftest prints them at the end of the session.
FIGURES: Counter[str] = Counter()

FAST_CONFIG = """\
poll_interval = 0.2

[admission]
cool_down_seconds = 0.5
cool_down_max_seconds = 2.0

[transfer]
request_timeout = 5.0
max_retries = 8
retry_max_wait = 0.5

[recovery]
ambiguous_grace = 1.0
"""

def parse_job_name(display_name: str | None) -> tuple[str, str, str, int] | None:
    """(run id, file stem, sha256[:12], attempt) of a display name made by core/naming.py, else None."""
    parts = parse_job_display_name(display_name)
    return None if parts is None else (parts.run_id, parts.stem, parts.sha12, parts.attempt)


@dataclass
class Outcome:
    """One finished (or killed) process."""

    returncode: int
    stderr: str
    seconds: float


@dataclass
class Workspace:
    """Input, output and log folders of one scenario, and the command that runs it headless."""

    root: Path
    base_url: str
    config_text: str = FAST_CONFIG
    runs: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.in_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.config_text, encoding="utf-8")

    @property
    def in_dir(self) -> Path:
        return self.root / "in"

    @property
    def out_dir(self) -> Path:
        return self.root / "out"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / "gembatch.checkpoint.json"

    def command(self, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "gembatch.tui", "--headless",
            "--config", str(self.config),
            "--input", str(self.in_dir), "--output", str(self.out_dir),
            "--base-url", self.base_url, "--poll-interval", "0.2", *extra,
        ]

    def environment(self, crash_at: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.pop(CRASH_ENV, None)
        env.pop("GEMBATCH_CONFIG", None)
        if crash_at:
            env[CRASH_ENV] = crash_at
        env.update(extra or {})
        return env

    def start(self, *extra: str, crash_at: str | None = None, env: dict[str, str] | None = None,
              argv: Sequence[str] | None = None) -> Process:
        """Start the headless command; its stderr goes to a file under logs/ (read back by `Process.finish`)."""
        log_path = self.logs / f"run-{len(self.runs) + 1:03d}.stderr"
        self.runs.append(Outcome(-999, "", 0.0))  # reserves the number; replaced when it finishes
        handle = log_path.open("wb")
        popen = subprocess.Popen(list(argv) if argv is not None else self.command(*extra),
                                 stdin=subprocess.DEVNULL, stdout=handle, stderr=handle,
                                 env=self.environment(crash_at, env))
        handle.close()
        return Process(popen, log_path, len(self.runs) - 1, self)

    def run(self, *extra: str, crash_at: str | None = None, timeout: float = 60.0,
            env: dict[str, str] | None = None, argv: Sequence[str] | None = None) -> Outcome:
        """Start and wait; a process still running after `timeout` seconds is killed and the test fails."""
        return self.start(*extra, crash_at=crash_at, env=env, argv=argv).finish(timeout)

    def run_until_done(self, attempts: int = 3, timeout: float = 60.0) -> Outcome:
        """Run again (no crash point) until exit 0; fails after `attempts` runs."""
        outcome = Outcome(-1, "", 0.0)
        for _ in range(attempts):
            outcome = self.run(timeout=timeout)
            if outcome.returncode == 0:
                return outcome
        raise AssertionError(f"no clean finish after {attempts} runs; last exit {outcome.returncode}:\n"
                             f"{tail(outcome.stderr)}")


@dataclass
class Process:
    """A running headless command."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    index: int
    workspace: Workspace
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> bool:
        """SIGKILL it; True when it was still running (a kill it must survive)."""
        if self.popen.poll() is not None:
            return False
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()
        return self.popen.returncode == -signal.SIGKILL

    def finish(self, timeout: float = 60.0) -> Outcome:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"the headless run did not end within {timeout}s:\n"
                                 f"{tail(self.stderr())}") from None
        outcome = Outcome(self.popen.returncode, self.stderr(), time.monotonic() - self.started)
        self.workspace.runs[self.index] = outcome
        return outcome

    def stderr(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace")


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


class IntentWitness:
    """Wraps Gateway.create: before each create leaves, its intent must be readable from the checkpoint on disk
    (read by a fresh reader, as a restarted process would)."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.calls = 0
        self.violations: list[str] = []

    def saved_intents(self) -> dict[str, str]:
        """Display name -> stage of every record on disk that has a display name."""
        for _ in range(50):  # a compaction may be swapping files under this reader: read again
            try:
                state = CheckpointStore(self.checkpoint).load()
            except CheckpointError:
                time.sleep(0.01)
                continue
            if state is None:
                return {}
            return {rec.display_name: str(rec.stage) for rec in state.records.values() if rec.display_name}
        raise AssertionError(f"{self.checkpoint} could not be read while the run went on")

    def wrap(self, original: Any) -> Any:
        witness = self

        async def create(gateway: Any, file_name: str, display_name: str) -> Any:
            witness.calls += 1
            saved = await asyncio.to_thread(witness.saved_intents)
            if saved.get(display_name) != "creating":
                witness.violations.append(f"{display_name} sent while the checkpoint on disk says "
                                          f"{saved.get(display_name, 'nothing')}")
            return await original(gateway, file_name, display_name)

        return create


# ---- the judgement ----------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What the emulator and the output folder say about one finished workspace."""

    files: int
    jobs: int
    creates_sent: int
    extra_uploads: int
    results_checked: int


def scanned_inputs(in_dir: Path) -> dict[str, ScannedFile]:
    """Every valid input file by stem."""
    out = {}
    for path in list_input_files(in_dir):
        scanned = scan_file(path)
        if isinstance(scanned, ScannedFile):
            out[scanned.batch_id] = scanned
    return out


def jobs_of(emu: Any, scanned: ScannedFile) -> list[dict[str, Any]]:
    """The emulator's jobs whose display name names this file's stem and content hash."""
    found = []
    for job in emu.jobs():
        parsed = parse_job_name(job["display_name"])
        if parsed and parsed[1] == name_stem(scanned.batch_id) and parsed[2] == scanned.sha256[:12]:
            found.append(job)
    return found


def created_display_names(emu: Any) -> Counter[str]:
    """Display names of the creates that took effect (answered 200, or answered never on purpose)."""
    return Counter(
        e.display_name for e in emu.journal()
        if e.kind == "batches.create" and e.display_name
        and (e.status == 200 or (e.note or "").endswith("lost-answer"))
    )


def assert_no_display_name_twice(emu: Any) -> Counter[str]:
    made = created_display_names(emu)
    doubled = {name: n for name, n in made.items() if n > 1}
    assert not doubled, f"DUPLICATE JOBS: display names created more than once: {doubled}"
    per_name = Counter(job["display_name"] for job in emu.jobs())
    doubled = {name: n for name, n in per_name.items() if n > 1}
    assert not doubled, f"DUPLICATE JOBS on the server: {doubled}"
    return made


def read_keys(path: Path) -> list[str]:
    keys = []
    for raw in path.read_bytes().splitlines():
        if raw.strip():
            keys.append(str(json.loads(raw)["key"]))
    return keys


def assert_results_complete(in_dir: Path, out_dir: Path, stems: Iterable[str] | None = None) -> int:
    """Each named (default: every valid) input has a results file holding exactly its keys, once each."""
    scanned = scanned_inputs(in_dir)
    wanted = list(stems) if stems is not None else list(scanned)
    for stem in wanted:
        result = out_dir / f"{stem}.results.jsonl"
        assert result.exists(), f"LOST: no results for {stem}.jsonl"
        got = read_keys(result)
        want = read_keys(scanned[stem].path)
        assert len(got) == len(set(got)), f"{result}: duplicate result lines"
        assert sorted(got) == sorted(want), f"{result}: keys differ from the input's"
    return len(wanted)


def leftover_parts(out_dir: Path) -> list[Path]:
    return sorted(p for p in out_dir.rglob("*") if p.name.endswith(".part"))


ENDED_BADLY = {"BATCH_STATE_FAILED", "BATCH_STATE_EXPIRED", "BATCH_STATE_CANCELLED"}


def judge(emu: Any, ws: Any, *, retries: bool = False) -> Verdict:
    """The invariants every scenario must end with: one job per file, every result complete, no debris.

    `ws` is anything with `in_dir` and `out_dir`. With `retries`, jobs that ended FAILED/EXPIRED/CANCELLED may
    precede the one that succeeded (one per attempt); without, each file has exactly one job in all.
    """
    scanned = scanned_inputs(ws.in_dir)
    assert_no_display_name_twice(emu)
    for stem, item in scanned.items():
        jobs = jobs_of(emu, item)
        good = [j for j in jobs if j["state"] not in ENDED_BADLY]
        described = [(j["display_name"], j["state"]) for j in jobs]
        assert len(good) == 1, f"{stem}: {len(good)} jobs that did not fail, expected exactly 1: {described}"
        if not retries:
            assert len(jobs) == 1, f"DUPLICATE JOBS: {stem} has {len(jobs)} jobs on the server: {described}"
    checked = assert_results_complete(ws.in_dir, ws.out_dir)
    assert not leftover_parts(ws.out_dir), f"temporary files left behind: {leftover_parts(ws.out_dir)}"
    uploads = Counter(f["display_name"] for f in emu.files() if (f["display_name"] or "").startswith(
        "gembatch-upload-"))
    ours = {upload_display_name(item.sha256) for item in scanned.values()}
    extra = sum(n - 1 for name, n in uploads.items() if name in ours and n > 1)
    creates = sum(1 for e in emu.journal() if e.kind == "batches.create")
    return Verdict(len(scanned), len(emu.jobs()), creates, extra, checked)


def write_inputs(folder: Path, files: int, requests: int, *, tag: str = "") -> list[Path]:
    """`files` small JSONL inputs; `tag` makes their content (hence hash and display names) unique."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in range(1, files + 1):
        lines = [json.dumps({"key": f"{tag}k{f}-{r}", "request": {"contents": [{"parts": [
            {"text": f"question {tag} {f}.{r}"}]}]}}) for r in range(1, requests + 1)]
        path = folder / f"part_{f:03d}.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def cpu_seconds(pid: int) -> tuple[str, float]:
    """(state letter, user+system CPU seconds) of a process from /proc (a zombie still reports its totals)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return fields[0], (int(fields[11]) + int(fields[12])) / ticks
