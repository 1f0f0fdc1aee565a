"""Composition: the batch service backend named by the `backend` setting, and the engine built on it.

The headless runner, the TUI and the subcommands all get their backend here. Adding a backend is one module
with an opener (see `BackendOpener`) and one line in `BACKENDS`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

from .api_trace import ApiTrace
from .backend import BatchBackend
from .config import ConfigError, Settings, setting_place

if TYPE_CHECKING:
    from .engine import Engine


class BackendOpener(Protocol):
    """Makes a backend for a run: `model` and `base_url` are the settings' unless a subcommand overrides them."""

    def __call__(self, settings: Settings, api_key: str, *, model: str, base_url: str | None,
                 trace: ApiTrace | None) -> BatchBackend: ...


# The value of the `backend` setting -> its opener, as "module:function" (imported when chosen) or the opener.
BACKENDS: dict[str, str | BackendOpener] = {
    "gemini": "gembatch.core.gateway:open_gemini",  # the Gemini Developer API (files + batches, API key)
}


def check_backend(settings: Settings) -> None:
    """A ConfigError naming the setting and the valid values when the settings name no known backend."""
    if settings.backend not in BACKENDS:
        valid = ", ".join(repr(name) for name in BACKENDS)
        raise ConfigError(f"{setting_place(settings, 'backend')}: unknown backend {settings.backend!r}; "
                          f"expected one of {valid}")


def backend_opener(settings: Settings) -> BackendOpener:
    """The opener of the backend the settings name (a ConfigError when there is none)."""
    check_backend(settings)
    entry = BACKENDS[settings.backend]
    if isinstance(entry, str):
        module, _, name = entry.partition(":")
        opener: BackendOpener = getattr(importlib.import_module(module), name)
        return opener
    return entry


def open_backend(settings: Settings, api_key: str, *, model: str | None = None, base_url: str | None = None,
                 trace: ApiTrace | None = None) -> BatchBackend:
    """The backend the settings name, for `model` and `base_url` (default: the settings')."""
    opener = backend_opener(settings)
    return opener(settings, api_key, model=model or settings.model, base_url=base_url or settings.base_url,
                  trace=trace)


def build_engine(settings: Settings, api_key: str) -> Engine:
    """The engine with its backend and checkpoint store, as the headless runner and the TUI use it.

    The backend's retries reach the engine's event bus as LogLines: subscribe to the bus to see them."""
    from .checkpoint_store import CheckpointStore
    from .engine import Engine

    opener = backend_opener(settings)  # an unknown backend is refused before the trace file is made
    store = CheckpointStore(settings.checkpoint_path())
    trace = None
    if settings.trace is not None:
        try:
            settings.trace.parent.mkdir(parents=True, exist_ok=True)
            trace = ApiTrace(settings.trace)
        except OSError as exc:
            raise ConfigError(f"--trace {settings.trace}: cannot write it: {exc.strerror or exc}") from None
    backend = opener(settings, api_key, model=settings.model, base_url=settings.base_url, trace=trace)
    return Engine(settings, backend, store)
