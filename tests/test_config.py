"""Settings from TOML: defaults, values, relative paths, and errors that name the file, key and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from gembatch.core.config import (
    AdmissionSettings,
    ConfigError,
    RecoverySettings,
    Settings,
    TransferSettings,
    default_config_path,
    load_settings,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return str(info.value)


def test_no_file_gives_defaults() -> None:
    settings = load_settings(None)
    assert settings == Settings()
    assert settings.model == "gemini-2.5-flash"
    assert settings.poll_interval == 30.0
    assert settings.max_attempts == 3
    assert settings.tokens_per_byte == 0.25
    assert settings.admission == AdmissionSettings(100, None, None, 60.0, 900.0)
    assert settings.transfer == TransferSettings(
        upload_concurrency=4, upload_ahead=16, download_concurrency=4, request_timeout=120.0,
        upload_expiry_margin=3600.0, max_retries=6, retry_max_wait=120.0,
    )
    assert settings.recovery == RecoverySettings(ambiguous_grace=60.0, stuck_after_hours=24.0, stuck_action="wait")
    assert settings.config_path is None


def test_example_config_loads_and_holds_the_defaults() -> None:
    settings = load_settings(EXAMPLE)
    assert settings.config_path == EXAMPLE
    settings.config_path = None
    assert settings == Settings()


def test_example_config_mentions_every_key() -> None:
    from gembatch.core.config import known_keys

    text = EXAMPLE.read_text(encoding="utf-8")
    for key in known_keys():
        assert f"{key.rpartition('.')[2]} = " in text, key


def test_values_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
model = "gemini-2.5-pro"
base_url = "http://127.0.0.1:9999/"
poll_interval = 5
max_attempts = 5
tokens_per_byte = 0.5

[admission]
max_concurrent_jobs = 7
token_budget = 1_000_000
creates_per_minute = 12
cool_down_seconds = 10
cool_down_max_seconds = 20.5

[transfer]
upload_concurrency = 2
download_concurrency = 3
request_timeout = 30
upload_expiry_margin = 0
max_retries = 0
retry_max_wait = 9

[recovery]
ambiguous_grace = 0
""",
    )
    s = load_settings(path)
    assert (s.model, s.base_url, s.max_attempts) == ("gemini-2.5-pro", "http://127.0.0.1:9999/", 5)
    assert s.poll_interval == 5.0 and isinstance(s.poll_interval, float)
    assert s.tokens_per_byte == 0.5
    assert s.admission == AdmissionSettings(7, 1_000_000, 12, 10.0, 20.5)
    assert s.transfer == TransferSettings(
        upload_concurrency=2, download_concurrency=3, request_timeout=30.0, upload_expiry_margin=0.0,
        max_retries=0, retry_max_wait=9.0,
    )
    assert s.recovery.ambiguous_grace == 0.0
    assert s.config_path == path


def test_zero_budget_and_rate_mean_unset(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "[admission]\ntoken_budget = 0\ncreates_per_minute = 0\n"))
    assert s.admission.token_budget is None
    assert s.admission.creates_per_minute is None


def test_paths_are_relative_to_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    path = write(folder, 'input = "in"\noutput = "../out"\ncheckpoint = "/abs/state.toml"\n')
    s = load_settings(path)
    assert s.input_dir == folder / "in"
    assert s.output_dir == folder / ".." / "out"
    assert s.checkpoint == Path("/abs/state.toml")


