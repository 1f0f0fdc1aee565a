"""`gembatch-tui --serve`: the same app in a web browser (textual-serve), one app process per browser tab.

Each tab runs the normal command line without the serve flags. The first tab takes the checkpoint's lock and
runs the engine; a tab opened while it runs finds the lock held and watches read-only, as a second terminal
would. Closing the tab that runs the engine stops the run as SIGTERM does (calls in flight finish, the
checkpoint is saved); the next tab opened resumes it. With --demo the emulator and its files live in the
serving process, so every tab sees the same demo run.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import ipaddress
import json
import os
import secrets
import shlex
import signal
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.web_runner import GracefulExit
from gembatch.core.config import Settings
from gembatch.core.exit_codes import EXIT_OK, EXIT_SIGNAL_BASE, EXIT_USAGE
from textual_serve.app_service import AppService
from textual_serve.server import Server

from .serve_tab import TAB_PARENT_ENV

# Flags of the serving process only; the app of each tab gets the rest of the command line.
SERVE_FLAG = "--serve"
SERVE_VALUE_FLAGS = ("--host", "--port")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
STOP_GRACE = 30.0  # seconds a tab's app has to stop after its SIGTERM before it gets a SIGKILL
SAFE_AFTER_KILL = "the checkpoint is safe: the same command resumes"  # the checkpoint journal is crash-safe
TOKEN_PARAMETER = "token"  # http://127.0.0.1:8000/?token=...
NO_TOKEN = ("this page needs its token: open the URL with ?token= that `gembatch-tui --serve` printed in its "
            "terminal when it started")


def is_loopback(host: str) -> bool:
    """True for a name or address that only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def tab_words(words: Sequence[str]) -> list[str]:
    """The command line of one tab's app: `words` without --serve, --host and --port (and their values)."""
    kept: list[str] = []
    skip_value = False
    for word in words:
        if skip_value:
            skip_value = False
        elif word == SERVE_FLAG:
            pass
        elif word in SERVE_VALUE_FLAGS:
            skip_value = True
        elif not word.startswith(tuple(f"{flag}=" for flag in SERVE_VALUE_FLAGS)):
            kept.append(word)
    return kept


def tab_command(words: Sequence[str]) -> str:
    """The shell command textual-serve starts for each tab: this Python running gembatch-tui with `words`."""
    # `exec`: the shell is replaced by the app, so a signal sent to the process reaches the app itself.
    return "exec " + shlex.join([sys.executable, "-m", "gembatch.tui", *words])


class TabSession(AppService):
    """One browser tab's app process; stopping it is a SIGTERM, so the app saves its checkpoint as it leaves."""

    app_left = False  # the app has said it exits (q in the page, or a stop it was asked for)
    browser_gone = False  # the tab's socket is closed: the app's output is read and dropped until it ends
    killed = False  # it was sent a SIGKILL (it did not stop in time)

    def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
        environment = super()._build_environment(width=width, height=height)
        environment[TAB_PARENT_ENV] = str(os.getpid())  # the app hangs up when this process dies (serve_tab.py)
        return environment

    @property
    def exit_code(self) -> int | None:
        """The app process's exit code once it has ended."""
        return None if self._process is None else self._process.returncode

    async def on_data(self, payload: bytes) -> None:
        # Keep reading the app's output after the tab went away: a full pipe would block the app mid-save.
        if not self.browser_gone:
            try:
                await super().on_data(payload)
            except ConnectionError:
                self.browser_gone = True

    async def on_meta(self, data: bytes) -> None:
        with contextlib.suppress(ValueError, AttributeError):
            self.app_left = self.app_left or json.loads(data).get("type") == "exit"
        if not self.browser_gone:
            try:
                await super().on_meta(data)
            except ConnectionError:
                self.browser_gone = True

    def ask_to_stop(self) -> None:
        """SIGTERM to the app unless it is leaving already: it finishes its calls, saves, and exits."""
        if self.running and not self.app_left and not self.killed:
            self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> None:
        # os.kill, not Popen.send_signal: that one first polls, and a poll that reaps a just-ended app steals its
        # exit status from asyncio's child watcher (which then reports 255). The pid of a zombie is not reused.
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._process.pid, signum)

    @property
    def running(self) -> bool:
        """True while the app process runs."""
        return self._process is not None and self._process.returncode is None

    def kill(self) -> bool:
        """SIGKILL to the app if it still runs and was not killed yet; True if this call sent it."""
        if not self.running or self.killed:
            return False
        self.killed = True
        self._signal(signal.SIGKILL)
        return True

    async def run(self) -> None:
        await super().run()
        # The app's output has ended (it exited, or was killed without saying so): close its page's socket.
        if not self.browser_gone:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.remote_close()

    async def stop(self, grace: float = STOP_GRACE) -> bool:
        """Ask the app to stop and wait until its process has ended, killing it after `grace` s; True if killed."""
        self.ask_to_stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        killed_here = False
        # Not `process.wait()`: it also waits for the output pipe's end, which is never read if `run` stopped early.
        while self.running:
            if loop.time() >= deadline and not killed_here:
                killed_here = self.kill()
            await asyncio.sleep(0.05)
        if self._task is not None:
            task, self._task = self._task, None
            await task
        return killed_here


