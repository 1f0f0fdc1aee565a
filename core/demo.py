"""`--demo`: a workload like a real report, run against the built-in emulator, with no API key."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .emulator import Emulator, EmulatorSettings

DEMO_KEY = "demo-key-not-a-secret"
TOPICS = (
    "photosynthesis", "plate tectonics", "the French revolution", "compound interest", "vaccines",
    "black holes", "the water cycle", "supply and demand", "neural networks", "the Silk Road",
)


@dataclass
class DemoWorkload:
    """How big the demo is; the defaults match the issue: about 150 files of about 100 requests."""

    files: int = 150
    requests_per_file: int = 100
    token_limit: int = 20 * 100 * 110  # about 20 jobs' worth of enqueued tokens: forces 429s
    request_error_rate: float = 0.01
    pending_seconds: float = 1.0
    running_seconds: float = 2.0
    running_seconds_per_request: float = 0.03
    poll_interval: float = 1.0


def write_inputs(folder: Path, workload: DemoWorkload) -> None:
    """Q&A refinement prompts, one JSONL file per batch, deterministic content."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(1, workload.files + 1):
        lines = []
        for r in range(1, workload.requests_per_file + 1):
            topic = TOPICS[(f * 7 + r) % len(TOPICS)]
            text = (f"Refine this Q&A pair for a study guide. Q{f}.{r}: What should a student know about "
                    f"{topic}? Keep the answer under 120 words, correct any mistakes, and add one example.")
            line = {"key": f"qa-{f:03d}-{r:03d}",
                    "request": {"contents": [{"role": "user", "parts": [{"text": text}]}]}}
            lines.append(json.dumps(line))
        (folder / f"qa_part_{f:03d}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


class DemoScenario:
    """The emulator plus its scripted moments: one upload expires before its job is created, one job fails."""

    def __init__(self, workload: DemoWorkload | None = None) -> None:
        self.workload = workload or DemoWorkload()
        self.emulator = Emulator(
            EmulatorSettings(
                enqueued_token_limit=self.workload.token_limit,
                request_error_rate=self.workload.request_error_rate,
                pending_seconds=self.workload.pending_seconds,
                running_seconds=self.workload.running_seconds,
                running_seconds_per_request=self.workload.running_seconds_per_request,
                seed=7,
            )
        )
        self._stop = threading.Event()
        self._director = threading.Thread(target=self._direct, name="demo-director", daemon=True)

    def start(self) -> str:
        """Start the emulator and the director; returns the base URL."""
        url = self.emulator.start()
        self.emulator.fail_next_jobs(1)
        self._director.start()
        return url

    def stop(self) -> None:
        """Stop the director and the emulator."""
        self._stop.set()
        self.emulator.stop()

    def _direct(self) -> None:
        """Expire one upload that is waiting for its job (the engine must upload it again)."""
        while not self._stop.wait(0.5):
            used = {job.get("input_file") for job in self.emulator.jobs()}
            waiting = [f for f in self.emulator.files()
                       if f.get("source") == "UPLOADED" and not f.get("deleted") and f["name"] not in used]
            if len(waiting) >= 3:
                self.emulator.expire_file(waiting[-1]["name"])
                return


def demo_settings(settings: Settings, base_url: str, workload: DemoWorkload) -> Settings:
    """Settings for the demo run, in a fresh folder (inside the output folder when one is named).

    Always fresh: the in-process emulator forgets its jobs when the demo ends, so there is nothing to resume.
    """
    if settings.output_dir is not None:
        settings.output_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="gembatch-demo-", dir=settings.output_dir))
    inputs = root / "inputs"
    write_inputs(inputs, workload)
    return dataclasses.replace(
        settings,
        input_dir=inputs,
        output_dir=root / "results",
        checkpoint=root / "gembatch.checkpoint.json",
        base_url=base_url,
        poll_interval=min(settings.poll_interval, workload.poll_interval),
    )
