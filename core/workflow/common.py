"""What the subcommands share: exit codes, the error they raise, config loading and number formatting."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import compose, exit_codes
from ..backend import BatchBackend
from ..config import ConfigError, Settings, default_config_path, load_settings

EXIT_OK = exit_codes.EXIT_OK
EXIT_USAGE = exit_codes.EXIT_USAGE  # bad usage or bad input: nothing was written or changed
EXIT_PROBLEMS = exit_codes.EXIT_INCOMPLETE  # done, but the data has problems (missing/duplicate keys, failed deletes)
EXIT_OVER_LIMIT = exit_codes.EXIT_OVER_COST_LIMIT  # the cost estimate is over --limit-usd


class WorkflowError(Exception):
    """A reason to stop; the message names the file (and line) and what is wrong."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def parser_for(name: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """An argument parser named `gembatch-tui NAME` that keeps the help text's line breaks."""
    return argparse.ArgumentParser(
        prog=f"gembatch-tui {name}",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    """--config FILE, read as the main command reads it (else $GEMBATCH_CONFIG, else the user's config.toml)."""
    parser.add_argument("--config", metavar="FILE", type=Path,
                        help="TOML config file (default: $GEMBATCH_CONFIG, else the user's config.toml if any)")


def load_config(path: Path | None) -> Settings:
    """The settings of the config file (`path`, else the default one); a bad file is a WorkflowError."""
    try:
        return load_settings(path if path is not None else default_config_path())
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None


def open_backend(settings: Settings, api_key: str, *, model: str | None = None,
                 base_url: str | None = None) -> BatchBackend:
    """The configured batch service backend for a subcommand; an unknown `backend` setting is a WorkflowError."""
    try:
        return compose.open_backend(settings, api_key, model=model, base_url=base_url)
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None


def existing_dir(path: Path, flag: str) -> Path:
    """`path` when it is a folder, else a WorkflowError naming the flag."""
    if not path.is_dir():
        problem = "is not a folder" if path.exists() else "folder not found"
        raise WorkflowError(f"{flag}: {problem}: {path}")
    return path


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number of at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {text}")
    return value


_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "M": 1000**2, "MB": 1000**2, "G": 1000**3, "GB": 1000**3,
          "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}


def byte_size(text: str) -> int:
    """argparse type: bytes, with an optional unit (500MB, 1.5GB, 64MiB)."""
    raw = text.strip().upper().replace("_", "")
    number = raw.rstrip("KMGIB")
    unit = raw[len(number):]
    if unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"unknown unit in {text!r}; use B, KB, MB, GB, KiB, MiB or GiB")
    try:
        value = int(float(number) * _UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 500MB or 1000000, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, got {text!r}")
    return value


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as Google states its limits)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def print_json(data: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
