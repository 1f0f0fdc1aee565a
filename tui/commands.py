"""The product's own commands in the command palette (Ctrl+P): each one calls what its key calls.

A read-only app (a watcher) offers no command that acts on the engine; sorting, filtering and copying stay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, cast

from gembatch.core.model import Stage
from textual.command import DiscoveryHit, Hit, Hits, Provider

from .grid_model import SORTS

if TYPE_CHECKING:
    from .app import MonitorApp


@dataclass(frozen=True, slots=True)
class PaletteCommand:
    """One line of the palette: what it says, what it does, and whether it acts on the engine."""

    title: str
    help: str
    run: Callable[[], object]
    acts: bool = False


def palette_commands(app: MonitorApp) -> Iterator[PaletteCommand]:
    """The commands the palette offers now (pause or resume, as the key would show)."""
    if app.can_act:  # not read-only, and the engine is running and not stopping
        if app.paused:
            yield PaletteCommand("Resume", "Resume submitting new jobs (p)", app.action_resume, acts=True)
        else:
            yield PaletteCommand("Pause", "Stop submitting new jobs; jobs in flight go on (p)", app.action_pause,
                                 acts=True)
        yield PaletteCommand("Retry every failed batch", "Submit each failed, cancelled or expired batch again",
                             app.action_retry_failed, acts=True)
        yield PaletteCommand("Retry the selected batch", "Submit the selected batch again (r)", app.action_retry,
                             acts=True)
        yield PaletteCommand("Skip the selected batch", "Do not submit the selected batch (s)", app.action_skip,
                             acts=True)
    for key, (label, _) in SORTS.items():
        yield PaletteCommand(f"Sort by {label}", "Order the grid by this column (o cycles)",
                             partial(app.action_sort_by, key))
    for stage in Stage:
        yield PaletteCommand(f"Filter by stage: {stage.value}", "Show only the batches in this stage (Esc shows all)",
                             partial(app.action_filter_stage, stage.value))
    yield PaletteCommand("Open the selected batch's results", "Show its results file path and copy it",
                         app.action_results_path)
    yield PaletteCommand("Copy the selected batch's job name", "Put its job name on the clipboard",
                         app.action_copy_job)


class RunCommands(Provider):
    """Pause, resume, retry, skip, sort, filter by stage, results path, copy job name."""

    @property
    def monitor(self) -> MonitorApp:
        """The app, typed as the monitor."""
        return cast("MonitorApp", self.app)

    async def discover(self) -> Hits:
        for command in palette_commands(self.monitor):
            yield DiscoveryHit(command.title, command.run, help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in palette_commands(self.monitor):
            score = matcher.match(command.title)
            if score > 0:
                yield Hit(score, matcher.highlight(command.title), command.run, text=command.title,
                          help=command.help)
