"""The log stream: engine lines with time and level as text, bounded, the API key never shown."""

from __future__ import annotations

from typing import ClassVar

from gembatch.core.events import Level, LogLine
from gembatch.core.redact import redact
from rich.text import Text
from textual.widgets import RichLog

from ..formatting import clock_time

MAX_LINES = 2000


class LogPane(RichLog):
    """Keeps the last `MAX_LINES` lines; each line is passed through `redact` before it is shown."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"log-pane--time", "log-pane--debug", "log-pane--info", "log-pane--warning",
                         "log-pane--error"}

    DEFAULT_CSS = """
    LogPane {
        background: $surface;
        scrollbar-gutter: stable;
        & > .log-pane--time { color: $text-muted; }
        & > .log-pane--debug { color: $text-muted; }
        & > .log-pane--info { color: $text; }
        & > .log-pane--warning { color: $warning; text-style: bold; }
        & > .log-pane--error { color: $error; text-style: bold; }
    }
    """

    def __init__(self, *, id: str | None = None, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(id=id, max_lines=MAX_LINES, wrap=False, markup=False, highlight=False,
                         auto_scroll=True)
        self.secrets = tuple(s for s in secrets if s)

    def add(self, line: LogLine) -> None:
        """Append one engine line."""
        text = redact(line.message)
        if self.secrets:
            text = redact(text, self.secrets)
        level = Level(line.level)
        entry = Text()
        entry.append(clock_time(line.at), self.get_component_rich_style("log-pane--time"))
        entry.append(" ")
        entry.append(f"{level.upper():7}", self.get_component_rich_style(f"log-pane--{level.value}"))
        entry.append(" ")
        entry.append(text)
        self.write(entry)
