"""Shared helpers of the benchmark scripts: the machine, docs/benchmarks.md, inputs, settings, the emulator.

Benchmarks are scripts, not tests: each prints its figures and a one-line summary and rewrites its own
section of docs/benchmarks.md (between `<!-- bench:NAME -->` markers), leaving the other sections alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
if str(ROOT) not in sys.path:  # the benchmarks reuse the tests' input writer and fake engine
    sys.path.insert(0, str(ROOT))

from tests.inputs import write_batch_files  # noqa: E402

FAKE_KEY = "FAKEKEY-gembatch-benchmark-0123456789-not-real"

# the order of the sections in docs/benchmarks.md
SECTIONS = ("quota_efficiency", "scale", "uploads", "polling", "tui_rows", "request_check")
_TITLES = {
    "quota_efficiency": "Quota efficiency",
    "scale": "Scale: 10,000 batches",
    "uploads": "Uploads: memory and parallelism",
    "polling": "Polling cost",
    "tui_rows": "TUI at 10,000 rows",
    "request_check": "Request check: cost per request",
}
_PLACEHOLDERS = {
    "tui_rows": (
        "Not measured here yet. `benchmarks/tui_rows.py` measures the TUI with\n"
        "10,000 rows: time to first paint, time from an engine event to the changed cell on screen (target\n"
        "under 100 ms), CPU while idle with the countdown ticking (target under 2 % of a core) and bytes written\n"
        "to the terminal per second while idle. Run `python benchmarks/tui_rows.py`; it replaces this section.\n"
    ),
}
_HEADER = """# Benchmarks

Scripts in `benchmarks/` that anyone can rerun; each prints its figures and a one-line summary and rewrites its
own section below (with the machine, the date and the command that produced it). They are not tests: CI makes
no wall-clock assertion. `python benchmarks/run_all.py [--quick]` runs them all; `--quick` runs smaller
workloads (each script then takes under about two minutes).

