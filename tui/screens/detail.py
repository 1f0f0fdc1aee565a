"""One batch in full: every field of its record, its history with times, its errors; live."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

from gembatch.core.model import BatchRecord
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..formatting import count, date_time, time_left
from ..grid_model import stage_label

TIME_FIELDS = {"upload_expires_at", "intent_at", "updated_at"}
COUNT_FIELDS = {"size_bytes", "request_count", "est_tokens", "succeeded_count", "failed_count", "pending_count"}


def field_rows(rec: BatchRecord, now: float) -> list[tuple[str, str]]:
    """(name, value) for every field of the record except its history."""
    rows = []
    for f in dataclasses.fields(rec):
        if f.name == "history":
            continue
        value = getattr(rec, f.name)
        if value is None or value == "":
            shown = "—"
        elif f.name == "stage":
            shown = stage_label(value)
        elif f.name in TIME_FIELDS and value:
            shown = date_time(value)
            if f.name == "upload_expires_at":
                shown += f" ({time_left(value, now)} left)" if value > now else " (expired)"
        elif f.name in COUNT_FIELDS:
            shown = count(int(value))
        elif f.name == "mtime_ns":
            shown = date_time(value / 1e9) if value else "—"
        else:
            shown = str(value)
        rows.append((f.name.replace("_", " "), shown))
    return rows


class DetailScreen(Screen[None]):
    """Pushed by Enter on the grid; Escape goes back. The app hands it newer snapshots as they come."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,backspace,q", "back", "Back", id="detail-back")]

    COMPONENT_CLASSES: ClassVar[set[str]] = {"detail--label", "detail--error", "detail--heading"}

    DEFAULT_CSS = """
    DetailScreen {
        & > VerticalScroll { padding: 0 1; }
        & > .detail--label { color: $text-muted; }
        & > .detail--error { color: $error; text-style: bold; }
        & > .detail--heading { text-style: bold underline; }
    }
    """

    def __init__(self, record: BatchRecord, clock: Callable[[], float]) -> None:
        super().__init__()
        self.record = record
        self.clock = clock

    @property
    def batch_id(self) -> str:
        """The batch shown."""
        return self.record.batch_id

    def compose(self) -> ComposeResult:
        scroll = VerticalScroll(id="detail-scroll")
        scroll.can_focus = True
        with scroll:
            yield Static(id="detail-body")
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"Batch {self.record.batch_id}"
        self._redraw()
        self.query_one("#detail-scroll").focus()

    def update_record(self, record: BatchRecord) -> None:
        """A newer snapshot of the same batch."""
        self.record = record
        self._redraw()

    def _redraw(self) -> None:
        rec = self.record
        label = self.get_component_rich_style("detail--label")
        heading = self.get_component_rich_style("detail--heading")
        parts: list[object] = [Text(f"Batch {rec.batch_id}  {stage_label(rec.stage)}", style=heading)]
        if rec.last_error:
            parts.append(Text(f"Last error: {rec.last_error}", style=self.get_component_rich_style("detail--error")))
        history = Table(box=None, show_edge=False, pad_edge=False, header_style=label)
        history.add_column("When (UTC)", no_wrap=True)
        history.add_column("Stage", no_wrap=True)
        history.add_column("What happened", overflow="fold")
        for entry in rec.history:
            history.add_row(date_time(entry.at), stage_label(entry.stage), entry.note)
        if not rec.history:
            history.add_row("—", "", "no history yet")
        fields = Table.grid(padding=(0, 2))
        fields.add_column(style=label, no_wrap=True)
        fields.add_column(overflow="fold")
        for name, value in field_rows(rec, self.clock()):
            fields.add_row(name, value)
        parts += [Text(""), Text(f"History ({len(rec.history)} entries, oldest first)", style=heading), history,
                  Text(""), Text("Fields", style=heading), fields]
        self.query_one("#detail-body", Static).update(Group(*parts))

    def action_back(self) -> None:
        self.dismiss(None)
