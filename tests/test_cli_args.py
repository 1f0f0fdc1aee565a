"""The command-line contract: flags, overrides of the config file, checks, and the --help text."""

from __future__ import annotations

from pathlib import Path

import pytest
from gembatch.core.cli_args import build_parser, resolve_settings
from gembatch.core.config import ConfigError


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the developer's own config file out of the tests."""
    monkeypatch.delenv("GEMBATCH_CONFIG", raising=False)
    monkeypatch.setattr(
        "gembatch.core.config.platformdirs.user_config_dir", lambda app: str(tmp_path / "no-user-config")
    )


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    inp = tmp_path / "in"
    inp.mkdir()
    return inp, tmp_path / "out"


def error_of(argv: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        resolve_settings(argv)
    return str(info.value)


def test_minimal_run(dirs: tuple[Path, Path]) -> None:
    inp, out = dirs
    s = resolve_settings(["--input", str(inp), "--output", str(out)])
    assert s.input_dir == inp and s.output_dir == out
    assert s.checkpoint_path() == out / "gembatch.checkpoint.json"
    assert not (s.headless or s.demo or s.no_mouse or s.read_only)
    assert s.config_path is None
    assert not out.exists()  # created later, by the engine


def test_every_flag(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    inp, out = dirs
    s = resolve_settings(
        [
            "--headless", "--no-mouse", "--read-only",
            "--input", str(inp), "--output", str(out),
            "--checkpoint", str(tmp_path / "state.toml"),
            "--model", "gemini-2.5-pro",
            "--base-url", "http://127.0.0.1:1234",
            "--poll-interval", "0.5",
            "--max-attempts", "4",
            "--max-concurrent-jobs", "9",
            "--token-budget", "5000",
            "--creates-per-minute", "6",
            "--upload-concurrency", "2",
        ]
    )  # fmt: skip
    assert s.headless and s.no_mouse and s.read_only and not s.demo
    assert s.checkpoint_path() == tmp_path / "state.toml"
    assert (s.model, s.base_url, s.poll_interval, s.max_attempts) == (
        "gemini-2.5-pro",
        "http://127.0.0.1:1234",
        0.5,
        4,
    )
    assert (s.admission.max_concurrent_jobs, s.admission.token_budget, s.admission.creates_per_minute) == (9, 5000, 6)
    assert s.transfer.upload_concurrency == 2


def test_zero_budget_flag_means_learn(dirs: tuple[Path, Path]) -> None:
    inp, out = dirs
    s = resolve_settings(["--input", str(inp), "--output", str(out), "--token-budget", "0"])
    assert s.admission.token_budget is None


def test_flags_override_the_file(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    inp, _ = dirs
    other = tmp_path / "other-in"
    other.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(
        'input = "other-in"\noutput = "out"\nmodel = "from-file"\npoll_interval = 7\n'
        "[admission]\nmax_concurrent_jobs = 3\ncreates_per_minute = 4\n"
    )
    s = resolve_settings(["--config", str(config), "--input", str(inp), "--poll-interval", "2",
                          "--max-concurrent-jobs", "11"])  # fmt: skip
    assert s.config_path == config
    assert s.input_dir == inp  # flag wins
    assert s.output_dir == tmp_path / "out"  # from the file, relative to its folder
    assert s.model == "from-file"
    assert s.poll_interval == 2.0
    assert s.admission.max_concurrent_jobs == 11
    assert s.admission.creates_per_minute == 4


def test_config_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    inp, out = dirs
    config = tmp_path / "env.toml"
    config.write_text('model = "env-model"\n')
    monkeypatch.setenv("GEMBATCH_CONFIG", str(config))
    s = resolve_settings(["--input", str(inp), "--output", str(out)])
    assert s.model == "env-model" and s.config_path == config


def test_explicit_config_missing(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    inp, out = dirs
    message = error_of(["--config", str(tmp_path / "missing.toml"), "--input", str(inp), "--output", str(out)])
    assert "missing.toml" in message and "not found" in message


def test_bad_config_file_names_file_and_key(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    inp, out = dirs
    config = tmp_path / "config.toml"
    config.write_text("[transfer]\nupload_concurency = 3\n")
    message = error_of(["--config", str(config), "--input", str(inp), "--output", str(out)])
    assert f"{config}:2: transfer.upload_concurency: unknown key" in message


def test_input_required(tmp_path: Path) -> None:
    message = error_of(["--output", str(tmp_path / "out")])
    assert "--input" in message and "no input folder" in message


def test_input_must_exist(tmp_path: Path) -> None:
    message = error_of(["--input", str(tmp_path / "nope"), "--output", str(tmp_path / "out")])
    assert message.startswith("--input: folder not found:") and "nope" in message


def test_input_must_be_a_folder(tmp_path: Path) -> None:
    file = tmp_path / "file.jsonl"
    file.write_text("{}\n")
    message = error_of(["--input", str(file), "--output", str(tmp_path / "out")])
    assert message.startswith("--input: is not a folder:")


def test_input_from_file_missing_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('input = "gone"\noutput = "out"\n')
    message = error_of(["--config", str(config)])
    assert message.startswith(f"{config}: input: folder not found:")


def test_output_required(dirs: tuple[Path, Path]) -> None:
    inp, _ = dirs
    message = error_of(["--input", str(inp)])
    assert "--output" in message and "no output folder" in message


def test_output_that_is_a_file(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    inp, _ = dirs
    file = tmp_path / "taken"
    file.write_text("")
    assert error_of(["--input", str(inp), "--output", str(file)]).startswith("--output: is not a folder")


@pytest.mark.parametrize("name", ["state.yaml", "state", "state.JSON"])
def test_checkpoint_extension(dirs: tuple[Path, Path], tmp_path: Path, name: str) -> None:
    inp, out = dirs
    message = error_of(["--input", str(inp), "--output", str(out), "--checkpoint", str(tmp_path / name)])
    assert message.startswith("--checkpoint: the checkpoint file must end in .json or .toml")


def test_checkpoint_extension_from_file(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    inp, out = dirs
    config = tmp_path / "config.toml"
    config.write_text('checkpoint = "state.txt"\n')
    message = error_of(["--config", str(config), "--input", str(inp), "--output", str(out)])
    assert message.startswith(f"{config}: checkpoint: the checkpoint file must end in .json or .toml")


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan"])
def test_poll_interval_must_be_positive(dirs: tuple[Path, Path], value: str) -> None:
    inp, out = dirs
    message = error_of(["--input", str(inp), "--output", str(out), f"--poll-interval={value}"])
    assert message.startswith("--poll-interval: must be")


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--max-attempts", "0", "--max-attempts: must be at least 1, got 0"),
        ("--max-concurrent-jobs", "0", "--max-concurrent-jobs: must be at least 1"),
        ("--token-budget", "-1", "--token-budget: must be at least 0"),
        ("--creates-per-minute", "-2", "--creates-per-minute: must be at least 0"),
        ("--upload-concurrency", "0", "--upload-concurrency: must be at least 1"),
        ("--base-url", "ftp://x", "--base-url: expected an http:// or https:// URL"),
        ("--model", " ", "--model: must not be empty"),
    ],
)
def test_bad_flag_values(dirs: tuple[Path, Path], flag: str, value: str, expected: str) -> None:
    inp, out = dirs
    assert error_of(["--input", str(inp), "--output", str(out), f"{flag}={value}"]).startswith(expected)


def test_demo_needs_no_folders() -> None:
    s = resolve_settings(["--demo", "--headless"])
    assert s.demo and s.headless
    assert s.input_dir is None and s.output_dir is None and s.checkpoint is None


def test_demo_still_checks_the_checkpoint_extension(tmp_path: Path) -> None:
    assert "checkpoint" in error_of(["--demo", "--checkpoint", str(tmp_path / "x.txt")])


@pytest.mark.parametrize("argv", [["--poll-interval", "fast"], ["--max-attempts", "2.5"], ["--bogus"], ["--inp", "x"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        resolve_settings(argv)
    assert info.value.code == 2
    assert "usage: gembatch-tui" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        resolve_settings(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("gembatch-tui ")


def test_help_text() -> None:
    text = " ".join(build_parser().format_help().split())  # undo line wrapping
    for flag in [
        "--config", "--headless", "--demo", "--input", "--output", "--checkpoint", "--model", "--base-url",
        "--poll-interval", "--max-attempts", "--max-concurrent-jobs", "--token-budget", "--creates-per-minute",
        "--upload-concurrency", "--no-mouse", "--read-only", "--version",
    ]:  # fmt: skip
        assert flag in text, flag
    assert "GEMINI_API_KEY" in text and "GOOGLE_API_KEY" in text
    for code in ["0 every input file", "3 the run finished", "2 usage or configuration error", "130", "143"]:
        assert code in text, code
    assert "SIGINT" in text and "SIGTERM" in text


def test_every_flag_has_help() -> None:
    for action in build_parser()._actions:
        assert action.help, action.option_strings


def test_trace_flag_sets_the_file_and_a_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    base = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    settings = resolve_settings([*base, "--trace", str(tmp_path / "t" / "trace.jsonl")])
    assert settings.trace == tmp_path / "t" / "trace.jsonl"
    with pytest.raises(ConfigError, match="is a folder"):
        resolve_settings([*base, "--trace", str(tmp_path)])


def test_a_base_url_with_the_api_version_or_a_bad_port_is_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    base = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    with pytest.raises(ConfigError, match=r"use 'http://127\.0\.0\.1:8765' instead"):
        resolve_settings([*base, "--base-url", "http://127.0.0.1:8765/v1beta"])
    with pytest.raises(ConfigError, match="port"):
        resolve_settings([*base, "--base-url", "http://127.0.0.1:99999"])
    assert resolve_settings([*base, "--base-url", "https://gw.example/v1/acct/google-ai-studio"]).base_url
