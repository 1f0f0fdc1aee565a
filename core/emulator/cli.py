"""`gembatch-emulator`: run the emulator in the foreground for a person (Ctrl-C stops it)."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from typing import Any

from .emulator import Emulator, stderr_log
from .settings import EmulatorSettings, field_types, parse_text

SNIPPET = """\
    from google import genai
    from google.genai import types
    client = genai.Client(api_key="any", http_options=types.HttpOptions(base_url="{url}", api_version="v1beta"))"""


def _default_text(name: str, value: Any) -> str:
    if value is None:
        return {"api_key": "any non-empty key"}.get(name, "all kinds" if name.endswith("_kinds") else "off")
    if isinstance(value, set):
        return ",".join(sorted(value)) or ("any" if name == "models" else "none")
    return str(value)


def build_parser() -> argparse.ArgumentParser:
    """One option per EmulatorSettings field, plus --scenario and --quiet."""
    parser = argparse.ArgumentParser(
        prog="gembatch-emulator",
        description="A local Gemini Batch Mode API server for the google-genai SDK: uploads, files, batch jobs "
                    "in real time, quotas and faults. Values: command line > --scenario file > defaults. "
                    "Rates are 0..1; 0 or 'off' turns a quota off.",
    )
    parser.add_argument("--scenario", metavar="FILE",
                        help="TOML file of settings (keys are the option names with _ instead of -)")
    parser.add_argument("--quiet", action="store_true", help="do not log one line per call to stderr")
    defaults = EmulatorSettings()
    types_ = field_types()
    for item in dataclasses.fields(EmulatorSettings):
        flag = "--" + item.name.replace("_", "-")
        help_text = f"{item.metadata['help']} (default: {_default_text(item.name, getattr(defaults, item.name))})"
        if types_[item.name] is bool:
            parser.add_argument(flag, dest=item.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
            continue
        parser.add_argument(flag, dest=item.name, metavar="VALUE", default=argparse.SUPPRESS,
                            type=lambda text, name=item.name: parse_text(name, text), help=help_text)
    return parser


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    """Defaults, then the scenario file, then the flags given."""
    settings = EmulatorSettings.from_toml(args.scenario) if args.scenario else EmulatorSettings()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(EmulatorSettings) if hasattr(args, f.name)}
    settings = dataclasses.replace(settings, **given)
    settings.validate("command line")
    return settings


def main(argv: list[str] | None = None) -> int:
    """Parse the options, serve until Ctrl-C (or SIGTERM), stop cleanly."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    emulator = Emulator(settings, log=None if args.quiet else stderr_log)
    try:
        url = emulator.start()
    except OSError as exc:
        print(f"gembatch-emulator: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    print(f"gembatch emulator listening on {url}", flush=True)
    print("Point the google-genai SDK at it:", flush=True)
    print(SNIPPET.format(url=url), flush=True)
    print("Ctrl-C stops it.", flush=True)
    done = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        emulator.stop()
        print("gembatch emulator stopped.", file=sys.stderr, flush=True)
    return 0
