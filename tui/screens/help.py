"""The `?` help: a table of the keys that are active on the monitor, built from its bindings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


@dataclass(frozen=True, slots=True)
class KeyHelp:
    """One key of the help table."""

    keys: str
    description: str
    enabled: bool


def collect_keys(screen_bindings: dict, key_display) -> list[KeyHelp]:
    """The active bindings of a screen (key -> ActiveBinding), merged by action, in binding order."""
    by_action: dict[tuple[str, str], list[str]] = {}
    enabled: dict[tuple[str, str], bool] = {}
    for active in screen_bindings.values():
        binding: Binding = active.binding
        if not binding.description:
            continue
        slot = (binding.action, binding.description)
        by_action.setdefault(slot, []).append(key_display(binding))
        enabled[slot] = enabled.get(slot, False) or active.enabled
    return [KeyHelp(" / ".join(dict.fromkeys(keys)), slot[1], enabled[slot]) for slot, keys in by_action.items()]


class HelpScreen(ModalScreen[None]):
    """Every active key with what it does; keys that cannot act right now are marked."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "close", "Close", id="help-close")]

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
        & > VerticalScroll {
            width: 64;
            max-width: 95%;
            height: auto;
            max-height: 90%;
            border: thick $primary;
            background: $panel;
            padding: 0 1;
        }
    }
    """

    def __init__(self, keys: list[KeyHelp]) -> None:
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        table = Table(box=None, expand=True, show_edge=False, pad_edge=False)
        table.add_column("Key", no_wrap=True, style="bold")
        table.add_column("Does")
        table.add_column("Now", no_wrap=True)
        for key in self.keys:
            table.add_row(key.keys, key.description, "" if key.enabled else "not now")
        scroll = VerticalScroll()
        scroll.border_title = "Keys (Esc closes)"
        with scroll:
            yield Static(table)

    def action_close(self) -> None:
        self.dismiss(None)
