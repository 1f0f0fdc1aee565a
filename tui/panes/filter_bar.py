"""The `/` filter: a one-line input over the grid; Enter keeps the filter, Escape clears it (the app's keys)."""

from __future__ import annotations

from textual.widgets import Input


class FilterBar(Input):
    """Filters the grid as you type (name, stage, job or error, any case)."""

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

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(placeholder="filter: name, stage, job or error   (Enter keeps, Esc clears)", id=id)
        self.cursor_blink = False

    @property
    def shown(self) -> bool:
        """True while the bar is on screen."""
        return self.has_class("-shown")

    def open(self) -> None:
        """Show the bar and focus it now, not after a refresh: the keys already typed must reach it."""
        self.add_class("-shown")
        self.screen.set_focus(self)

    def close_if_empty(self) -> None:
        """Hide the bar when it holds no filter."""
        if not self.value.strip():
            self.remove_class("-shown")

    def dismiss(self) -> None:
        """Empty the filter and hide the bar."""
        self.value = ""
        self.remove_class("-shown")
