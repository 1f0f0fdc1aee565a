"""The uploaded-but-not-created list: each file, its upload, the time before it expires, why it waits."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from gembatch.core.model import BatchRecord, Stage
from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.widgets import Static

from ..formatting import shorten, shorten_middle, time_left

SHOWN_MAX = 200  # rows drawn at most; the title gives the full count
SOON = 3 * 3600.0  # an upload expiring sooner than this is flagged
NAME_MIN, WAIT_MIN = 10, 12  # the narrowest the file and reason columns get before the pane scrolls sideways


def wait_text(rec: BatchRecord) -> str:
    """Why this upload has no job yet, in words."""
    reason = " ".join((rec.wait_reason or "").split())
    return reason or "next in line"


def upload_widths(width: int, name: int, upload: int, left: int, wait: int) -> tuple[int, int, int, int]:
    """Widths of file, upload, time left and reason in `width` cells; upload 0 when it is left out.

    Whole names and whole reasons come first; the upload's id is shown only when everything fits with it.
    When names and reasons cannot both be whole, the name is cut in the middle (its end tells files apart),
    down to NAME_MIN, if that keeps the reason whole; if nothing does, the name stays whole (as far as the
    reason keeps WAIT_MIN) and the reason is cut.
    """
    needed = name + left + wait + 2
    if needed + upload + 1 <= width:
        return name, upload, left, width - name - upload - left - 3
    if needed <= width:
        return name, 0, left, width - name - left - 2
    if min(name, NAME_MIN) + left + wait + 2 <= width:
        return width - left - 2 - wait, 0, left, wait
    name = min(name, max(NAME_MIN, width - left - 2 - min(wait, WAIT_MIN)))
    return name, 0, left, max(min(wait, WAIT_MIN), width - name - left - 2)


class UploadsPane(Static):
    """Uploads waiting for their job to be created, soonest expiry first."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"uploads-pane--header", "uploads-pane--soon", "uploads-pane--empty"}

    DEFAULT_CSS = """
    UploadsPane {
        height: 1fr;
        padding: 0 0 0 1;  /* no right padding: the reason, last, may run to the edge */
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
        shown = rows[:SHOWN_MAX]
        cells = [(rec.batch_id, (rec.upload_name or "").rpartition("/")[2], self._left(rec, now), wait_text(rec))
                 for rec in shown]
        name_w, upload_w, left_w, wait_w = upload_widths(
            self.scrollable_content_region.width,
            max([len("File"), *(cell_len(c[0]) for c in cells)]),
            max([len("Upload"), *(cell_len(c[1]) for c in cells)]),
            max([len("Left"), *(cell_len(c[2]) for c in cells)]),
            max([len("Waits for"), *(cell_len(c[3]) for c in cells)]))
        header = self.get_component_rich_style("uploads-pane--header")
        soon = self.get_component_rich_style("uploads-pane--soon")
        lines = [self._line(("File", "Upload", "Left", "Waits for"), (name_w, upload_w, left_w, wait_w), header)]
        for name, upload, left, wait in cells:
            lines.append(self._line((name, upload, left, wait), (name_w, upload_w, left_w, wait_w),
                                    left_style=soon if left.startswith("!") else None))
        if count > SHOWN_MAX:
            lines.append(Text(f"… {count - SHOWN_MAX} more"))
        self.update(Text("\n").join(lines), layout=layout)

    @staticmethod
    def _left(rec: BatchRecord, now: float) -> str:
        left = time_left(rec.upload_expires_at, now)
        expiring = rec.upload_expires_at is not None and rec.upload_expires_at - now < SOON
        return f"! {left}" if expiring else left

    @staticmethod
    def _line(cells: tuple[str, str, str, str], widths: tuple[int, int, int, int], style: Style | str = "",
              left_style: Style | None = None) -> Text:
        """One row: the name cut in the middle when it must be, the time left flush right, the upload left out at 0."""
        name, upload, left, wait = cells
        name_w, upload_w, left_w, wait_w = widths
        line = Text(no_wrap=True, end="", style=style)
        line.append(shorten_middle(name, name_w).ljust(name_w) + " ")
        if upload_w:
            line.append(shorten(upload, upload_w).ljust(upload_w) + " ")
        line.append(left.rjust(left_w), left_style or "")
        line.append(" " + shorten(wait, wait_w))
        return line
