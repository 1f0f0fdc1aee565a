"""Typed settings: defaults, overridden by a TOML file, overridden in turn by command-line flags."""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlparse

import platformdirs

APP_NAME = "gembatch-tui"
CONFIG_ENV = "GEMBATCH_CONFIG"
DEFAULT_CHECKPOINT_NAME = "gembatch.checkpoint.json"


@dataclass
class AdmissionSettings:
    """Limits on when the next batch job may be created."""

    max_concurrent_jobs: int = 100
    token_budget: int | None = None  # None: learn it from 429s
    creates_per_minute: int | None = None  # None: no limit of ours
    cool_down_seconds: float = 60.0  # first cool-down after a 429 that carries no RetryInfo
    cool_down_max_seconds: float = 900.0  # cap of the doubling cool-down
    probe_after_seconds: float = 900.0  # a sure learned limit is tried one create higher after this long quiet
    create_concurrency: int = 4  # creates in flight at once when admission has room for several (1: one by one)


@dataclass
class TransferSettings:
    """Concurrency, timeouts and retries of uploads, downloads and other API calls."""

    upload_concurrency: int = 4
    upload_ahead: int = 16  # files uploaded but not yet created, at most (they expire after 48 h)
    download_concurrency: int = 4
    request_timeout: float = 120.0  # seconds, per API call
    upload_expiry_margin: float = 3600.0  # re-upload a file whose upload expires in less than this
    max_retries: int = 6  # for safe-to-repeat calls (get, list, download, upload)
    retry_max_wait: float = 120.0
    upload_processing_timeout: float = 3600.0  # an upload still PROCESSING after this long is uploaded again
    storage_cap_bytes: int = 20 * 1024**3  # the project's file storage (Google: 20 GB); uploads wait below it
    delete_uploads_after_download: bool = True  # delete a job's input upload once its results are saved
    delete_results_after_download: bool = False  # delete its result file on the server too


@dataclass
class RecoverySettings:
    """How ambiguous creates are settled."""

    ambiguous_grace: float = 60.0  # how long an ambiguous create may take to appear before we create again
    result_gone_after: float = 900.0  # seconds a result file may answer 404 before it counts as gone
    stuck_after_hours: float | None = 24.0  # a job pending or running longer is flagged as stuck; None = never
    stuck_action: str = "wait"  # "wait" (flag only) or "resubmit" (cancel it and submit once more)


NOTICE_KINDS = ("finished", "failed", "upload_expiry_risk", "stuck")


@dataclass
class NotifySettings:
    """Who is told when something needs a person: the terminal's bell, desktop escapes, notification URLs."""

    on: list[str] = field(default_factory=lambda: list(NOTICE_KINDS))  # kinds sent to the desktop and URLs
    bell_on: list[str] = field(default_factory=lambda: ["finished"])  # kinds that ring the terminal's bell
    desktop: bool = False  # OSC 9 and OSC 777 desktop notifications through the terminal
    terminal: str = "auto"  # "auto": only when stdout or stderr is a terminal; "always"; "off"
    urls: list[str] = field(default_factory=list)  # apprise URLs (Slack, ntfy, e-mail, ...); may hold tokens


@dataclass
class ServeSettings:
    """Where `--serve` listens for web browsers: localhost by default (the page has no login)."""

    host: str = "127.0.0.1"
    port: int = 8000
    on: bool = False  # flag only: --serve


@dataclass(frozen=True)
class ModelPrice:
    """Interactive (standard) USD price per 1M tokens of one model; batch jobs cost half of it."""

    input_per_million: float
    output_per_million: float


