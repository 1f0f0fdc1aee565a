"""The run's log file beside its checkpoint: the lines headless prints, redacted, rotated by size."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from .redact import redact

LOG_MAX_BYTES = 5 * 1024 * 1024  # rotate past 5 MB
LOG_BACKUPS = 3  # keep NAME.log.1 .. NAME.log.3
_CHECKPOINT_SUFFIXES = (".json", ".toml")


def log_file_path(checkpoint: Path) -> Path:
    """`gembatch.log` beside `gembatch.checkpoint.json`; `run.log` beside `run.checkpoint.json` or `run.json`."""
    name = checkpoint.name
    for suffix in _CHECKPOINT_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    name = name.removesuffix(".checkpoint") or "gembatch"
    return checkpoint.with_name(f"{name}.log")


class _QuietRotatingHandler(logging.handlers.RotatingFileHandler):
    """A rotating file handler that never prints "--- Logging error ---": a failure (disk full, folder gone)
    stops the file quietly; the run goes on and the terminal keeps its lines."""

    failed: OSError | None = None

    def handleError(self, record: logging.LogRecord) -> None:
        if self.failed is None:
            self.failed = OSError("cannot write the log file")


class RunLogFile:
    """Appends lines to the run's log file (rotated: a few MB x a few files); every line is redacted first."""

    def __init__(self, path: Path, *, secrets: tuple[str, ...] = (), max_bytes: int = LOG_MAX_BYTES,
                 backups: int = LOG_BACKUPS) -> None:
        self.path = path
        self.secrets = tuple(s for s in secrets if s and len(s) >= 4)
        self.max_bytes = max_bytes
        self.backups = backups
        self.error: str | None = None  # why the file could not be opened or written, once that happened
        self._handler: _QuietRotatingHandler | None = None

    def _open(self) -> _QuietRotatingHandler | None:
        if self._handler is not None or self.error is not None:
            return self._handler
        try:
            handler = _QuietRotatingHandler(self.path, maxBytes=self.max_bytes, backupCount=self.backups,
                                            encoding="utf-8", delay=False)
        except OSError as exc:
            self.error = f"cannot open the log file {self.path}: {exc.strerror or exc}"
            return None
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._handler = handler
        return handler

    def write(self, text: str) -> None:
        """Append `text` (one or more lines; the trailing newline is optional); never raises."""
        handler = self._open()
        if handler is None:
            return
        cleaned = redact(redact(text), self.secrets).rstrip("\n")
        if not cleaned:
            return
        handler.handle(logging.makeLogRecord({"msg": cleaned, "levelno": logging.INFO, "levelname": "INFO"}))
        if handler.failed is not None:
            self.error = f"cannot write the log file {self.path}"
            self.close()

    def close(self) -> None:
        """Flush and close the file (writes after this reopen it)."""
        handler, self._handler = self._handler, None
        if handler is not None:
            handler.close()
