"""The monitor app: the engine runs inside it as an async worker; panes mirror the engine's events.

Events come up as messages (see `messages.py`); commands go down as engine method calls. The app keeps no
state the engine does not have: the grid, lists and figures are what the events said.

Exit codes (`core/exit_codes.py`): the run's own code once every batch has ended (0 every file done, 3 some
ended otherwise), whichever way the app is left; with work left, 75 after `q` and 128+N after signal N or
Ctrl-C (SIGHUP 129, SIGINT 130, SIGTERM 143), like the headless runner; 2 when the checkpoint cannot be used;
1 when the engine failed. Read-only: 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar

from gembatch.core.config import Settings
from gembatch.core.events import Level, LogLine
from gembatch.core.exit_codes import EXIT_INCOMPLETE, EXIT_OK, EXIT_SIGNAL_BASE, EXIT_USAGE, leaving_code
from gembatch.core.exit_codes import EXIT_INTERNAL as EXIT_ENGINE_ERROR
from gembatch.core.model import BatchRecord, Stage
from gembatch.core.watch import CheckpointWatcher
from textual import events, on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Container, Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Sparkline, Static
from textual.worker import Worker, WorkerState

from .commands import RunCommands
from .formatting import count
from .grid_model import STAGE_PREFIX
from .hangup import HangupGuard
from .messages import (
    AdmissionUpdated,
    BatchesChanged,
    CoolDownUpdated,
    EngineBridge,
    LogAdded,
    PauseUpdated,
    RunEnded,
)
from .panes.batch_grid import BatchGrid
from .panes.countdown_pane import CountdownPane
from .panes.filter_bar import FilterBar
from .panes.log_pane import LogPane
from .panes.summary_bar import SummaryBar
from .panes.uploads_pane import UploadsPane
from .progress import RunTally
from .screens.confirm import ConfirmScreen
from .screens.detail import DetailScreen
from .screens.help import HelpScreen, collect_keys
from .surface import EngineSurface
from .theme_memory import load_theme, save_theme, theme_file

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # SIGHUP: see hangup.py
WATCH_INTERVAL = 2.0  # seconds between reloads of the checkpoint in read-only mode
ACTING = frozenset({"pause", "resume", "retry", "cancel_batch", "skip"})
GRID_ONLY = frozenset({"filter", "clear_filter", "sort", "reverse_sort"})
RETRYABLE = frozenset({Stage.FAILED, Stage.CANCELLED, Stage.EXPIRED})  # "retry every failed batch"
ROOMY_WIDTH = 100  # under this many columns the header keeps no sparkline and the footer no `^p palette`
SPARK_MINUTES = 30  # the header's sparkline: requests answered in each of the last 30 minutes


class MonitorApp(App[int]):
    """Batch grid, uploads waiting, rate-limit countdown, log stream and summary, over a running engine."""

    CSS_PATH = "app.tcss"
    TITLE = "gembatch"
    COMMANDS = App.COMMANDS | {RunCommands}
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (150, "-wide")]
    VERTICAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-compact"), (30, "-short"), (36, "-tall")]

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "pause", "Pause", id="pause"),
        Binding("p", "resume", "Resume", id="resume"),
        Binding("r", "retry", "Retry", id="retry"),
        Binding("c", "cancel_batch", "Cancel", id="cancel"),
        Binding("s", "skip", "Skip", id="skip"),
        # Priority: the app opens the bar before it reads the next key, so letters typed right after `/` reach
        # the bar (not the grid, where `p` or `c` would act); check_action passes `/` through once the bar has focus.
        Binding("slash", "filter", "Filter", id="filter", priority=True),
        Binding("escape", "clear_filter", "Clear filter", id="clear-filter", priority=True, show=False),  # in the title
        Binding("o", "sort", "Sort", id="sort"),
        Binding("O", "reverse_sort", "Reverse sort", id="reverse-sort", show=False),
        Binding("question_mark", "help", "Keys", id="help"),
        Binding("ctrl+p", "command_palette", "Commands", id="commands", show=False, priority=True),  # the palette
        Binding("q", "quit", "Quit", id="quit"),
        Binding("ctrl+c", "quit", "Quit", id="quit-ctrl-c", show=False, priority=True),
    ]

    def __init__(
        self,
        engine: EngineSurface,
        settings: Settings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        secrets: tuple[str, ...] = (),
        handle_signals: bool = False,
        read_only: str | None = None,
        watch_interval: float = WATCH_INTERVAL,
        theme_file: Path | None = None,
    ) -> None:
        """`engine` has the Engine's surface; `read_only` forces watch mode with that reason; the theme chosen
        is remembered in `theme_file` (None: not remembered)."""
        super().__init__()
        if "TEXTUAL_ANIMATIONS" not in os.environ:
            self.animation_level = "none"
        self.engine = engine
        self.settings = settings or getattr(engine, "settings", None)
        self.clock = clock
        self.secrets = tuple(s for s in secrets if s)
        self.handle_signals = handle_signals
        self.watch_interval = watch_interval
        self.read_only: str | None = read_only
        self.paused = bool(getattr(engine, "paused", False))
        self.tally = RunTally()
        self.started_at = clock()
        self.engine_code: int | None = None
        self.engine_error: BaseException | None = None
        self.stop_signal: int | None = None
        self._lock_held = False
        self._stopping = False
        self._quit_requested = False
        self._interrupted = False  # Ctrl-C (a key in the UI): leaves as SIGINT would
        self._bridge: EngineBridge | None = None
        self._watcher: CheckpointWatcher | None = None
        self._engine_worker: Worker[int] | None = None
        self._hangup: HangupGuard | None = None
        self.summary = SummaryBar(id="summary")
        self.filter_bar = FilterBar(id="filter")
        self.grid = BatchGrid(clock, id="grid")
        self._grid_title = ""
        self.countdown = CountdownPane(clock, id="countdown")
        self.uploads = UploadsPane(clock, id="uploads")
        self.log_pane = LogPane(id="log", secrets=self.secrets)
        self.sparkline = Sparkline([], id="rate")
        self.rate_label = Static("", id="rate-label", markup=False)
        self.rate_box = Vertical(self.rate_label, self.sparkline, id="rate-box")
        self.theme_file = theme_file
        self._theme_loaded = False

    # ---- layout ----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="header"):
            yield self.summary
            yield self.rate_box
        with Container(id="body"):
            with Vertical(id="main"):
                yield self.filter_bar
                yield self.grid
            with Container(id="side"):
                yield self.countdown
                yield self.uploads
        yield self.log_pane
        self.footer = Footer(compact=True)  # less space between keys: at 80 columns every key fits
        yield self.footer

    def on_resize(self, event: events.Resize) -> None:
        """At 80 columns the summary and the keys need every column: no sparkline, no `^p palette` hint."""
        roomy = event.size.width >= ROOMY_WIDTH
        self.rate_box.display = roomy
        self.footer.show_command_palette = roomy

    @property
    def panes_live(self) -> bool:
        """False once the panes are gone (the app is closing): late engine events are then ignored."""
        return self.grid.is_attached

    def on_mount(self) -> None:
        self._restore_theme()
        self.started_at = float(getattr(self.engine, "started_at", self.clock()))
        self._bridge = EngineBridge(self.engine.bus, self)
        claim_error: Exception | None = None
        if self.read_only is None:
            try:
                self.read_only = self._claim_checkpoint()
            except Exception as exc:  # e.g. the lock file cannot be created: say so, start nothing
                claim_error = exc
        summary = self.summary
        self.countdown.set_read_only(self.read_only is not None)
        self.countdown.set_paused(self.paused)
        self.log_pane.border_title = "Log"
        self.grid.focus()
        self._title_grid()
        if self.handle_signals:
            self._install_signal_handlers()
        if claim_error is not None:
            self.engine_error = claim_error
            self._log(Level.ERROR, f"cannot take the checkpoint: {claim_error}")
            self._engine_finished(self._error_code(claim_error))
        elif self.read_only is not None:
            summary.show(state="WATCHING", state_tone="ended", read_only_note=self._read_only_note())
            self._start_watcher()
        else:
            summary.show(state="RUNNING", state_tone="running", paused=self.paused)
            self._engine_worker = self.run_worker(self._run_engine(), name="engine", group="engine",
                                                  exit_on_error=False)
        self.set_interval(1.0, self._tick, name="tick")
        self._tick()
        self.refresh_bindings()

    def _claim_checkpoint(self) -> str | None:
        """Take the checkpoint's lock; returns why the app is read-only instead, or None."""
        if self.settings is not None and getattr(self.settings, "read_only", False):
            return "--read-only"
        try:
            self.engine.store.acquire_lock()
        except Exception as exc:
            from gembatch.core.checkpoint_lock import CheckpointLocked  # only needed when the lock is refused

            if not isinstance(exc, CheckpointLocked):
                raise
            holder = getattr(exc, "holder", None)
            return holder.describe() if hasattr(holder, "describe") else str(exc)
        self._lock_held = True
        return None

    def _release_checkpoint(self) -> None:
        if self._lock_held:
            self._lock_held = False
            self.engine.store.release_lock()

    # ---- the engine and the watcher --------------------------------------------------------------

    async def _run_engine(self) -> int:
        """The engine's whole run; the checkpoint is saved before `run()` returns."""
        try:
            return await self.engine.run()
        finally:
            self._release_checkpoint()
            with contextlib.suppress(Exception):
                await self.engine.gateway.aclose()

    def _start_watcher(self) -> None:
        store = getattr(self.engine, "store", None)
        path = store.path if store is not None else self.settings.checkpoint_path()
        self._watcher = CheckpointWatcher(path, self.engine.bus, interval=self.watch_interval, clock=self.clock,
                                          holder=getattr(store, "read_holder", None))
        self.run_worker(self._watcher.run(), name="watcher", group="watcher", exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place that handles the end of every worker, failures included."""
        worker = event.worker
        if event.state is WorkerState.ERROR:
            error = worker.error
            self._log(Level.ERROR, f"{worker.name} failed: {type(error).__name__}: {error}")
            if worker.name == "engine":
                self.engine_error = error
                self._engine_finished(self._error_code(error))
            else:
                self.notify(f"{worker.name} failed: {error}", severity="error", markup=False)
        elif worker.name == "engine" and event.state is WorkerState.SUCCESS:
            self._engine_finished(int(worker.result))
        elif worker.name == "engine" and event.state is WorkerState.CANCELLED:
            self._engine_finished(None)

    @staticmethod
    def _error_code(error: BaseException | None) -> int:
        from gembatch.core.checkpoint_format import CheckpointError
        from gembatch.core.engine import RunRefused

        if isinstance(error, RunRefused):
            return error.exit_code  # e.g. over the cost limit: nothing was submitted
        return EXIT_USAGE if isinstance(error, CheckpointError) else EXIT_ENGINE_ERROR

    def _engine_finished(self, code: int | None) -> None:
        self.engine_code = code
        if self._hangup is not None:
            self._hangup.engine_done.set()
        if self.panes_live:
            summary = self.summary
            if self.engine_error is not None:
                summary.show(state=f"ENGINE STOPPED ({type(self.engine_error).__name__})", state_tone="error")
            elif self._stopping:
                summary.show(state="STOPPED, checkpoint saved", state_tone="ended")
            else:
                summary.show(state=f"FINISHED (exit {code})", state_tone="ended")
                self._log(Level.INFO, f"the run has ended (exit code {code}); press q to leave")
            self.refresh_bindings()
        if self._quit_requested or self.stop_signal is not None:
            self.exit(self.exit_code(), return_code=self.exit_code())

    def exit_code(self) -> int:
        """The process exit code, as the module docstring decides: never 0 while work is left."""
        if self.read_only is not None:
            return EXIT_OK if self.stop_signal is None else EXIT_SIGNAL_BASE + self.stop_signal
        if self.engine_error is not None and self.stop_signal is None:
            return self._error_code(self.engine_error)
        tally = self.tally
        work_left = tally.files_total == 0 or tally.files_done < tally.files_total
        run_code = self.engine_code
        if run_code is None and not work_left:  # forced stop after the last batch ended
            run_code = EXIT_INCOMPLETE if tally.files_failed else EXIT_OK
        return leaving_code(run_code, work_left, self.leaving_signal)

    @property
    def leaving_signal(self) -> int | None:
        """The signal the app is left by (Ctrl-C counts as SIGINT), or None."""
        if self.stop_signal is not None:
            return self.stop_signal
        return signal.SIGINT if self._interrupted else None

    @property
    def engine_running(self) -> bool:
        """True while the engine's run has not returned."""
        return self._engine_worker is not None and self._engine_worker.state in (
            WorkerState.PENDING, WorkerState.RUNNING)

    def _begin_stop(self) -> None:
        """Ask the engine to stop; the app exits once `run()` has returned (checkpoint saved)."""
        if self.read_only is not None or not self.engine_running:
            if self._watcher is not None:
                self._watcher.stop()
            self.exit(self.exit_code(), return_code=self.exit_code())
            return
        self._quit_requested = True
        if self._stopping:
            return
        self._stopping = True
        self.engine.request_stop()
        self.summary.show(state="STOPPING: saving the checkpoint (q again forces)", state_tone="ended")
        self._log(Level.INFO, "stopping: finishing the calls in flight, then saving the checkpoint")
        self.refresh_bindings()

    # ---- signals ---------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, self._on_stop_signal, signum)
        with contextlib.suppress(ValueError, AttributeError):  # not the main thread, or no SIGHUP here
            self._hangup = HangupGuard(lambda: self._driver, self._on_stop_signal, 128 + signal.SIGHUP)
            self._hangup.install()

    def _remove_signal_handlers(self) -> None:
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
            for signum in STOP_SIGNALS:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(signum)
        if self._hangup is not None:
            self._hangup.uninstall()

    def _on_stop_signal(self, signum: int) -> None:
        """SIGHUP (terminal gone), SIGTERM or SIGINT: stop the engine, save, exit; no waiting for keys."""
        if self.stop_signal is None:
            self.stop_signal = signum
            self._log(Level.WARNING, f"{signal.Signals(signum).name}: saving the checkpoint and stopping")
        self._begin_stop()

    def on_unmount(self) -> None:
        if self.handle_signals:
            self._remove_signal_handlers()
        if self._bridge is not None:
            self._bridge.close()
        if self._watcher is not None:
            self._watcher.stop()

    # ---- events from the engine ------------------------------------------------------------------

    def on_batches_changed(self, message: BatchesChanged) -> None:
        if not self.panes_live:
            return
        records = message.records
        for rec in records:
            self.tally.apply(rec)
        with self.batch_update():
            self.grid.apply(records)
            self.uploads.apply(records)
            self.summary.show(snapshot=self.tally.snapshot())
            self._title_grid()
        screen = self.screen
        if isinstance(screen, DetailScreen):
            for rec in records:
                if rec.batch_id == screen.batch_id:
                    screen.update_record(rec)

    def on_log_added(self, message: LogAdded) -> None:
        if not self.panes_live:
            return
        self.log_pane.add(message.line)

    def on_admission_updated(self, message: AdmissionUpdated) -> None:
        if not self.panes_live:
            return
        self.countdown.set_figures(message.figures)
        self._show_cooling()

    def on_cool_down_updated(self, message: CoolDownUpdated) -> None:
        if not self.panes_live:
            return
        self.countdown.cool_down(message.quota, message.until, message.text)
        self._show_cooling()

    def on_pause_updated(self, message: PauseUpdated) -> None:
        if not self.panes_live:
            return
        self.paused = message.paused
        self.summary.show(paused=message.paused)
        self.countdown.set_paused(message.paused)
        self.refresh_bindings()

    def on_run_ended(self, message: RunEnded) -> None:
        counts = ", ".join(f"{stage} {n}" for stage, n in sorted(message.summary.items()))
        if self._stopping or self.stop_signal is not None:
            self._log(Level.INFO, f"stopped, checkpoint saved; exit code {self.exit_code()}: {counts}")
        else:
            self._log(Level.INFO, f"run returned exit code {message.exit_code}: {counts}")

    def write_escapes(self, text: str) -> None:
        """Bells and desktop-notification escapes, through the app's own driver so the screen stays whole."""
        if self._driver is not None:
            self._driver.write(text)

    def _log(self, level: Level, message: str) -> None:
        self.post_message(LogAdded(LogLine(self.clock(), level, message)))

    def _read_only_note(self) -> str:
        """Who holds the run being watched, as the lock says now; or that it has stopped."""
        watcher = self._watcher
        by_flag = self.read_only == "--read-only"
        if watcher is not None and watcher.holder_checked:
            if watcher.holder is not None:
                return f"held by {watcher.holder}"
            if watcher.held_before or not by_flag:  # not by_flag: the lock was refused, so someone held it
                return "the engine that held it has stopped (last saved state shown)"
            return "no engine holds it"
        return "by --read-only" if by_flag else f"held by {self.read_only}"

    def _show_cooling(self) -> None:
        countdown = self.countdown
        left = None if countdown.until is None else countdown.until - self.clock()
        self.summary.show(cooling_left=left)

    def _title_grid(self) -> None:
        grid = self.grid
        model = grid.model
        title = f"Batches {grid.row_count}"
        if model.filter_text:
            title += f" of {len(model.records)} matching {model.filter_text!r} (Esc shows all)"
        title += f" · sorted by {model.sort_label}"
        if title != self._grid_title:  # setting a border title repaints the whole grid, even when it is the same
            self._grid_title = title
            grid.border_title = title

    def _tick(self) -> None:
        """Once a second: clocks, countdown, time left; fresh admission figures from a running engine."""
        if not self.panes_live:
            return
        now = self.clock()
        self.tally.sample(now)
        if self.read_only is None and self.engine_running:
            with contextlib.suppress(Exception):
                self.countdown.set_figures(self.engine.admission.figures(now))
        self.countdown.tick(now)
        self.uploads.tick(now)
        self.grid.tick(now)
        self._show_cooling()
        self.summary.show(elapsed=now - self.started_at, snapshot=self.tally.snapshot())
        self._show_rate(now)
        if self.read_only is not None and self.engine_error is None:
            self.summary.show(read_only_note=self._read_only_note())

    def _show_rate(self, now: float) -> None:
        """The header's sparkline: requests answered in each of the last 30 minutes, and the busiest minute."""
        counts = self.tally.answered_per_minute(now, SPARK_MINUTES)
        if counts != list(self.sparkline.data or ()):
            self.sparkline.data = counts
            self.rate_label.update(f"answered/min · max {count(max(counts))}")

    # ---- theme -----------------------------------------------------------------------------------

    def _restore_theme(self) -> None:
        """Use the theme remembered from an earlier run, if any (a bad file is reported, not fatal)."""
        if self.theme_file is not None:
            try:
                name = load_theme(self.theme_file)
            except (OSError, ValueError) as exc:
                self._log(Level.WARNING, f"theme not restored: {exc}")
                name = None
            if name is not None:
                if name in self.available_themes:
                    self.theme = name
                else:
                    self._log(Level.WARNING, f"{self.theme_file}: no theme named {name!r}; using {self.theme}")
        self._theme_loaded = True

    def watch_theme(self, name: str) -> None:
        """A theme chosen (the palette's Theme command): remember it for the next run."""
        if self._theme_loaded and self.theme_file is not None:
            try:
                save_theme(self.theme_file, name)
            except OSError as exc:
                self._log(Level.WARNING, f"theme not remembered: cannot write {self.theme_file}: {exc}")

    # ---- keys ------------------------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's Theme and Quit, and the product's own help; the product's commands come from RunCommands."""
        yield SystemCommand("Theme", "Change the colour theme (remembered for the next run)", self.action_change_theme)
        yield SystemCommand("Keys", "Show every key", self.action_help)
        yield SystemCommand("Quit", "Stop cleanly (checkpoint saved) and leave (q)", self.action_quit)

    @property
    def can_act(self) -> bool:
        """True when commands may go to the engine: not read-only, running, not stopping."""
        return self.read_only is None and self.engine_running and not self._stopping

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key) and event.key == "ctrl+c" and not event.is_forwarded:
            self._interrupted = True  # its binding quits as q does; the exit code with work left is SIGINT's
        await super().on_event(event)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ACTING:
            if self.read_only is not None:
                return False  # a watcher sends no commands: not offered, and the keys do nothing
            if self._stopping or not self.engine_running:
                return False if action == "resume" else None  # shown dimmed; resume hidden
            if action == "pause":
                return not self.paused
            if action == "resume":
                return self.paused
        if action in GRID_ONLY:
            if len(self.screen_stack) > 1:  # the detail, the help or a question is on top
                return False
            if action == "filter":
                return self.focused is not self.filter_bar
            if action == "clear_filter":
                return self.filter_bar.shown or bool(self.grid.model.filter_text)
        return True

    def _target(self) -> str | None:
        screen = self.screen
        if isinstance(screen, DetailScreen):
            return screen.batch_id
        return self.grid.selected_id

    def _record(self, batch_id: str) -> BatchRecord | None:
        return self.grid.model.records.get(batch_id)

    def action_pause(self) -> None:
        self.engine.pause()

    def action_resume(self) -> None:
        self.engine.resume()

    def action_retry(self) -> None:
        batch_id = self._target()
        if batch_id is None:
            return
        if self.engine.retry(batch_id):
            self.notify(f"{batch_id}: submitted again as a new attempt", markup=False)
        else:
            rec = self._record(batch_id)
            stage = rec.stage.value if rec else "unknown"
            self.notify(f"{batch_id} is {stage}: only failed, cancelled, expired or skipped batches can be "
                        "retried", severity="warning", markup=False)

    def action_retry_failed(self) -> None:
        """Retry every failed, cancelled or expired batch (each as `r` would)."""
        if not self.can_act:
            return
        failed = [rec.batch_id for rec in self.grid.model.records.values() if rec.stage in RETRYABLE]
        again = [batch_id for batch_id in failed if self.engine.retry(batch_id)]
        if again:
            self.notify(f"{len(again)} failed batch(es) submitted again", markup=False)
        else:
            self.notify("no failed, cancelled or expired batch to retry", severity="warning", markup=False)

    def action_sort_by(self, key: str) -> None:
        """Sort the grid by one column."""
        self.grid.sort_by(key)
        self._title_grid()

    def action_filter_stage(self, stage: str) -> None:
        """Show only the batches in `stage` (the filter bar shows `stage:<name>`; Esc shows all)."""
        text = f"{STAGE_PREFIX}{stage}"
        self.filter_bar.add_class("-shown")
        with self.filter_bar.prevent(Input.Changed):
            self.filter_bar.value = text
        self.grid.set_filter(text)
        self._title_grid()
        self.screen.set_focus(self.grid)
        self.refresh_bindings()

    def action_results_path(self) -> None:
        """Show the selected batch's results file path and copy it to the clipboard."""
        batch_id = self._target()
        rec = self._record(batch_id) if batch_id else None
        if rec is None:
            return
        if not rec.result_path:
            self.notify(f"{batch_id} has no results file yet ({rec.stage.value})", severity="warning", markup=False)
            return
        self.copy_to_clipboard(rec.result_path)
        self.notify(f"{batch_id} results (copied): {rec.result_path}", markup=False, timeout=10)

    def action_copy_job(self) -> None:
        """Copy the selected batch's job name to the clipboard."""
        batch_id = self._target()
        rec = self._record(batch_id) if batch_id else None
        if rec is None:
            return
        if not rec.job_name:
            self.notify(f"{batch_id} has no job yet ({rec.stage.value})", severity="warning", markup=False)
            return
        self.copy_to_clipboard(rec.job_name)
        self.notify(f"copied {rec.job_name}", markup=False)

    def action_skip(self) -> None:
        batch_id = self._target()
        if batch_id is None:
            return
        if self.engine.skip(batch_id):
            self.notify(f"{batch_id}: skipped; it will not be submitted", markup=False)
        else:
            rec = self._record(batch_id)
            stage = rec.stage.value if rec else "unknown"
            self.notify(f"{batch_id} is {stage}: only a batch whose job does not exist yet can be skipped",
                        severity="warning", markup=False)

    def action_cancel_batch(self) -> None:
        batch_id = self._target()
        if batch_id is None:
            return
        rec = self._record(batch_id)
        if rec is not None and rec.stage.ended:
            self.notify(f"{batch_id} has already ended ({rec.stage.value})", severity="warning", markup=False)
            return
        if rec is not None and rec.job_name and rec.stage in (Stage.PENDING, Stage.RUNNING):
            question = f"Cancel {batch_id}? Its job {rec.job_name} is cancelled on the server."
        else:
            question = f"Cancel {batch_id}? Its job will not be created."

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._cancel(batch_id), name=f"cancel {batch_id}", group="commands",
                                exit_on_error=False)

        self.push_screen(ConfirmScreen(question), answered)

    async def _cancel(self, batch_id: str) -> None:
        if await self.engine.cancel(batch_id):
            self.notify(f"{batch_id}: cancel sent", markup=False)
        else:
            self.notify(f"{batch_id}: cannot be cancelled now (see the log)", severity="warning", markup=False)

    def action_filter(self) -> None:
        self.filter_bar.open()
        self.refresh_bindings()

    def action_clear_filter(self) -> None:
        """Esc: empty the filter, hide its bar, back to the grid with every row."""
        self.filter_bar.remove_class("-shown")
        self.filter_bar.call_later(self.filter_bar.dismiss)  # after the keys it has yet to take in, typed before Esc
        self.grid.set_filter("")
        self._title_grid()
        self.screen.set_focus(self.grid)
        self.refresh_bindings()

    def action_sort(self) -> None:
        self.grid.cycle_sort()
        self._title_grid()

    def action_reverse_sort(self) -> None:
        self.grid.flip_order()
        self._title_grid()

    def action_help(self) -> None:
        keys = collect_keys(self.screen.active_bindings, self.get_key_display)
        self.push_screen(HelpScreen(keys))

    async def action_quit(self) -> None:
        """q: stop the engine cleanly (checkpoint saved), then exit; a second q forces the stop."""
        if self._stopping and self.engine_running and self._engine_worker is not None:
            self._log(Level.WARNING, "forcing the stop: cancelling the engine (the checkpoint is still saved)")
            self._engine_worker.cancel()
            return
        self._begin_stop()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.grid.set_filter(event.value)
        self._title_grid()
        self.refresh_bindings()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self.filter_bar.close_if_empty()
        self.screen.set_focus(self.grid)
        self.refresh_bindings()

    def on_batch_grid_opened(self, message: BatchGrid.Opened) -> None:
        rec = self._record(message.batch_id)
        if rec is not None:
            self.push_screen(DetailScreen(rec, self.clock))