def test_checkpoint_path_default_and_explicit(tmp_path: Path) -> None:
    assert Settings(output_dir=tmp_path).checkpoint_path() == tmp_path / "gembatch.checkpoint.json"
    assert Settings(output_dir=tmp_path, checkpoint=tmp_path / "x.toml").checkpoint_path() == tmp_path / "x.toml"
    with pytest.raises(ValueError):
        Settings().checkpoint_path()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('poll_interval = "fast"', "config.toml:1: poll_interval: expected a number, got string 'fast'"),
        ("max_attempts = 2.5", "config.toml:1: max_attempts: expected an integer, got float 2.5"),
        ("max_attempts = true", "max_attempts: expected an integer, got boolean true"),
        ("model = 3", "model: expected a string, got integer 3"),
        ("input = 3", "input: expected a path string, got integer 3"),
        ('model = ""', "model: must not be empty"),
        ("admission = 3", "config.toml:1: admission: expected a table, got integer 3"),
        ("[transfer]\nupload_concurrency = [1]", "config.toml:2: transfer.upload_concurrency: expected an integer"),
    ],
)
def test_wrong_type(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(write(tmp_path, text + "\n"))
    assert expected in message
    assert str(tmp_path / "config.toml") in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("poll_interval = 0", "poll_interval: must be greater than 0, got 0"),
        ("poll_interval = -1.5", "poll_interval: must be greater than 0, got -1.5"),
        ("poll_interval = inf", "poll_interval: must be a finite number"),
        ("max_attempts = 0", "max_attempts: must be at least 1, got 0"),
        ("tokens_per_byte = 0", "tokens_per_byte: must be greater than 0"),
        ("[admission]\nmax_concurrent_jobs = 0", "config.toml:2: admission.max_concurrent_jobs: must be at least 1"),
        ("[admission]\ntoken_budget = -5", "admission.token_budget: must be at least 0, got -5"),
        ("[admission]\ncreates_per_minute = -1", "admission.creates_per_minute: must be at least 0"),
        ("[admission]\ncool_down_seconds = 0", "admission.cool_down_seconds: must be greater than 0"),
        (
            "[admission]\ncool_down_seconds = 100\ncool_down_max_seconds = 50",
            "admission.cool_down_max_seconds: must be at least cool_down_seconds (100), got 50",
        ),
        ("[transfer]\nrequest_timeout = 0", "transfer.request_timeout: must be greater than 0"),
        ("[transfer]\nmax_retries = -1", "transfer.max_retries: must be at least 0"),
        ("[transfer]\nupload_expiry_margin = -1", "transfer.upload_expiry_margin: must be at least 0"),
        ("[recovery]\nambiguous_grace = -1", "recovery.ambiguous_grace: must be at least 0"),
        ('base_url = "localhost:8080"', "base_url: expected an http:// or https:// URL"),
    ],
)
def test_bad_value(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(write(tmp_path, text + "\n"))
    assert expected in message
    assert str(tmp_path / "config.toml") in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "poll_intervall = 3",
            "config.toml:1: poll_intervall: unknown key at the top level; did you mean 'poll_interval'?",
        ),
        (
            "[admission]\nmax_concurent_jobs = 3",
            "config.toml:2: admission.max_concurent_jobs: unknown key in [admission]; "
            "did you mean 'max_concurrent_jobs'?",
        ),
        ("upload_concurrency = 3", "did you mean 'upload_concurrency' in [transfer]?"),
        ("[transfer]\npoll_interval = 3", "did you mean 'poll_interval' at the top level?"),
        ("[admision]\nx = 1", "config.toml:1: admision: unknown key at the top level; did you mean 'admission'?"),
        ("zzz = 1", "zzz: unknown key at the top level"),
        ("headless = true", "headless is a command-line flag only (--headless)"),
    ],
)
def test_unknown_key(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(write(tmp_path, text + "\n"))
    assert expected in message
    assert str(tmp_path / "config.toml") in message


@pytest.mark.parametrize("key", ["api_key", "GEMINI_API_KEY", "key", "apiKey"])
def test_api_key_is_refused_without_echoing_it(tmp_path: Path, key: str) -> None:
    message = error_of(write(tmp_path, f'model = "m"\n{key} = "AIza-secret-value"\n'))
    assert f"config.toml:2: {key}:" in message
    assert "GEMINI_API_KEY" in message and "environment variable" in message
    assert "AIza-secret-value" not in message


def test_api_key_in_a_table_is_refused(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, '[transfer]\napi_key = "s3cret"\n'))
    assert "transfer.api_key" in message and "environment variable" in message
    assert "s3cret" not in message


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, 'model = "m"\n\npoll_interval = \n'))
    assert str(tmp_path / "config.toml") in message
    assert "invalid TOML" in message and "line 3" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'model = "m"\nmodel2 = "\xff"\n')
    assert "config.toml:2: config file is not valid UTF-8" in error_of(path)


def test_missing_file(tmp_path: Path) -> None:
    message = error_of(tmp_path / "nope.toml")
    assert str(tmp_path / "nope.toml") in message and "not found" in message


def test_directory_as_file(tmp_path: Path) -> None:
    assert "is a directory" in error_of(tmp_path)


def test_default_config_path_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GEMBATCH_CONFIG", str(tmp_path / "c.toml"))
    assert default_config_path() == tmp_path / "c.toml"  # returned even if missing: loading then says so


def test_default_config_path_user_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import gembatch.core.config as config

    monkeypatch.delenv("GEMBATCH_CONFIG", raising=False)
    monkeypatch.setattr(config.platformdirs, "user_config_dir", lambda app: str(tmp_path / app))
    assert default_config_path() is None
    (tmp_path / "gembatch-tui").mkdir()
    (tmp_path / "gembatch-tui" / "config.toml").write_text("")
    assert default_config_path() == tmp_path / "gembatch-tui" / "config.toml"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""))
    settings.config_path = None
    assert settings == Settings()
