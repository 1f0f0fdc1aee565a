"""The header: state as text (RUNNING, PAUSED, COOLING DOWN, READ-ONLY...), progress bars, elapsed, time left."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.geometry import Region
from textual.widget import Widget

from ..formatting import count, countdown, hms
from ..progress import Snapshot

BAR_MIN, BAR_MAX = 4, 40


def bar(done: int, total: int, width: int) -> str:
    """A text progress bar, `█` done and `░` to go: readable without colour."""
    if width <= 0:
        return ""
    filled = 0 if total <= 0 else min(width, done * width // total)
    return "█" * filled + "░" * (width - filled)


class SummaryBar(Widget):
    """Two lines: the run's state and times; files and requests done of total, as bars."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"summary-bar--title", "summary-bar--running", "summary-bar--paused",
                         "summary-bar--cooling", "summary-bar--read-only", "summary-bar--ended",
                         "summary-bar--error", "summary-bar--bar", "summary-bar--label"}

    DEFAULT_CSS = """
    SummaryBar {
        height: 2;
        background: $panel;
        padding: 0 1;
        & > .summary-bar--title { text-style: bold; color: $text; }
        & > .summary-bar--running { color: $success; text-style: bold; }
        & > .summary-bar--paused { color: $warning; text-style: bold reverse; }
        & > .summary-bar--cooling { color: $warning; text-style: bold; }
        & > .summary-bar--read-only { color: $primary; text-style: bold reverse; }
        & > .summary-bar--ended { color: $text; text-style: bold; }
        & > .summary-bar--error { color: $error; text-style: bold; }
        & > .summary-bar--bar { color: $accent; }
        & > .summary-bar--label { color: $text-muted; }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = "STARTING"
        self.state_tone = "running"
        self.paused = False
        self.cooling_left: float | None = None
        self.read_only_note: str | None = None  # read-only when set: who holds the run, or that it has stopped
        self.run_label = ""
        self.elapsed = 0.0
        self.snapshot = Snapshot(0, 0, 0, 0, 0, None)
        self._shown: tuple[Text, Text] | None = None

    def show(self, **changes: object) -> None:
        """Set some of the fields above; redraw only the line that changed (the clock: one line a second)."""
        for name, value in changes.items():
            if not hasattr(self, name):
                raise AttributeError(name)
            setattr(self, name, value)
        if not self.is_mounted:
            return
        old, self._shown = self._shown, self._lines()
        if old is None:
            self.refresh()
            return
        width = self.content_size.width
        changed = [Region(0, y, width, 1) for y, (was, now) in enumerate(zip(old, self._shown, strict=True))
                   if was != now]
        if changed:
            self.refresh(*changed)

    def _badge(self, text: str, tone: str) -> Text:
        return Text(f" {text} ", style=self.get_component_rich_style(f"summary-bar--{tone}"))

    def render(self) -> Text:
        self._shown = self._lines()
        return Text("\n").join(self._shown)

    def _lines(self) -> tuple[Text, Text]:
        width = max(20, self.content_region.width)
        label = self.get_component_rich_style("summary-bar--label")
        top = Text(no_wrap=True, overflow="ellipsis")
        top.append("gembatch", self.get_component_rich_style("summary-bar--title"))
        top.append(" ")
        if self.read_only_note is not None:
            top.append_text(self._badge("READ-ONLY", "read-only"))
            top.append(" ")
        top.append_text(self._badge(self.state, self.state_tone))
        if self.paused:
            top.append(" ")
            top.append_text(self._badge("PAUSED", "paused"))
        if self.cooling_left is not None:
            top.append(" ")
            top.append_text(self._badge(f"COOLING DOWN {countdown(self.cooling_left)}", "cooling"))
        right = Text(no_wrap=True)
        right.append("elapsed ", label)
        right.append(hms(self.elapsed))
        right.append("  left ", label)
        left = self.snapshot.seconds_left
        right.append(f"~{hms(left)}" if left is not None else "—")
        if self.run_label:
            right.append(f"  {self.run_label}", label)
        if self.read_only_note:
            top.append(f" {self.read_only_note}", label)
        gap = width - top.cell_len - right.cell_len
        if gap >= 2:
            top.append(" " * gap)
            top.append_text(right)
        else:
            top.append("  ")
            top.append_text(right)
            top.truncate(width, overflow="ellipsis")
        return top, self._progress_line(width)

    def _progress_line(self, width: int) -> Text:
        snap = self.snapshot
        label = self.get_component_rich_style("summary-bar--label")
        bar_style = self.get_component_rich_style("summary-bar--bar")
        parts = ", ".join(f"{count(n)} {name}" for name, n in snap.outcomes)
        ratio = f" {count(snap.files_done)}/{count(snap.files_total)}"
        requests = f" {count(snap.requests_done)}/{count(snap.requests_total)}"
        for files in (f"{ratio} ended ({parts})", f"{ratio} ({parts})", ratio):  # the longest that fits
            fixed = len("files ") + len(files) + len("   requests ") + len(requests)
            if fixed + 2 * BAR_MIN <= width:
                break
        bar_width = max(BAR_MIN, min(BAR_MAX, (width - fixed) // 2))
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append("files ", label)
        line.append(bar(snap.files_done, snap.files_total, bar_width), bar_style)
        line.append(files)
        line.append("   requests ", label)
        line.append(bar(snap.requests_done, snap.requests_total, bar_width), bar_style)
        line.append(requests)
        line.truncate(width, overflow="ellipsis")
        return line
