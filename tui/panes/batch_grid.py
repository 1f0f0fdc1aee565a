"""The batch grid: one row per input file, drawn on demand (line API), so 10,000 rows cost what 40 do."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from gembatch.core.model import BatchRecord, Stage
from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..formatting import shorten_middle
from ..grid_model import EXPIRY_STAGES, GUTTER, Column, GridModel, Naturals, cell_text, layout_columns

STAGE_TONE: dict[Stage, str] = {
    Stage.NEW: "muted",
    Stage.VALIDATED: "muted",
    Stage.UPLOADING: "active",
    Stage.UPLOADED: "waiting",
    Stage.CREATING: "active",
    Stage.PENDING: "active",
    Stage.RUNNING: "active",
    Stage.SUCCEEDED: "done",
    Stage.DOWNLOADED: "done",
    Stage.FAILED: "failed",
    Stage.CANCELLED: "failed",
    Stage.EXPIRED: "failed",
    Stage.REJECTED: "failed",
    Stage.SKIPPED: "muted",
}


class BatchGrid(ScrollView, can_focus=True, inherit_bindings=False):
    """Rows of batches with a fixed header line; `apply()` takes changed records, a diff keyed by batch id."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "edge(0)", "First", show=False),
        Binding("end,G", "edge(1)", "Last", show=False),
        Binding("left", "scroll_left", "Left", show=False),
        Binding("right", "scroll_right", "Right", show=False),
        Binding("enter", "open", "Detail", id="detail"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "batch-grid--header",
        "batch-grid--cursor",
        "batch-grid--done",
        "batch-grid--active",
        "batch-grid--waiting",
        "batch-grid--failed",
        "batch-grid--muted",
        "batch-grid--error",
    }

    DEFAULT_CSS = """
    BatchGrid {
        background: $surface;
        scrollbar-gutter: stable;
        & > .batch-grid--header { text-style: bold; color: $text-muted; }
        & > .batch-grid--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .batch-grid--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
        & > .batch-grid--done { color: $success; }
        & > .batch-grid--active { color: $accent; }
        & > .batch-grid--waiting { color: $warning; }
        & > .batch-grid--failed { color: $error; text-style: bold; }
        & > .batch-grid--muted { color: $text-muted; }
        & > .batch-grid--error { color: $error; }
    }
    """

    @dataclass
    class Opened(Message):
        """Enter on a row: show this batch's detail."""

        batch_id: str

    @dataclass
    class Moved(Message):
        """The cursor moved to another batch (or to none)."""

        batch_id: str | None

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, BatchGrid.Moved)

    def __init__(self, clock: Callable[[], float], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.model = GridModel()
        self.cursor = 0
        self._selected: str | None = None
        self._lines: LRUCache[tuple[object, ...], Strip] = LRUCache(1024)
        self._layout: tuple[tuple[Column, int], ...] = ()
        self._laid_out_for: tuple[int, Naturals] | None = None
        self._minute = int(clock() // 60)

    # ---- what callers use ------------------------------------------------------------------------

    @property
    def selected_id(self) -> str | None:
        """The batch under the cursor."""
        return self._selected

    @property
    def row_count(self) -> int:
        """Rows shown (after the filter)."""
        return len(self.model.view)

    def apply(self, records: Iterable[BatchRecord]) -> None:
        """Take in changed batch snapshots: redraw the changed rows, or rebuild the view once."""
        in_place = self.model.upsert(records)
        if in_place is None:
            self._after_rebuild()
            return
        if self._update_virtual_size():  # a longer name, job id or error: the columns moved
            self.refresh()
            return
        self._refresh_rows(self.model.row_of[batch_id] for batch_id in in_place)

    def set_filter(self, text: str) -> None:
        """Show only rows whose name, stage, job or error holds `text`."""
        self.model.set_filter(text)
        self._after_rebuild()

    def sort_by(self, key: str) -> None:
        """Sort by the column `key`."""
        self.model.sort_by(key)
        self._after_rebuild()

    def cycle_sort(self) -> None:
        """Sort by the next column."""
        self.model.cycle_sort()
        self._after_rebuild()

    def flip_order(self) -> None:
        """Reverse the sort."""
        self.model.flip_order()
        self._after_rebuild()

    def select(self, batch_id: str) -> bool:
        """Move the cursor to `batch_id` if it is shown."""
        row = self.model.row_of.get(batch_id)
        if row is None:
            return False
        self._move_to(row)
        return True

    def tick(self, now: float) -> None:
        """Called at 1 Hz: when the minute (the expiry column's resolution) changes, redraw the rows showing one."""
        minute = int(now // 60)
        if minute == self._minute:
            return
        self._minute = minute
        top = self.scroll_offset.y
        view, records = self.model.view, self.model.records
        self._refresh_rows(row for row in range(top, min(len(view), top + self.size.height))
                           if _shows_expiry(records[view[row]]))

    def _refresh_rows(self, rows: Iterable[int]) -> None:
        """Redraw these rows (indexes into the view) where they are on screen; over SSH, only they are sent."""
        top = self.scroll_offset.y
        height = self.size.height
        width = self.scrollable_content_region.width  # not the scrollbar: it has not changed
        for row in rows:
            if top <= row < top + height:
                self.refresh(Region(0, row + 1 - top, width, 1))

    # ---- layout ----------------------------------------------------------------------------------

    def _after_rebuild(self) -> None:
        view = self.model.view
        if self._selected is not None and self._selected in self.model.row_of:
            self.cursor = self.model.row_of[self._selected]
        else:
            self.cursor = min(self.cursor, max(0, len(view) - 1))
        new_selected = view[self.cursor] if view else None
        if new_selected != self._selected:
            self._selected = new_selected
            self.post_message(self.Moved(new_selected))
        self._update_virtual_size()
        self._scroll_cursor_into_view()
        self.refresh()

    @property
    def columns(self) -> tuple[tuple[Column, int], ...]:
        """The columns shown and their widths, as last laid out for the widget's width."""
        return self._layout

    def _update_virtual_size(self) -> bool:
        """Lay the columns out for the current width and content; True when they changed."""
        width = self.scrollable_content_region.width
        key = (width, self.model.naturals)
        changed = key != self._laid_out_for
        if changed:
            self._laid_out_for = key
            layout = layout_columns(width, self.model.naturals)
            changed = layout != self._layout
            if changed:
                self._layout = layout
                self._lines.clear()
        total = GUTTER + sum(w for _, w in self._layout) + len(self._layout) - 1
        self.virtual_size = Size(total, len(self.model.view) + 1)
        return changed

    def on_resize(self, event: events.Resize) -> None:
        self._update_virtual_size()
        self._scroll_cursor_into_view()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._lines.clear()

    # ---- drawing ---------------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        base = self.rich_style
        if not self._layout:
            self._update_virtual_size()
        if y == 0:
            strip = self._header_strip(base)
        else:
            row = scroll_y + y - 1
            if row >= len(self.model.view):
                return Strip.blank(width, base)
            strip = self._row_strip(row, base)
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def _cell(self, text: str, column: Column, width: int) -> str:
        if cell_len(text) > width:
            if column.key == "name":  # names of one run differ at their end: keep it
                return set_cell_size(shorten_middle(text, width), width)
            return set_cell_size(text, max(0, width - 1)) + "…" if width else ""
        pad = " " * (width - cell_len(text))
        return pad + text if column.align == "right" else text + pad

    def _header_strip(self, base: Style) -> Strip:
        key = ("header", self._layout, self.model.sort_key, self.model.descending)
        cached = self._lines.get(key)
        if cached is not None:
            return cached
        style = base + self.get_component_rich_style("batch-grid--header", partial=True)
        parts = [" " * GUTTER]
        for column, width in self._layout:
            title = column.title
            if column.key == self.model.sort_key:
                title += " ↓" if self.model.descending else " ↑"
            parts.append(self._cell(title, column, width))
        strip = Strip([Segment(" ".join(parts), style)])
        self._lines[key] = strip
        return strip

    def _row_strip(self, row: int, base: Style) -> Strip:
        batch_id = self.model.view[row]
        is_cursor = row == self.cursor
        rec = self.model.records[batch_id]
        minute = self._minute if _shows_expiry(rec) else None
        key = (batch_id, self.model.version[batch_id], is_cursor, self._layout, minute)
        cached = self._lines.get(key)
        if cached is not None:
            return cached
        now = self.clock()
        row_style = base
        if is_cursor:
            row_style = base + self.get_component_rich_style("batch-grid--cursor", partial=True)
        if is_cursor:  # the cursor's own colours: a stage colour could vanish on the cursor's background
            tone = error_style = row_style
        else:
            tone = row_style + self.get_component_rich_style(f"batch-grid--{STAGE_TONE[rec.stage]}", partial=True)
            error_style = row_style + self.get_component_rich_style("batch-grid--error", partial=True)
        segments = [Segment("▸ " if is_cursor else "  ", row_style)]
        for index, (column, width) in enumerate(self._layout):
            if index:
                segments.append(Segment(" ", row_style))
            text = self._cell(cell_text(column.key, rec, now), column, width)
            style = tone if column.key == "stage" else error_style if column.key == "error" else row_style
            segments.append(Segment(text, style))
        strip = Strip(segments).simplify()  # one escape sequence per run of one style, not one per cell
        self._lines[key] = strip
        return strip

    # ---- cursor ----------------------------------------------------------------------------------

    def _move_to(self, row: int) -> None:
        view = self.model.view
        if not view:
            return
        row = max(0, min(row, len(view) - 1))
        previous = self.cursor
        self.cursor = row
        if view[row] != self._selected:
            self._selected = view[row]
            self.post_message(self.Moved(self._selected))
        self.refresh_line(previous + 1)
        self.refresh_line(row + 1)
        self._scroll_cursor_into_view()

    def _scroll_cursor_into_view(self) -> None:
        rows_visible = max(1, self.scrollable_content_region.height - 1)
        top = round(self.scroll_offset.y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + rows_visible:
            self.scroll_to(y=self.cursor - rows_visible + 1, animate=False, immediate=True)

    def action_cursor(self, delta: int) -> None:
        self._move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self._move_to(self.cursor + direction * max(1, self.scrollable_content_region.height - 2))

    def action_edge(self, end: int) -> None:
        self._move_to(len(self.model.view) - 1 if end else 0)

    def action_open(self) -> None:
        if self._selected is not None:
            self.post_message(self.Opened(self._selected))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return
        row = round(self.scroll_offset.y) + offset.y - 1
        if row < len(self.model.view):
            was_selected = row == self.cursor and self._selected is not None
            self._move_to(row)
            if event.chain >= 2 or (was_selected and event.chain == 1):  # a click on the selected row opens it
                self.action_open()


def _shows_expiry(rec: BatchRecord) -> bool:
    """True when the row's Expires cell counts down (so it changes each minute)."""
    return rec.stage in EXPIRY_STAGES and rec.upload_expires_at is not None
