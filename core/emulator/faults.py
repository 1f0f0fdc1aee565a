"""Seeded fault decisions: 5xx answers, lost answers, failed jobs and per-request errors.

Each kind of decision draws from its own random stream, seeded from `settings.seed`, so a sequential run is
reproducible and turning one fault on does not shift the others. A stream is re-seeded when the seed changes.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

from .errors import ApiError, server_error
from .settings import EmulatorSettings

_STREAMS = ("server-error", "lost-answer", "job-fail", "file-fail")


class Faults:
    """Decides, call by call, whether a fault fires; thread-safe."""

    def __init__(self, settings: Callable[[], EmulatorSettings]) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._seed: int | None = None
        self._rngs: dict[str, random.Random] = {}

    def _draw(self, stream: str) -> float:
        seed = self._settings().seed
        with self._lock:
            if seed != self._seed:
                self._seed = seed
                self._rngs = {name: random.Random(f"{seed}:{name}") for name in _STREAMS}
            return self._rngs[stream].random()

    def server_error(self, kind: str) -> ApiError | None:
        """A 500 or 503 to answer instead of doing the call, or None."""
        settings = self._settings()
        if settings.server_error_rate <= 0:
            return None
        if settings.server_error_kinds and kind not in settings.server_error_kinds:
            return None
        draw = self._draw("server-error")
        if draw >= settings.server_error_rate:
            return None
        # The draw is uniform below the rate: its lower half gives 500, its upper half 503.
        return server_error(500 if draw < settings.server_error_rate / 2 else 503)

    def lost_answer(self, kind: str) -> tuple[str, float] | None:
        """(mode, delay seconds) when the answer of this successful call is to be lost, else None."""
        settings = self._settings()
        if kind == "batches.create":
            rate, mode, delay = (settings.lost_create_rate, settings.lost_create_mode,
                                 settings.lost_create_delay_seconds)
        else:
            if settings.lost_answer_kinds and kind not in settings.lost_answer_kinds:
                return None
            rate, mode, delay = (settings.lost_answer_rate, settings.lost_answer_mode,
                                 settings.lost_answer_delay_seconds)
        if rate <= 0 or self._draw("lost-answer") >= rate:
            return None
        return mode, delay

    def job_fails(self) -> bool:
        """Whether a new job will end FAILED instead of SUCCEEDED (job_fail_rate)."""
        rate = self._settings().job_fail_rate
        return rate > 0 and self._draw("job-fail") < rate


    def file_fails(self) -> bool:
        """Whether a new upload will end FAILED instead of ACTIVE after processing (file_failed_rate)."""
        rate = self._settings().file_failed_rate
        return rate > 0 and self._draw("file-fail") < rate


def request_errors(seed: int, job_serial: int, count: int, rate: float) -> list[int]:
    """Sorted indexes of the requests of one job that get an error line; the same for the same job."""
    if rate <= 0 or count <= 0:
        return []
    rng = random.Random(f"{seed}:requests:{job_serial}")
    return [i for i in range(count) if rng.random() < rate]