@dataclass
class Settings:
    """Everything a run needs to know, except the API key (the SDK reads it from the environment)."""

    input_dir: Path | None = None
    output_dir: Path | None = None
    checkpoint: Path | None = None  # default when None: output_dir / "gembatch.checkpoint.json"
    model: str = "gemini-2.5-flash"
    base_url: str | None = None
    poll_interval: float = 30.0
    max_attempts: int = 3
    tokens_per_byte: float = 0.25  # token estimate of a request: ceil(bytes * this)
    cost_limit_usd: float | None = None  # refuse to start a run whose estimated batch cost is higher
    output_tokens_per_request: int = 1000  # assumed by cost estimates (thinking tokens count as output)
    prices: dict[str, ModelPrice] = field(default_factory=dict)  # [prices] overrides of the built-in table
    headless: bool = False
    demo: bool = False
    no_mouse: bool = False
    read_only: bool = False
    rebuild_from_server: bool = False  # flag only: make a new checkpoint from the server's lists
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    transfer: TransferSettings = field(default_factory=TransferSettings)
    recovery: RecoverySettings = field(default_factory=RecoverySettings)
    config_path: Path | None = None  # the file the settings came from, if any
    trace: Path | None = None  # write every API call of the run to this file as JSON lines (--trace)
    allow_duplicate_inputs: bool = False  # two input files with the same content are both submitted (else refused)
    input_moved: bool = False  # flag only: the checkpoint's input folder moved; accept the new one
    resubmit_changed: bool = False  # flag only: an input changed after its upload or job is submitted anew
    progress_interval: float = 60.0  # seconds between two headless progress lines
    request_check: str = "error"  # request lines the API would refuse: "error" rejects the file, "warn", "off"
    notify: NotifySettings = field(default_factory=NotifySettings)
    backend: str = "gemini"  # the batch service; core/compose.py lists the valid values
    serve: ServeSettings = field(default_factory=ServeSettings)
    job_kind: str = "auto"  # "generate", "embed" (embeddings batch jobs), or "auto": from each file's lines

    def checkpoint_path(self) -> Path:
        """The checkpoint file: the one set, else `gembatch.checkpoint.json` in the output folder."""
        if self.checkpoint is not None:
            return self.checkpoint
        if self.output_dir is None:
            raise ValueError("no checkpoint file and no output folder to put one in")
        return self.output_dir / DEFAULT_CHECKPOINT_NAME


class ConfigError(Exception):
    """A bad setting; the message names the file (or flag), the key, and the line when known."""


# --- the keys a config file may hold -------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    """How one TOML key is checked and where its value goes."""

    attr: str  # attribute on the settings object (or sub-object)
    kind: type  # int, float, bool, str or Path
    minimum: float | None = None
    exclusive: bool = False  # minimum itself is not allowed
    zero_is_none: bool = False  # 0 means "not set"
    url: bool = False
    choices: tuple[str, ...] = ()  # for strings (and items of lists of strings): the allowed values
    maximum: float | None = None  # for numbers: the largest allowed value


def _positive(attr: str) -> _Key:
    return _Key(attr, float, minimum=0, exclusive=True)


def _at_least_one(attr: str) -> _Key:
    return _Key(attr, int, minimum=1)


def _not_negative(attr: str, kind: type, zero_is_none: bool = False) -> _Key:
    return _Key(attr, kind, minimum=0, zero_is_none=zero_is_none)


_TOP_KEYS: dict[str, _Key] = {
    "input": _Key("input_dir", Path),
    "output": _Key("output_dir", Path),
    "checkpoint": _Key("checkpoint", Path),
    "model": _Key("model", str),
    "base_url": _Key("base_url", str, url=True),
    "poll_interval": _positive("poll_interval"),
    "max_attempts": _at_least_one("max_attempts"),
    "tokens_per_byte": _positive("tokens_per_byte"),
    "cost_limit_usd": _not_negative("cost_limit_usd", float, zero_is_none=True),
    "output_tokens_per_request": _not_negative("output_tokens_per_request", int),
    "trace": _Key("trace", Path),
    "allow_duplicate_inputs": _Key("allow_duplicate_inputs", bool),
    "progress_interval": _positive("progress_interval"),
    "request_check": _Key("request_check", str, choices=("error", "warn", "off")),
    "backend": _Key("backend", str),  # checked against core/compose.py's table when the backend is opened
    "job_kind": _Key("job_kind", str, choices=("auto", "generate", "embed")),
}

_TABLE_KEYS: dict[str, dict[str, _Key]] = {
    "admission": {
        "max_concurrent_jobs": _at_least_one("max_concurrent_jobs"),
        "token_budget": _not_negative("token_budget", int, zero_is_none=True),
        "creates_per_minute": _not_negative("creates_per_minute", int, zero_is_none=True),
        "cool_down_seconds": _positive("cool_down_seconds"),
        "cool_down_max_seconds": _positive("cool_down_max_seconds"),
        "probe_after_seconds": _positive("probe_after_seconds"),
        "create_concurrency": _at_least_one("create_concurrency"),
    },
    "transfer": {
        "upload_concurrency": _at_least_one("upload_concurrency"),
        "upload_ahead": _at_least_one("upload_ahead"),
        "download_concurrency": _at_least_one("download_concurrency"),
        "request_timeout": _positive("request_timeout"),
        "upload_expiry_margin": _not_negative("upload_expiry_margin", float),
        "max_retries": _not_negative("max_retries", int),
        "retry_max_wait": _positive("retry_max_wait"),
        "upload_processing_timeout": _positive("upload_processing_timeout"),
        "storage_cap_bytes": _at_least_one("storage_cap_bytes"),
        "delete_uploads_after_download": _Key("delete_uploads_after_download", bool),
        "delete_results_after_download": _Key("delete_results_after_download", bool),
    },
    "recovery": {
        "ambiguous_grace": _not_negative("ambiguous_grace", float),
        "result_gone_after": _not_negative("result_gone_after", float),
        "stuck_after_hours": _not_negative("stuck_after_hours", float, zero_is_none=True),
        "stuck_action": _Key("stuck_action", str, choices=("wait", "resubmit")),
    },
    "notify": {
        "on": _Key("on", list, choices=NOTICE_KINDS),
        "bell_on": _Key("bell_on", list, choices=NOTICE_KINDS),
        "desktop": _Key("desktop", bool),
        "terminal": _Key("terminal", str, choices=("auto", "always", "off")),
        "urls": _Key("urls", list),
    },
    "serve": {
        "host": _Key("host", str),
        "port": _Key("port", int, minimum=1, maximum=65535),
    },
}

