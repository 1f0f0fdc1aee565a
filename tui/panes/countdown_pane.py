"""The rate-limit countdown: which quota was hit, until when, a countdown at 1 Hz, the admission figures."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from gembatch.core.events import AdmissionFigures, Quota
from gembatch.core.wait_text import belief_part
from rich.table import Table
from rich.text import Text
from textual.geometry import Region
from textual.widget import Widget

from ..formatting import clock_time, compact_count, count, countdown


def of(value: int, limit: int | None) -> str:
    """`value / limit`, with `—` for no limit."""
    return f"{count(value)} / {count(limit) if limit else '—'}"


def short_of(value: int, limit: int | None) -> str:
    """`value/limit` in short counts (`33k/500k`), for the compact layout."""
    return f"{compact_count(value)}/{compact_count(limit) if limit else '—'}"


def belief_rows(figures: AdmissionFigures) -> list[tuple[str, str]]:
    """What admission believes of each limit and why, one a row ("tokens ~880k (guess, 14:02 UTC, probing)",
    times in UTC), and the other jobs on the account; nothing while no limit was learned and no other job was seen."""
    rows = [("Believes" if i == 0 else "", belief_part(b)) for i, b in enumerate(figures.beliefs)]
    if figures.other_jobs:
        rows.append(("Other jobs", f"{figures.other_jobs} not ours (left alone)"))
    return rows


class CountdownPane(Widget):
    """Shows the cool-down after a 429 and what admission control knows; ticks once a second."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "countdown-pane--cooling", "countdown-pane--clear", "countdown-pane--label"}

    DEFAULT_CSS = """
    CountdownPane {
        height: auto;
        padding: 0 1;
        & > .countdown-pane--cooling { color: $warning; text-style: bold; }
        & > .countdown-pane--clear { color: $success; }
        & > .countdown-pane--label { color: $text-muted; }
    }
    """

    def __init__(self, clock: Callable[[], float], *, read_only: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self.paused = False
        self.clock = clock
        self.read_only = read_only
        self.figures: AdmissionFigures | None = None
        self.quota: Quota | None = None
        self.until: float | None = None
        self.detail = ""
        self._shown: list[tuple[str, str | Text]] | None = None

    @property
    def cooling(self) -> bool:
        """True while a cool-down deadline is set."""
        return self.until is not None

    def on_mount(self) -> None:
        self.border_title = "Rate limit"
        self._redraw()

    def set_read_only(self, read_only: bool) -> None:
        """Watching another instance's run: no creates of ours, no figures."""
        self.read_only = read_only
        self._redraw()

    def set_figures(self, figures: AdmissionFigures) -> None:
        """New admission figures; they carry the cool-down deadline too."""
        changed = figures != self.figures
        self.figures = figures
        if figures.cool_down_until != self.until:
            changed = True
            self.until = figures.cool_down_until
            self.quota = figures.cool_down_quota or self.quota
            if self.until is None:
                self.detail = ""
        if changed:
            self._redraw()

    def cool_down(self, quota: Quota, until: float | None, text: str = "") -> None:
        """A cool-down started (`until` set) or ended (None)."""
        self.quota = quota
        self.until = until
        self.detail = text if until is not None else ""
        self._redraw()

    def set_paused(self, paused: bool) -> None:
        """Pause is the user's, not a quota's: the pane says so instead of "may go"."""
        if paused != self.paused:
            self.paused = paused
            self._redraw()

    def on_resize(self) -> None:
        self._shown = None  # the compact form may have come or gone: draw in full
        self._redraw()

    @property
    def compact(self) -> bool:
        """True when the pane's height is set by the layout and is too small for one figure a line."""
        return not self.styles.height.is_auto and 0 < self.content_region.height < len(self._full_rows())

    def tick(self, now: float) -> None:
        """At 1 Hz: the countdown moves only while cooling down."""
        if self.until is not None:
            self._redraw()

    def _rows(self) -> list[tuple[str, str | Text]]:
        return self._compact_rows() if self.compact else self._full_rows()

    def _state(self) -> tuple[str, str | Text]:
        """The first line: may creates go, and if not, why."""
        if self.until is not None:
            text = f"COOLING DOWN {countdown(self.until - self.clock())}"
            return "Creates", Text(text, style=self.get_component_rich_style("countdown-pane--cooling"))
        if self.read_only:
            return "Creates", "read-only: none from here"
        if self.paused:
            return "Creates", "paused (p resumes)"
        return "Creates", Text("✓ may go", style=self.get_component_rich_style("countdown-pane--clear"))

    def _compact_rows(self) -> list[tuple[str, str | Text]]:
        """Four lines: the state, the quota while cooling down, then the figures in short counts."""
        rows = [self._state()]
        if self.until is not None:
            rows.append(("Quota", str(self.quota or Quota.UNKNOWN)))
        figures = self.figures
        if figures is not None:
            rows += [("Jobs", f"{short_of(figures.jobs_in_flight, figures.max_jobs)} · "
                              f"429s {count(figures.rate_limited_total)}"),
                     ("Tokens", short_of(figures.tokens_enqueued, figures.token_budget))]
            if self.until is None:
                rows.append(("Per min", short_of(figures.creates_last_minute, figures.creates_per_minute)))
        return rows

    def _full_rows(self) -> list[tuple[str, str | Text]]:
        now = self.clock()
        rows: list[tuple[str, str | Text]] = []
        if self.until is not None:
            state = Text(f"COOLING DOWN {countdown(self.until - now)}",
                         style=self.get_component_rich_style("countdown-pane--cooling"))
            rows += [("Creates", state), ("Quota", str(self.quota or Quota.UNKNOWN)),
                     ("Until", f"{clock_time(self.until)} UTC")]
        elif self.read_only:
            rows.append(("Creates", "read-only: this instance sends none"))
        elif self.paused:
            rows.append(("Creates", "paused (p resumes)"))
        else:
            rows.append(("Creates", Text("✓ may go", style=self.get_component_rich_style("countdown-pane--clear"))))
        figures = self.figures
        if figures is not None:
            rows += [("Jobs in flight", of(figures.jobs_in_flight, figures.max_jobs)),
                     ("Tokens queued", of(figures.tokens_enqueued, figures.token_budget)),
                     ("Creates/min", of(figures.creates_last_minute, figures.creates_per_minute)),
                     ("429s so far", count(figures.rate_limited_total))]
            rows += belief_rows(figures)
        elif self.read_only:
            rows.append(("Figures", "held by the running instance"))
        return rows

    def _redraw(self) -> None:
        """Redraw only the rows that changed (over SSH, the countdown costs one line a second)."""
        if not self.is_mounted:
            return
        rows = self._rows()
        old, self._shown = self._shown, rows
        if old is not None and len(old) == len(rows):
            width = self.content_size.width
            changed = [Region(0, y, width, 1) for y, (was, now) in enumerate(zip(old, rows, strict=True))
                       if was != now]
            if changed:
                self.refresh(*changed)
        else:
            self.refresh(layout=True)

    def render(self) -> Table:
        label = self.get_component_rich_style("countdown-pane--label")
        lines = Table.grid(padding=(0, 1), expand=True)
        lines.add_column(no_wrap=True, style=label)
        lines.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        for name, value in self._shown or self._rows():
            lines.add_row(name, value)
        return lines
