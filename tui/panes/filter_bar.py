"""The `/` filter: a one-line input over the grid; Enter keeps the filter, Escape clears it."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Input


class FilterBar(Input):
    """Filters the grid as you type (name, stage, job or error, any case)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "clear", "Clear filter", id="filter-clear")]

    DEFAULT_CSS = """
    FilterBar {
        display: none;
        height: 1;
        border: none;
        padding: 0 1;
        background: $boost;
        &.-shown { display: block; }
        &:focus { border: none; background: $boost; }
    }
    """

    class Cleared(Message):
        """Escape: the filter was emptied and the bar closed."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(placeholder="filter: name, stage, job or error   (Enter keeps, Esc clears)", id=id)
        self.cursor_blink = False

    def open(self) -> None:
        """Show and focus the bar."""
        self.add_class("-shown")
        self.focus()

    def close_if_empty(self) -> None:
        """Hide the bar when it holds no filter."""
        if not self.value.strip():
            self.remove_class("-shown")

    def action_clear(self) -> None:
        self.value = ""
        self.remove_class("-shown")
        self.post_message(self.Cleared())