class TabServer(Server):
    """textual-serve's server behind a random token (as Jupyter's), with checks against other sites and names,
    and a clean stop on a signal."""

    def __init__(self, command: str, host: str, port: int, token: str | None = None,
                 stop_grace: float = STOP_GRACE) -> None:
        super().__init__(command, host=host, port=port, title="gembatch-tui")
        self.local_only = is_loopback(host)
        # Printed once, in the URL of the start message; never passed to the tabs' apps nor written elsewhere.
        self.token = token or secrets.token_urlsafe(32)
        self.sessions: set[TabSession] = set()  # every tab whose app has not ended yet
        self.stop_signal: int | None = None
        self.stop_grace = stop_grace
        self._kill_timer: asyncio.TimerHandle | None = None

    # ---- requests --------------------------------------------------------------------------------

    def refusal(self, request: web.Request) -> str | None:
        """Why a request is refused, or None: another site's page (Origin), or a name that is not this machine."""
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
            return f"a page of {origin} may not open this app"  # a cross-site WebSocket would drive the run
        hostname = urlsplit(f"//{request.host}").hostname or ""
        if self.local_only and not is_loopback(hostname):
            return f"this server answers only to localhost, not to {hostname!r}"  # DNS rebinding
        return None

    def cookie_name(self, request: web.Request) -> str:
        """The token's cookie, named after the port the browser used: cookies are per host, not per port, and two
        servers (or tunnels) on one host must not overwrite each other's."""
        port = urlsplit(f"//{request.host}").port or (443 if request.scheme == "https" else 80)
        return f"gembatch-serve-{port}"

    def token_in_query(self, request: web.Request) -> bool:
        """True when the URL carries this server's token."""
        return _same(request.query.get(TOKEN_PARAMETER), self.token)

    def admits(self, request: web.Request) -> bool:
        """True when the request carries the token: in the URL, or in the cookie a page opened with it received."""
        return self.token_in_query(request) or _same(request.cookies.get(self.cookie_name(request)), self.token)

    def guard(self, request: web.Request) -> None:
        """Raise 403 for a request of another site or name, or one without the token."""
        reason = self.refusal(request)
        if reason is None and not self.admits(request):
            reason = NO_TOKEN
        if reason is not None:
            raise web.HTTPForbidden(text=f"gembatch-tui: {reason}\n")

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        self.guard(request)
        # The page's script and socket URLs take the address the browser used (an SSH tunnel's local port too).
        self.public_url = f"{request.scheme}://{request.host}"
        response = await super().handle_index(request)
        if self.token_in_query(request):  # reloads and the page's socket then need no query string
            response.set_cookie(self.cookie_name(request), self.token, path="/", httponly=True, samesite="Strict")
        response.headers["Referrer-Policy"] = "no-referrer"  # the page's URL holds the token
        response.headers["Cache-Control"] = "no-store"
        return response

    async def handle_download(self, request: web.Request) -> web.StreamResponse:
        self.guard(request)  # a file an app delivers is the app's output too
        return await super().handle_download(request)

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        self.guard(request)
        socket = web.WebSocketResponse(heartbeat=15)
        await socket.prepare(request)
        width = _number(request.query.get("width"), 80)
        height = _number(request.query.get("height"), 24)
        session = TabSession(self.command, write_bytes=socket.send_bytes, write_str=socket.send_str,
                             close=socket.close, download_manager=self.download_manager, debug=self.debug)
        self.sessions.add(session)
        _say(f"browser tab opened from {request.remote}; its app starts")
        try:
            await session.start(width, height)
            await self._process_messages(socket, session)
        finally:
            try:
                killed = await session.stop(self.stop_grace)
            finally:
                self.sessions.discard(session)
            if killed:
                _say(f"a closed tab's app did not stop in {self.stop_grace:g} s: killed it; {SAFE_AFTER_KILL}")
            _say(f"browser tab closed; its app ended with exit code {session.exit_code}")
        return socket

    # ---- start and stop --------------------------------------------------------------------------

    async def on_startup(self, app: web.Application) -> None:
        _say(f"serving the UI on http://{_url_host(self.host)}:{self.port}/?{TOKEN_PARAMETER}={self.token} "
             "(open this URL; Ctrl-C stops)")
        if not self.local_only:
            _say(f"WARNING: listening on {self.host}: anyone who can reach this port and sees the URL can watch and "
                 "drive the run (plain HTTP: the token crosses the network unencrypted); prefer 127.0.0.1 and an "
                 "SSH tunnel")

    async def on_shutdown(self, app: web.Application) -> None:
        """Ask every tab's app to stop; each page shows it saving, then ends; the server waits for them all."""
        running = [session for session in self.sessions if session.running]
        if running:
            _say(f"stopping the apps of {len(running)} browser tab(s): each one saves its checkpoint (another "
                 f"Ctrl-C, or {self.stop_grace:g} s without them ending, kills them)")
        for session in running:
            session.ask_to_stop()

    def kill_tabs(self, why: str) -> int:
        """SIGKILL to every tab's app still running; says how many, and `why`. Returns how many."""
        killed = sum(session.kill() for session in list(self.sessions))
        if killed:
            _say(f"killed {killed} tab app{'s' if killed != 1 else ''} {why}; {SAFE_AFTER_KILL}")
        return killed

    def _on_signal(self, signum: int) -> None:
        if self.stop_signal is None:  # the first: graceful; the apps get until the grace's end
            self.stop_signal = signum
            self._kill_timer = asyncio.get_running_loop().call_later(
                self.stop_grace, self.kill_tabs, f"that did not stop in {self.stop_grace:g} s")
            raise GracefulExit()
        # Another one while the apps stop: the user will not wait.
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        self.kill_tabs(f"still stopping at a second {signal.Signals(signum).name}")

    def run(self) -> int:
        """Serve until a signal; returns the exit code (128 + the signal, as any run stopped by one)."""
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            web.run_app(self._make_app(), host=self.host, port=self.port, handle_signals=False, loop=loop,
                        print=None, shutdown_timeout=600, access_log=None)  # no log line holds a URL's token
        except OSError as exc:
            _say(f"cannot listen on {self.host} port {self.port}: {exc.strerror or exc}"
                 + (" (another program uses it: give another --port)" if exc.errno == errno.EADDRINUSE else ""))
            return EXIT_USAGE
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)
            loop.close()
        return EXIT_OK if self.stop_signal is None else EXIT_SIGNAL_BASE + self.stop_signal


