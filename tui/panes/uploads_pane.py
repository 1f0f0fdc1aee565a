"""The uploaded-but-not-created list: each file, its upload, the time before it expires, why it waits."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from gembatch.core.model import BatchRecord, Stage
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from ..formatting import time_left

SHOWN_MAX = 200  # rows drawn at most; the title gives the full count
SOON = 3 * 3600.0  # an upload expiring sooner than this is flagged
WIDE = 50  # below this many columns the upload's name is left out (the detail screen has it)


def wait_text(rec: BatchRecord) -> str:
    """Why this upload has no job yet, in words."""
    reason = (rec.wait_reason or "").strip()
    return reason or "next in line"


class UploadsPane(Static):
    """Uploads waiting for their job to be created, soonest expiry first."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"uploads-pane--header", "uploads-pane--soon", "uploads-pane--empty"}

    DEFAULT_CSS = """
    UploadsPane {
        height: 1fr;
        padding: 0 1;
        overflow-y: auto;
        & > .uploads-pane--header { text-style: bold; color: $text-muted; }
        & > .uploads-pane--soon { color: $warning; text-style: bold; }
        & > .uploads-pane--empty { color: $text-muted; }
    }
    """

    def __init__(self, clock: Callable[[], float], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.waiting: dict[str, BatchRecord] = {}
        self._minute = int(clock() // 60)
        self._title = ""

    def on_mount(self) -> None:
        self._redraw()

    def apply(self, records: Iterable[BatchRecord]) -> None:
        """Take in changed batches; redraw only when the waiting list changed."""
        changed = False
        for rec in records:
            if rec.stage is Stage.UPLOADED:
                self.waiting[rec.batch_id] = rec
                changed = True
            elif self.waiting.pop(rec.batch_id, None) is not None:
                changed = True
        if changed:
            self._redraw()

    def on_resize(self) -> None:
        self._redraw()

    def tick(self, now: float) -> None:
        """At 1 Hz: redraw when the minute (the time-left resolution) changes."""
        minute = int(now // 60)
        if minute != self._minute and self.waiting:
            self._minute = minute
            self._redraw(layout=False)  # same rows, new times: no layout pass (it would repaint other panes)

    def _redraw(self, layout: bool = True) -> None:
        count = len(self.waiting)
        title = f"Uploaded, not created ({count})"
        if title != self._title:  # setting a border title repaints the whole pane, even when it is the same
            self._title = title
            self.border_title = title
        if not count:
            self.update(Text("none waiting", style=self.get_component_rich_style("uploads-pane--empty")))
            return
        now = self.clock()
        rows = sorted(self.waiting.values(), key=lambda r: (r.upload_expires_at or float("inf"), r.batch_id))
        table = Table(box=None, expand=True, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0),
                      header_style=self.get_component_rich_style("uploads-pane--header"))
        table.add_column("File", no_wrap=True, overflow="ellipsis", ratio=3, min_width=8)
        wide = self.content_region.width >= WIDE
        if wide:
            table.add_column("Upload", no_wrap=True, overflow="ellipsis", ratio=2, min_width=6)
        table.add_column("Left", no_wrap=True, justify="right", width=9)
        table.add_column("Waits for", no_wrap=True, overflow="ellipsis", ratio=3, min_width=8)
        soon = self.get_component_rich_style("uploads-pane--soon")
        for rec in rows[:SHOWN_MAX]:
            left = time_left(rec.upload_expires_at, now)
            expiring = rec.upload_expires_at is not None and rec.upload_expires_at - now < SOON
            cells: list[str | Text] = [rec.batch_id]
            if wide:
                cells.append((rec.upload_name or "").removeprefix("files/"))
            cells += [Text(("! " if expiring else "") + left, style=soon if expiring else ""), wait_text(rec)]
            table.add_row(*cells)
        if count > SHOWN_MAX:
            table.add_row(f"… {count - SHOWN_MAX} more")
        self.update(table, layout=layout)