Everything runs against the built-in emulator (`gembatch.core.emulator`) through the real google-genai SDK;
nothing talks to Google.
"""


# ---- the machine --------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def sdk_version() -> str:
    """The installed google-genai version."""
    try:
        from google import genai

        return str(genai.__version__)
    except Exception:  # pragma: no cover - the benchmarks need the SDK anyway
        return "not installed"


def machine_line() -> str:
    """'2 cores (nproc), Intel(R) Xeon(R) ..., Python 3.11.7, google-genai 1.2.3, 2026-01-01 12:00 UTC'."""
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}), {cpu_model()}, "
            f"Python {platform.python_version()}, google-genai {sdk_version()}, {platform.system()} "
            f"{platform.release()}; load average {os.getloadavg()[0]:.2f} at the start (other jobs on the machine add "
            f"noise to wall-clock figures); {now}")


def command_line() -> str:
    """How this script was run, as a person would type it."""
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(ROOT)
    return " ".join(["python", str(script), *sys.argv[1:]])


# ---- docs/benchmarks.md -----------------------------------------------------------------------


def _section_re(name: str) -> re.Pattern[str]:
    return re.compile(rf"<!-- bench:{re.escape(name)} -->\n.*?<!-- /bench:{re.escape(name)} -->\n", re.S)


def _wrap(name: str, body: str) -> str:
    return f"<!-- bench:{name} -->\n{body.rstrip()}\n<!-- /bench:{name} -->\n"


def update_doc(name: str, body: str, doc: Path = DOC) -> None:
    """Replace (or add) the section `name` of docs/benchmarks.md with `body`; sections are kept in SECTIONS order.

    Text before the first section and after the last one (the findings, written by hand) is kept as it is.
    """
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text(encoding="utf-8") if doc.exists() else _HEADER
    blocks: dict[str, str] = {}
    spans = []
    for other in SECTIONS:
        match = _section_re(other).search(text)
        if match:
            blocks[other] = match.group(0)
            spans.append(match.span())
    head = text[: min(s for s, _ in spans)] if spans else text
    tail = text[max(e for _, e in spans):] if spans else ""
    blocks[name] = _wrap(name, body)
    for other in SECTIONS:  # placeholders keep every section in its place
        if other not in blocks:
            placeholder = _PLACEHOLDERS.get(other, "Not run yet.\n")
            blocks[other] = _wrap(other, f"## {_TITLES[other]}\n\n{placeholder}")
    out = head.rstrip("\n") + "\n\n" + "\n".join(blocks[s] for s in SECTIONS)
    if tail.strip():
        out += "\n" + tail.lstrip("\n")
    tmp = doc.with_name(doc.name + ".tmp")
    tmp.write_text(out, encoding="utf-8")
    os.replace(tmp, doc)


def section_body(name: str, intro: str, table: str, summary: str, notes: str = "") -> str:
    """A section: title, what was run, the figures, the summary line, notes."""
    parts = [
        f"## {_TITLES[name]}",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {machine_line()}",
        "",
        intro.strip(),
        "",
        table.strip(),
        "",
        f"**Summary:** {summary}",
    ]
    if notes.strip():
        parts += ["", notes.strip()]
    return "\n".join(parts) + "\n"


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    """'met' / 'NOT met'."""
    return "met" if ok else "NOT met"


# ---- inputs and settings ------------------------------------------------------------------------


def write_inputs(folder: Path, files: int, requests: int, *, pad: int = 0, prefix: str = "part") -> list[Path]:
    """`files` JSONL inputs of `requests` lines each (keys unique across the folder), as the tests write them."""
    return write_batch_files(folder, files, requests, prefix=prefix, pad=pad)


def job_tokens(path: Path) -> int:
    """The emulator's (and the engine's) token estimate of one input file: ceil(line bytes / 4) per line."""
    return sum(-(-len(line) // 4) for line in path.read_bytes().splitlines() if line.strip())


def bench_settings(root: Path, base_url: str, **overrides: Any):  # -> Settings
    """Engine settings for a benchmark run with folders under `root`; keys of the sub-tables may be given flat."""
    from gembatch.core.config import Settings

    settings = Settings(
        input_dir=root / "in",
        output_dir=root / "out",
        checkpoint=root / "out" / "run.checkpoint.json",
        base_url=base_url,
        poll_interval=1.0,
    )
    settings.transfer.request_timeout = 30.0
    for name, value in overrides.items():
        for table in (settings.admission, settings.transfer, settings.recovery):
            if hasattr(table, name):
                setattr(table, name, value)
                break
        else:
            settings = dataclasses.replace(settings, **{name: value})
    return settings


# ---- processes ----------------------------------------------------------------------------------


def max_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size of this process (or its waited-for children) in MiB (ru_maxrss is KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def _status_kib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mib() -> float:
    """Peak RSS of this process image (VmHWM). Unlike ru_maxrss it does not start from the RSS of the parent
    that forked us (Linux keeps ru_maxrss across fork + exec), and `reset_peak_rss` can restart it."""
    kib = _status_kib("VmHWM")
    return kib / 1024 if kib is not None else max_rss_mib()


def reset_peak_rss() -> bool:
    """Restart the VmHWM peak from the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def current_rss_mib() -> float:
    """Resident set size now, from /proc/self/statm."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


class EmulatorProcess:
    """The emulator in a separate process (`python -m gembatch.core.emulator`), so its memory and CPU are not ours.

    Knobs are EmulatorSettings field names; pass `log=True` to have it log one line per call to `log_path`.
    """

    def __init__(self, log_path: Path | None = None, **knobs: Any) -> None:
        self.knobs = knobs
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""
        self._log = None

    def start(self) -> str:
        args = [sys.executable, "-m", "gembatch.core.emulator", "--port", "0"]
        if self.log_path is None:
            args.append("--quiet")
        for name, value in self.knobs.items():
            args += [f"--{name.replace('_', '-')}", "off" if value is None else str(value)]
        self._log = self.log_path.open("w") if self.log_path is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                self.base_url = match.group(1)
                return self.base_url
        self.stop()
        raise RuntimeError("the emulator process did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        self.proc = None

    def __enter__(self) -> EmulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_child(args: Sequence[str], timeout: float | None = None, env: dict[str, str] | None = None) -> dict:
    """Run `python ARGS` and parse the JSON object on the last line of its stdout."""
    child_env = {**os.environ, **(env or {})}
    child_env.pop("GOOGLE_API_KEY", None)
    child_env["GEMINI_API_KEY"] = FAKE_KEY
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env=child_env, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stderr[-4000:])
        raise RuntimeError(f"child {' '.join(args)} failed with exit code {done.returncode}")
    return json.loads(lines[-1])


def fake_key_env() -> None:
    """This process uses the fake key only (never a real one)."""
    os.environ.pop("GOOGLE_API_KEY", None)
    os.environ["GEMINI_API_KEY"] = FAKE_KEY


def fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 10 else f"{seconds:.2f} s"


# ---- the emulator's log (one line per call, `--log`) ----------------------------------------------

_LOG = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d\d\d) (\d+) (\S+) (\S+) (\S+)(?: ([^\[\s]\S*))?(?: \[(.*)\])?$")


@dataclasses.dataclass
class Call:
    """One call of the emulator's log."""

    at: float  # seconds of the day (local time), ms resolution
    status: int
    kind: str
    resource: str | None
    note: str | None


def read_log(path: Path) -> list[Call]:
    """The calls of an emulator log file, oldest first."""
    calls = []
    # the emulator's threads print concurrently: two entries may share a line, so split at every timestamp
    text = re.sub(r"(?<!^)(?=\d\d:\d\d:\d\d\.\d\d\d \d+ [A-Z]+ /)", "\n", path.read_text(), flags=re.M)
    for line in text.splitlines():
        m = _LOG.match(line.strip())
        if m:
            h, mi, sec, ms = (int(m.group(i)) for i in range(1, 5))
            calls.append(Call(h * 3600 + mi * 60 + sec + ms / 1000, int(m.group(5)), m.group(8), m.group(9),
                              m.group(10)))
    return calls
