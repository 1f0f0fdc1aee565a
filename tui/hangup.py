"""When the terminal goes away (SIGHUP): stop reading and drawing, save the checkpoint, exit; never spin or hang.

After a hangup the terminal's file descriptors fail: Textual's input thread would spin on a descriptor that is
always "readable" with nothing to read, and its writer thread dies on EIO, after which the event loop blocks
once the writer's queue is full. So the guard, from the signal handler itself (which runs even while the loop
is blocked), points fds 0-2 at /dev/null, stops the input thread, and asks the app to stop the engine. A
watchdog thread makes sure the process ends: soon after the engine has saved the checkpoint, or when the loop
no longer answers (the checkpoint's journal is crash-safe, so ending then loses nothing already journaled).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

HUNG_LOOP_SECONDS = 10.0  # the loop has not answered a heartbeat for this long: end the process
ENGINE_SECONDS = 150.0  # the longest wait for the engine to finish its calls in flight and save
GRACE_SECONDS = 5.0  # after the engine has saved: time for the app to exit on its own


class HangupGuard:
    """Installs a SIGHUP handler for `app`; `stop` is called on the loop to begin a clean stop."""

    def __init__(self, driver_of: Callable[[], Any], stop: Callable[[int], None], exit_code: int = 129) -> None:
        self._driver_of = driver_of
        self._stop = stop
        self.exit_code = exit_code
        self.engine_done = threading.Event()
        self._hung_up = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Any = None

    def install(self) -> None:
        """Take SIGHUP for this process (call from the loop's thread, the main thread)."""
        self._loop = asyncio.get_running_loop()
        self._previous = signal.signal(signal.SIGHUP, self._on_hangup)

    def uninstall(self) -> None:
        """Give SIGHUP back."""
        if self._previous is not None:
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _on_hangup(self, signum: int, frame: object) -> None:
        if self._hung_up:
            return
        self._hung_up = True
        self._detach_terminal()
        threading.Thread(target=self._watchdog, name="hangup-watchdog", daemon=True).start()
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the watchdog ends things
                self._loop.call_soon_threadsafe(self._stop, signum)

    def _detach_terminal(self) -> None:
        """Reads now see end-of-file and writes succeed into nothing; Textual's input thread stops."""
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                with contextlib.suppress(OSError):
                    os.dup2(null, fd)
            os.close(null)
        driver = self._driver_of()
        exit_event = getattr(driver, "exit_event", None)
        if isinstance(exit_event, threading.Event):
            exit_event.set()

    def _loop_answers(self) -> bool:
        answered = threading.Event()
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(answered.set)
        except RuntimeError:
            return False
        return answered.wait(HUNG_LOOP_SECONDS)

    def _watchdog(self) -> None:
        waited = 0.0
        while not self.engine_done.wait(1.0):
            waited += 1.0
            if waited >= ENGINE_SECONDS or not self._loop_answers():
                os._exit(self.exit_code)
        time.sleep(GRACE_SECONDS)  # the app normally exits well within this; if it has not, end it here
        os._exit(self.exit_code)
