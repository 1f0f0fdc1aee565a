"""The record of every call the emulator answered (or dropped), so tests can assert what a client did."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One call: when, what, how it was answered, and what it created or touched.

    `status` is the HTTP status answered; 0 when the answer was lost on purpose (note "fault:lost-answer"),
    in which case the call still took effect and `resource` names what it created or touched.
    """

    at: float
    method: str
    path: str
    status: int
    kind: str
    display_name: str | None = None
    sha256: str | None = None
    resource: str | None = None
    note: str | None = None


class Journal:
    """A thread-safe, append-only list of JournalEntry with an optional listener (the CLI's log line)."""

    def __init__(self, listener: Callable[[JournalEntry], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._entries: list[JournalEntry] = []
        self._listener = listener

    def add(self, entry: JournalEntry) -> None:
        """Append one entry and tell the listener."""
        with self._lock:
            self._entries.append(entry)
        if self._listener is not None:
            self._listener(entry)

    def entries(self) -> list[JournalEntry]:
        """A copy of every entry, oldest first."""
        with self._lock:
            return list(self._entries)

    def reset(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