PRICES_TABLE = "prices"  # model name -> ModelPrice; free-form keys, so not in _TABLE_KEYS

# Per-run switches: the file refuses them with a pointer to the flag rather than a bare "unknown key".
_FLAG_ONLY = {"headless", "demo", "no_mouse", "read_only", "config", "rebuild_from_server", "input_moved",
              "resubmit_changed"}

_SECRET_WORDS = ("api_key", "apikey", "secret", "password", "credential")


def _lookup(key: str) -> _Key:
    """The spec of a dotted key such as "poll_interval" or "admission.token_budget"."""
    table, _, name = key.rpartition(".")
    specs = _TABLE_KEYS[table] if table else _TOP_KEYS
    return specs[name]


def known_keys() -> list[str]:
    """Every key a config file may set, dotted for the tables ("admission.token_budget")."""
    keys = list(_TOP_KEYS)
    for table, specs in _TABLE_KEYS.items():
        keys.extend(f"{table}.{name}" for name in specs)
    return keys


# --- checking one value ----------------------------------------------------------------------------


def _describe(value: object) -> str:
    """A value as an error message shows it: its TOML type name and a short repr."""
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "boolean"),
        (int, "integer"),
        (float, "float"),
        (str, "string"),
        (list, "array"),
        (dict, "table"),
        (datetime, "date-time"),
        ((date, time), "date or time"),
    ]
    name = next((label for kind, label in kinds if isinstance(value, kind)), type(value).__name__)
    if isinstance(value, dict):
        return name
    text = str(value).lower() if isinstance(value, bool) else repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{name} {text}"