def _number(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _say(text: str) -> None:
    print(f"gembatch-tui --serve: {text}", file=sys.stderr, flush=True)


def serve(settings: Settings, words: Sequence[str]) -> int:
    """`--serve`: serve the app of `words` (without the serve flags) to browsers until a signal."""
    child = tab_words(words)
    if not settings.demo:
        return TabServer(tab_command(child), settings.serve.host, settings.serve.port).run()
    from gembatch.core.demo import DEMO_KEY, DemoScenario, demo_settings

    scenario = DemoScenario()
    base_url = scenario.start()
    try:
        demo = demo_settings(settings, base_url, scenario.workload)
        assert demo.input_dir is not None and demo.output_dir is not None and demo.checkpoint is not None
        _say(f"demo: emulator at {base_url}; files in {demo.input_dir.parent}")
        # One demo for every tab: the tabs run the normal command on the demo's files and emulator.
        child = [word for word in child if word != "--demo"]
        child += ["--input", str(demo.input_dir), "--output", str(demo.output_dir), "--checkpoint",
                  str(demo.checkpoint), "--base-url", base_url, "--poll-interval", repr(demo.poll_interval)]
        os.environ.pop("GOOGLE_API_KEY", None)  # it would win over the demo's key in the tabs' apps
        os.environ["GEMINI_API_KEY"] = DEMO_KEY
        return TabServer(tab_command(child), settings.serve.host, settings.serve.port).run()
    finally:
        scenario.stop()
