"""`--serve`, `--host`, `--port`: parsing, the [serve] config table, checks, and what each browser tab runs."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from gembatch.core.cli_args import build_parser, resolve_settings
from gembatch.core.config import ConfigError
from gembatch.tui import launch
from gembatch.tui.serve import is_loopback, tab_command, tab_words


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the developer's own config file out of the tests."""
    monkeypatch.delenv("GEMBATCH_CONFIG", raising=False)
    monkeypatch.setattr(
        "gembatch.core.config.platformdirs.user_config_dir", lambda app: str(tmp_path / "no-user-config")
    )


def error_of(argv: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        resolve_settings(argv)
    return str(info.value)


def test_serve_defaults_to_localhost_port_8000() -> None:
    s = resolve_settings(["--serve", "--demo"])
    assert s.serve.on and s.demo
    assert (s.serve.host, s.serve.port) == ("127.0.0.1", 8000)


def test_without_serve_the_flag_is_off() -> None:
    assert not resolve_settings(["--demo"]).serve.on


def test_host_and_port_flags() -> None:
    s = resolve_settings(["--serve", "--demo", "--host", "0.0.0.0", "--port", "9123"])
    assert (s.serve.host, s.serve.port) == ("0.0.0.0", 9123)


def test_ipv6_host_is_accepted() -> None:
    assert resolve_settings(["--serve", "--demo", "--host", "::1"]).serve.host == "::1"


def test_config_table_and_flag_over_it(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[serve]\nhost = "localhost"\nport = 8111\n', encoding="utf-8")
    s = resolve_settings(["--config", str(config), "--serve", "--demo"])
    assert (s.serve.host, s.serve.port) == ("localhost", 8111)
    s = resolve_settings(["--config", str(config), "--serve", "--demo", "--port", "8222"])
    assert (s.serve.host, s.serve.port) == ("localhost", 8222)


@pytest.mark.parametrize(("port", "expected"), [
    ("0", "--port: must be at least 1, got 0"),
    ("65536", "--port: must be at most 65535, got 65536"),
    ("-5", "--port: must be at least 1, got -5"),
])
def test_port_out_of_range(port: str, expected: str) -> None:
    assert error_of(["--serve", "--demo", "--port", port]) == expected


def test_port_not_a_number(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        resolve_settings(["--serve", "--demo", "--port", "eighty"])
    assert info.value.code == 2
    assert "argument --port: invalid int value: 'eighty'" in capsys.readouterr().err


def test_config_port_out_of_range_names_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('model = "m"\n\n[serve]\nport = 70000\n', encoding="utf-8")
    assert error_of(["--config", str(config), "--serve", "--demo"]) == (
        f"{config}:4: serve.port: must be at most 65535, got 70000")


@pytest.mark.parametrize("host", ["http://0.0.0.0", "0.0.0.0:8000", "local host", "box/ui"])
def test_host_that_is_not_a_host(host: str) -> None:
    message = error_of(["--serve", "--demo", "--host", host])
    assert message.startswith("--host: expected a host name or address such as 127.0.0.1")
    assert repr(host) in message


def test_config_host_that_is_not_a_host_names_the_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('model = "m"\n\n[serve]\nport = 8001\nhost = "http://box"\n', encoding="utf-8")
    assert error_of(["--config", str(config), "--serve", "--demo"]).startswith(f"{config}:5: serve.host: expected")


@pytest.mark.parametrize("flag", [["--host", "0.0.0.0"], ["--port", "9000"]])
def test_host_or_port_without_serve(flag: list[str]) -> None:
    assert error_of(["--demo", *flag]) == (
        f"{flag[0]} goes with --serve (serve the UI to a web browser); add --serve or leave it out")


def test_serve_is_not_headless() -> None:
    assert "does not go with --headless" in error_of(["--serve", "--demo", "--headless"])


def test_serve_still_checks_the_run_flags(tmp_path: Path) -> None:
    assert error_of(["--serve", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]).endswith(
        f"folder not found: {tmp_path / 'nope'}")


def test_help_explains_the_flags() -> None:
    text = build_parser().format_help()
    assert "watch from a browser" in text
    for flag in ("--serve", "--host HOST", "--port N"):
        assert flag in text


# ---- what each browser tab runs ----------------------------------------------------------------------


def test_tab_words_drop_the_serve_flags_only() -> None:
    words = ["--serve", "--demo", "--host", "0.0.0.0", "--port=9000", "--host=x", "--port", "8001",
             "--input", "in dir", "--no-mouse"]
    assert tab_words(words) == ["--demo", "--input", "in dir", "--no-mouse"]


def test_tab_command_runs_this_python_on_the_app() -> None:
    command = tab_command(["--input", "a folder", "--read-only"])
    assert command.startswith("exec ")
    assert shlex.split(command.removeprefix("exec ")) == [
        sys.executable, "-m", "gembatch.tui", "--input", "a folder", "--read-only"]


@pytest.mark.parametrize(("host", "local"), [
    ("127.0.0.1", True), ("127.8.0.1", True), ("localhost", True), ("LOCALHOST", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("box.example.org", False),
])
def test_is_loopback(host: str, local: bool) -> None:
    assert is_loopback(host) is local


# ---- the dispatch in `main` -----------------------------------------------------------------------------


def test_main_hands_serve_the_settings_and_words(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[object, list[str]]] = []
    monkeypatch.setattr("gembatch.tui.serve.serve", lambda settings, words: seen.append((settings, words)) or 130)
    assert launch.main(["--serve", "--demo", "--port", "9001"]) == 130
    settings, words = seen[0]
    assert words == ["--serve", "--demo", "--port", "9001"]
    assert settings.serve.port == 9001  # type: ignore[attr-defined]


def test_serve_without_a_key_is_refused_up_front(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setattr("gembatch.tui.serve.serve", lambda settings, words: pytest.fail("served without a key"))
    (tmp_path / "in").mkdir()
    code = launch.main(["--serve", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")])
    assert code == 2
    assert "GEMINI_API_KEY" in capsys.readouterr().err


def test_serve_read_only_needs_no_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setattr("gembatch.tui.serve.serve", lambda settings, words: 0)
    (tmp_path / "in").mkdir()
    assert launch.main(["--serve", "--read-only", "--input", str(tmp_path / "in"), "--output",
                        str(tmp_path / "out")]) == 0


def test_serve_true_in_the_config_file_points_at_the_flag(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('model = "m"\nserve = true\n', encoding="utf-8")
    assert error_of(["--config", str(config), "--demo"]) == (
        f"{config}:2: serve: serving the UI to a browser is the command-line flag --serve; the [serve] table "
        "sets its host and port")
