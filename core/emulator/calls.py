"""What a call method receives and returns, independent of HTTP, and the parsing helpers they share."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import invalid_argument
from .faults import Faults
from .settings import EmulatorSettings
from .store import Store


class Body(Protocol):
    """The request body as the server hands it over: read in blocks, or all at once."""

    remaining: int

    def read(self, size: int) -> bytes: ...

    def read_all(self) -> bytes: ...


@dataclass
class Call:
    """One parsed request, plus what the call created or touched (for the journal)."""

    method: str
    kind: str
    params: dict[str, str]
    query: dict[str, str]
    headers: Any  # email.message.Message: case-insensitive .get()
    body: Body
    host_url: str  # scheme://host:port as the client addressed us
    now: float
    display_name: str | None = None
    sha256: str | None = None
    resource: str | None = None


@dataclass
class Reply:
    """An answer: JSON (None = empty body) or a file streamed as raw bytes."""

    status: int = 200
    json: dict[str, Any] | None = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    stream: Path | None = None
    stream_size: int = 0


@dataclass
class Context:
    """What every group of call methods works on."""

    store: Store
    settings: Callable[[], EmulatorSettings]
    faults: Faults
    base_url: Callable[[], str]


def pick(obj: Any, camel: str, snake: str | None = None) -> Any:
    """obj[camel] or obj[snake] (the service accepts both spellings); None when obj is not a dict."""
    if not isinstance(obj, dict):
        return None
    return obj.get(camel, obj.get(snake or camel))


def json_body(call: Call) -> Any:
    """The parsed JSON body ({} when empty); 400 when it is not JSON."""
    raw = call.body.read_all()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise invalid_argument("Invalid JSON payload received.") from None


def page_size(call: Call, default: int, maximum: int) -> int:
    """The pageSize query value: default when absent or 0, capped at maximum."""
    text = call.query.get("pageSize")
    if not text:
        return default
    try:
        size = int(text)
    except ValueError:
        raise invalid_argument(f"Invalid value at 'page_size' (TYPE_INT32), \"{text}\"") from None
    if size < 0:
        raise invalid_argument("page_size must not be negative.")
    return default if size == 0 else min(size, maximum)


class Methods:
    """A group of call methods sharing the emulator's state."""

    def __init__(self, ctx: Context) -> None:
        self.store = ctx.store
        self.settings = ctx.settings
        self.faults = ctx.faults
        self.base_url = ctx.base_url