def range_problem(value: float, minimum: float, *, exclusive: bool = False) -> str | None:
    """Why a number is out of range, or None when it is fine."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if exclusive and value <= minimum:
        return f"must be greater than {minimum:g}, got {value:g}"
    if not exclusive and value < minimum:
        return f"must be at least {minimum:g}, got {value:g}"
    return None


def coerce_setting(key: str, value: object, base_dir: Path | None = None) -> Any:
    """Check a value for a dotted key and convert it; raises ValueError with the reason.

    Relative paths are taken from `base_dir` when given (the config file's folder).
    """
    spec = _lookup(key)
    if spec.kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_describe(value)}")
        return value
    if spec.kind in (int, float):
        return _coerce_number(spec, value)
    if spec.kind is list:
        return _coerce_strings(spec, value)
    if not isinstance(value, str):
        expected = "a path string" if spec.kind is Path else "a string"
        raise ValueError(f"expected {expected}, got {_describe(value)}")
    if not value.strip():
        raise ValueError("must not be empty")
    if spec.url:
        _check_url(value)
    if spec.choices and value not in spec.choices:
        raise ValueError(f"expected one of {', '.join(repr(c) for c in spec.choices)}, got {value!r}")
    if spec.kind is Path:
        path = Path(value).expanduser()
        return base_dir / path if base_dir is not None and not path.is_absolute() else path
    return value


def _coerce_strings(spec: _Key, value: object) -> list[str]:
    """An array of non-empty strings, each one of `spec.choices` when there are choices."""
    if not isinstance(value, list):
        raise ValueError(f"expected an array of strings, got {_describe(value)}")
    for number, item in enumerate(value, 1):
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"item {number}: expected a non-empty string, got {_describe(item)}")
        if spec.choices and item not in spec.choices:
            raise ValueError(f"item {number}: expected one of {', '.join(repr(c) for c in spec.choices)}, "
                             f"got {item!r}")
    return list(value)


def _coerce_number(spec: _Key, value: object) -> int | float | None:
    if spec.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"expected an integer, got {_describe(value)}")
    if spec.kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {_describe(value)}")
        value = float(value)
    assert isinstance(value, int | float)
    if spec.minimum is not None:
        problem = range_problem(value, spec.minimum, exclusive=spec.exclusive)
        if problem:
            raise ValueError(problem)
    if spec.maximum is not None and value > spec.maximum:
        raise ValueError(f"must be at most {spec.maximum:g}, got {value:g}")
    if spec.zero_is_none and value == 0:
        return None
    return value


API_VERSION = "v1beta"  # the Gemini API version the gateway speaks (the base URL must not carry it)


def _check_url(value: str) -> None:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    try:
        parsed.port  # noqa: B018 (raises ValueError for a port that is not a number in 0..65535)
    except ValueError:
        raise ValueError(f"the port in {value!r} is not a number from 1 to 65535") from None
    segments = [part for part in parsed.path.split("/") if part]
    if segments and re.fullmatch(r"v\d+(?:(?:alpha|beta)\d*)?", segments[-1]):
        # The SDK appends the API version itself: ".../v1beta" would call ".../v1beta/v1beta/..." (404 on everything).
        fixed = f"{parsed.scheme}://{parsed.netloc}" + "".join(f"/{part}" for part in segments[:-1])
        raise ValueError(f"leave the API version out of the base URL (the tool adds /{API_VERSION} itself): "
                         f"use {fixed!r} instead of {value!r}")
    if parsed.query or parsed.fragment:
        raise ValueError(f"a base URL has no query or fragment, got {value!r}")


def assign_setting(settings: Settings, key: str, value: Any) -> None:
    """Set a dotted key (already checked by `coerce_setting`) on a settings object."""
    table = key.rpartition(".")[0]
    target = getattr(settings, table) if table else settings
    setattr(target, _lookup(key).attr, value)


# --- reading a file -------------------------------------------------------------------------------


def default_config_path() -> Path | None:
    """$GEMBATCH_CONFIG if set, else the user's config.toml if it exists, else None."""
    from_env = os.environ.get(CONFIG_ENV, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    candidate = Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"
    return candidate if candidate.is_file() else None


def load_settings(path: Path | None) -> Settings:
    """Defaults overridden by the TOML file at `path` (None: defaults only); raises ConfigError."""
    settings = Settings()
    if path is None:
        return settings
    text = _read_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    _Loader(path, text).apply(data, settings)
    settings.config_path = path
    return settings


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: config file is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: config file is not valid UTF-8") from None


class _Loader:
    """Walks parsed TOML into a Settings object, raising ConfigError at the first bad key."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.base_dir = path.absolute().parent

    def apply(self, data: dict[str, Any], settings: Settings) -> None:
        for name, value in data.items():
            if name == PRICES_TABLE:
                self._set_prices(settings, value)
            elif name in _TABLE_KEYS:
                if name == "serve" and isinstance(value, bool):
                    self._fail("", name, "serving the UI to a browser is the command-line flag --serve; the "
                                         "[serve] table sets its host and port")
                if not isinstance(value, dict):
                    self._fail("", name, f"expected a table, got {_describe(value)}")
                for sub_name, sub_value in value.items():
                    self._set(settings, name, sub_name, sub_value)
            else:
                self._set(settings, "", name, value)
        self._check_cool_down(settings)

    def _set(self, settings: Settings, table: str, name: str, value: object) -> None:
        specs = _TABLE_KEYS[table] if table else _TOP_KEYS
        if name not in specs:
            self._fail(table, name, self._unknown_reason(table, name))
        key = f"{table}.{name}" if table else name
        try:
            converted = coerce_setting(key, value, self.base_dir)
        except ValueError as exc:
            self._fail(table, name, str(exc))
        assign_setting(settings, key, converted)

    def _set_prices(self, settings: Settings, value: object) -> None:
        """`[prices."MODEL"]` tables of `input` and `output` USD per 1M tokens (interactive prices)."""
        if not isinstance(value, dict):
            self._fail("", PRICES_TABLE, f"expected a table, got {_describe(value)}")
        for model, entry in value.items():
            if not isinstance(entry, dict):
                self._fail(PRICES_TABLE, model,
                           f"expected a table {{ input = USD, output = USD }}, got {_describe(entry)}")
            unknown = sorted(set(entry) - {"input", "output"})
            if unknown:
                self._fail(PRICES_TABLE, model, f"unknown key {unknown[0]!r}; a price has 'input' and 'output' "
                                                "(USD per 1M tokens at the interactive price)")
            numbers: dict[str, float] = {}
            for part in ("input", "output"):
                number = entry.get(part)
                if number is None:
                    self._fail(PRICES_TABLE, model, f"missing {part!r} (USD per 1M {part} tokens)")
                if isinstance(number, bool) or not isinstance(number, int | float):
                    self._fail(PRICES_TABLE, model, f"{part}: expected a number, got {_describe(number)}")
                problem = range_problem(float(number), 0)
                if problem:
                    self._fail(PRICES_TABLE, model, f"{part}: {problem}")
                numbers[part] = float(number)
            settings.prices[model.removeprefix("models/")] = ModelPrice(numbers["input"], numbers["output"])

    def _check_cool_down(self, settings: Settings) -> None:
        adm = settings.admission
        if adm.cool_down_max_seconds < adm.cool_down_seconds:
            self._fail(
                "admission",
                "cool_down_max_seconds",
                f"must be at least cool_down_seconds ({adm.cool_down_seconds:g}), got {adm.cool_down_max_seconds:g}",
            )

    def _unknown_reason(self, table: str, name: str) -> str:
        normalized = name.lower().replace("-", "_")
        if normalized == "key" or any(word in normalized for word in _SECRET_WORDS):
            return (
                "the API key is never read from the config file; set the GEMINI_API_KEY "
                "(or GOOGLE_API_KEY) environment variable instead"
            )
        if not table and normalized in _FLAG_ONLY:
            return f"unknown key; {name} is a command-line flag only (--{normalized.replace('_', '-')})"
        where = f"in [{table}]" if table else "at the top level"
        reason = f"unknown key {where}"
        suggestion = _closest(table, name)
        return f"{reason}; did you mean {suggestion}?" if suggestion else reason

    def _fail(self, table: str, name: str, reason: str) -> NoReturn:
        key = f"{table}.{name}" if table and name else table or name
        line = _key_line(self.lines, table, name or table)
        if line is None and table == PRICES_TABLE:  # a [prices."MODEL"] header
            line = next((n for n, text in enumerate(self.lines, 1)
                         if _HEADER.match(text) and PRICES_TABLE in text and name in text), None)
        where = f"{self.path}:{line}" if line else str(self.path)
        raise ConfigError(f"{where}: {key}: {reason}")


def _closest(table: str, name: str) -> str | None:
    """The known key nearest to a misspelt one, written as the user should write it."""
    # Keys of the other tables are candidates too, so a key put in the wrong table is pointed at
    # the right one; on a name clash the key of the same table wins.
    candidates: dict[str, str] = {}
    for dotted in [*known_keys(), *_TABLE_KEYS]:
        other_table, _, other_name = dotted.rpartition(".")
        if other_table == table or other_name not in candidates:
            candidates[other_name] = other_table
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if not match:
        return None
    other_table = candidates[match[0]]
    if other_table == table:
        return f"'{match[0]}'"
    return f"'{match[0]}' in [{other_table}]" if other_table else f"'{match[0]}' at the top level"


_HEADER = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")


def _key_line(lines: list[str], table: str, name: str) -> int | None:
    """Best-effort line number of `name = ...` inside `[table]` (or a `[name]` header itself)."""
    current = ""
    assignment = re.compile(rf"""^\s*(?:{re.escape(name)}|"{re.escape(name)}"|'{re.escape(name)}')\s*=""")
    for number, line in enumerate(lines, start=1):
        header = _HEADER.match(line)
        if header:
            current = header.group(1).strip("\"'")
            if not table and current == name:
                return number
            continue
        if current == table and assignment.match(line):
            return number
    return None


def setting_place(settings: Settings, key: str) -> str:
    """Where a key ("backend", or "serve.host" for one in a table) was set, for a message: "FILE:LINE: key" (or
    "FILE: key") when the settings came from a config file, else the key alone."""
    if settings.config_path is None:
        return key
    table, _, name = key.rpartition(".")
    try:
        line = _key_line(_read_text(settings.config_path).splitlines(), table, name)
    except ConfigError:
        line = None
    return f"{settings.config_path}:{line}: {key}" if line else f"{settings.config_path}: {key}"


__all__ = [
    "AdmissionSettings",
    "ConfigError",
    "ModelPrice",
    "NotifySettings",
    "RecoverySettings",
    "ServeSettings",
    "Settings",
    "TransferSettings",
    "assign_setting",
    "coerce_setting",
    "default_config_path",
    "known_keys",
    "load_settings",
    "range_problem",
    "setting_place",
]
