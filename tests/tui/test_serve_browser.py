"""End to end: `gembatch-tui --serve --demo` in a subprocess, its page opened in a real headless Chromium.

The page draws the terminal with xterm.js on a canvas, so the text is read from xterm's own buffer: an init
script catches the Terminal object when the page's script stores it (`this.terminal = new Terminal(...)`).
Chromium is Debian's /usr/bin/chromium (`.ci/run` installs it); without it this test fails, never skips.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("GEMBATCH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STAGES = ("validated", "uploading", "uploaded", "pending", "running", "succeeded", "downloading", "done")

# Catch the page's xterm Terminal when its owner assigns `this.terminal`, and keep it on `window`.
CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, 'terminal', {
  configurable: true,
  set(value) {
    Object.defineProperty(this, 'terminal', {value, writable: true, configurable: true, enumerable: true});
    window.__gembatchTerminal = value;
  },
});
"""
READ_SCREEN = """() => {
  const term = window.__gembatchTerminal;
  if (!term) return '';
  const buffer = term.buffer.active, rows = [];
  for (let y = 0; y < term.rows; y++) {
    const line = buffer.getLine(buffer.viewportY + y);
    rows.push(line ? line.translateToString(true) : '');
  }
  return rows.join('\\n');
}"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Served:
    """The `--serve --demo` process and its stderr."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.folder = tmp_path
        self.err_path = tmp_path / "serve.err"
        with self.err_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gembatch.tui", "--serve", "--demo", "--port", str(self.port),
                 "--output", str(tmp_path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    @property
    def token(self) -> str:
        """The token of the URL the server printed."""
        found = re.search(rf"http://127\.0\.0\.1:{self.port}/\?token=([A-Za-z0-9_-]+) ", self.stderr)
        return found.group(1) if found else ""

    def wait_listening(self, timeout: float = 30.0) -> bool:
        """True once it listens; False when another process took the port first (free_port is only a guess)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if self.process.returncode == 2 and "another program uses it" in self.stderr:
                    return False
                pytest.fail(f"--serve exited with {self.process.returncode}:\n{self.stderr}")
            with contextlib.suppress(OSError):  # not listening yet, or another program's port that does not answer
                status, body = self.get(f"/?token={self.token}", {"Host": f"127.0.0.1:{self.port}"}, timeout=2)
                if status == 200 and "textual-terminal" in body:  # this server's page, not a program on its port
                    return True
            time.sleep(0.1)
        pytest.fail(f"--serve did not listen on port {self.port} within {timeout:g} s:\n{self.stderr}")

    def get(self, path: str, headers: dict[str, str], timeout: float = 10) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8", errors="replace")
        finally:
            connection.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    for _ in range(3):  # tests in other processes open ports too: a port free a moment ago may be taken
        server = Served(tmp_path)
        try:
            if server.wait_listening():
                yield server
                return
        finally:
            server.stop()
    pytest.fail(f"--serve found no free port in 3 tries:\n{server.stderr}")


def screen_with(page: object, words: tuple[str, ...], timeout: float = 20.0) -> str:
    """The page's terminal text once it holds every one of `words`."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = page.evaluate(READ_SCREEN)  # type: ignore[attr-defined]
        if all(word in text for word in words):
            return text
        time.sleep(0.25)
    pytest.fail(f"the page never showed {words}; it shows:\n{text}")


@pytest.mark.browser
def test_page_shows_the_grid_and_a_second_tab_watches(served: Served) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            stranger = browser.new_page()  # another browser profile, without the URL's token
            refused = stranger.goto(f"http://127.0.0.1:{served.port}/")
            assert refused is not None and refused.status == 403
            assert "open the URL with ?token=" in stranger.content()

            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.add_init_script(CATCH_TERMINAL)
            first = context.new_page()
            first.goto(f"http://127.0.0.1:{served.port}/?token={served.token}")  # the URL the server printed
            text = screen_with(first, ("Batches", "qa_part_001", "RUNNING"))
            grid_row = next(line for line in text.splitlines() if "qa_part_001" in line)
            assert any(stage in grid_row for stage in STAGES), grid_row

            second = context.new_page()  # the same browser, without the token: its cookie lets it in
            second.goto(f"http://127.0.0.1:{served.port}/")
            screen_with(second, ("READ-ONLY", "WATCHING", "qa_part_001"))

            # Ctrl-C on the serving process with both tabs open: each app stops and saves, then exit 130.
            served.process.send_signal(signal.SIGINT)
            assert served.process.wait(30) == 130, served.stderr
        finally:
            browser.close()
    log = served.stderr
    assert log.count("browser tab opened") == 2, log
    assert log.count("its app ended with exit code 143") == 2, log  # both stopped as by SIGTERM
    run_folder = next(served.folder.glob("gembatch-demo-*"))
    assert (run_folder / "gembatch.checkpoint.json").is_file()
    assert not (run_folder / "gembatch.checkpoint.json.lock").exists()  # the engine's tab let go of the run
    # The token is printed once, in the URL, and written nowhere else (the run's log, checkpoint, journal).
    assert log.count(served.token) == 1, log
    written = [path for path in served.folder.rglob("*") if path.is_file() and path != served.err_path]
    assert any(path.name.endswith(".log") for path in written), written
    assert [path for path in written if served.token.encode() in path.read_bytes()] == []


def test_other_sites_and_names_and_requests_without_the_token_are_refused(served: Served) -> None:
    status, body = served.get(f"/?token={served.token}", {"Host": f"127.0.0.1:{served.port}"})
    assert status == 200 and "textual-terminal" in body
    status, body = served.get("/", {"Host": f"127.0.0.1:{served.port}"})
    assert status == 403
    assert "this page needs its token: open the URL with ?token= that `gembatch-tui --serve` printed" in body
    status, body = served.get("/ws", {"Host": f"127.0.0.1:{served.port}", "Connection": "Upgrade",
                                      "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert status == 403 and "this page needs its token" in body
    status, body = served.get(f"/?token={served.token}", {"Host": f"attacker.example:{served.port}"})
    assert status == 403
    assert "answers only to localhost, not to 'attacker.example'" in body
    status, body = served.get(f"/ws?token={served.token}", {
        "Host": f"127.0.0.1:{served.port}", "Origin": "http://attacker.example", "Connection": "Upgrade",
        "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert status == 403
    assert "a page of http://attacker.example may not open this app" in body
    assert "browser tab opened" not in served.stderr  # no app was started for it


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "gembatch.tui", "--serve", "--demo", "--port", str(port), "--output",
             str(tmp_path)], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1 port {port}" in result.stderr
    assert "give another --port" in result.stderr


def test_an_open_host_warns_and_sigterm_stops_with_143(tmp_path: Path) -> None:
    port = free_port()
    err_path = tmp_path / "serve.err"
    with err_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "gembatch.tui", "--serve", "--demo", "--host", "0.0.0.0", "--port", str(port),
             "--output", str(tmp_path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while "serving the UI" not in err_path.read_text() and process.poll() is None:
            assert time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 143
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    log = err_path.read_text()
    assert re.search(rf"serving the UI on http://0\.0\.0\.0:{port}/\?token=[A-Za-z0-9_-]{{40,}} ", log), log
    assert "WARNING: listening on 0.0.0.0: anyone who can reach this port and sees the URL can watch and drive" in log