def run_app(settings: Settings, api_key: str, argv: list[str] | None = None) -> int:
    """The UI entry: build the engine, run the app (engine inside), return the process exit code.

    The run's log file gets the lines a headless run prints (progress lines included); on leaving, the last
    log line names the exit code and a summary goes to stdout. A read-only app writes neither.
    """
    import sys

    from gembatch.core.compose import build_engine
    from gembatch.core.headless import HeadlessLog, open_run_log, report_leaving, subscribe_run_log
    from gembatch.core.notify import Notifier

    file_log = HeadlessLog(None, open_run_log(settings, api_key))  # the file only: the screen has its panes
    engine = build_engine(settings, api_key)  # the backend's retries come as engine LogLines, to the panes and file
    app = MonitorApp(engine, settings, secrets=(api_key,), handle_signals=True, theme_file=theme_file())
    report = subscribe_run_log(engine, file_log, "UI", active=lambda: app.read_only is None)
    write = app.write_escapes if settings.notify.terminal != "off" else None
    notifier = Notifier(settings.notify, write, active=lambda: app.read_only is None).attach(engine.bus)
    result = app.run(mouse=not settings.no_mouse)
    notifier.close()
    if result is None:
        code = app.return_code or (EXIT_ENGINE_ERROR if app.return_code is None else EXIT_OK)
    else:
        code = int(result)
    report.stop()
    if app.read_only is None and (engine.records or app.engine_error is not None):
        report_leaving(engine, settings, code, log=file_log, signum=app.leaving_signal,
                       ran=app.engine_error is None, argv=argv, summary=sys.stdout)
    return code
