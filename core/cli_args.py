"""The command-line contract of `gembatch-tui`: flags, their help, and how they override the config file."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from .compose import check_backend
from .config import (
    ConfigError,
    Settings,
    assign_setting,
    coerce_setting,
    default_config_path,
    load_settings,
    setting_place,
)

CHECKPOINT_SUFFIXES = (".json", ".toml")

_DESCRIPTION = """\
Run a folder of Gemini Batch API input files to downloaded results: each *.jsonl file in the input
folder becomes one batch job; its results are saved as OUTPUT/NAME.results.jsonl. The run is saved in
a checkpoint file, so the same command started again resumes it without submitting anything twice.

Settings come from the defaults, then the config file (--config, else $GEMBATCH_CONFIG, else
config.toml in the user config folder if it exists), then these flags, each overriding the one before."""

_EPILOG = """\
API key:
  The key is read from the environment variable GEMINI_API_KEY or GOOGLE_API_KEY, as the google-genai
  SDK does. It is never taken from a flag or the config file, and never written to the checkpoint or logs.

exit codes:
  0    every input file's job succeeded and its results are saved
  3    the run finished, but some job ended FAILED, CANCELLED or EXPIRED, or an input file was rejected
  2    usage or configuration error (nothing was submitted)
  4    the estimated cost is over cost_limit_usd / --cost-limit-usd (nothing was submitted)
  1    internal error (a bug): the message and traceback are printed without the API key; run the same
       command again to resume from the checkpoint
  75   left with `q` in the UI while work was left; the checkpoint is saved and the same command resumes
  129  hung up (SIGHUP: the terminal or SSH session went away) with work left, after the checkpoint was saved
  130  interrupted by SIGINT or Ctrl-C with work left, after the checkpoint was saved
  143  terminated by SIGTERM with work left, after the checkpoint was saved
  A stop that comes after every batch has ended exits 0 or 3 as above. The last log line (on stderr
  and in the log file beside the checkpoint) names the same code.

subcommands (each has its own --help):
  lint, split, merge, retry-failures, cost, cleanup, status, adopt: e.g. `gembatch-tui status --help`"""

# Flag destination -> dotted settings key; each is checked exactly as the same key in the config file.
_OVERRIDES: dict[str, str] = {
    "input": "input",
    "output": "output",
    "checkpoint": "checkpoint",
    "model": "model",
    "base_url": "base_url",
    "poll_interval": "poll_interval",
    "max_attempts": "max_attempts",
    "max_concurrent_jobs": "admission.max_concurrent_jobs",
    "token_budget": "admission.token_budget",
    "creates_per_minute": "admission.creates_per_minute",
    "upload_concurrency": "transfer.upload_concurrency",
    "cost_limit_usd": "cost_limit_usd",
    "trace": "trace",
    "allow_duplicate_inputs": "allow_duplicate_inputs",
    "progress_interval": "progress_interval",
    "request_check": "request_check",
    "host": "serve.host",
    "port": "serve.port",
    "job_kind": "job_kind",
}


def _version() -> str:
    try:
        return metadata.version("gembatch-tui")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the contract; --help explains every flag, the API key and the exit codes."""
    parser = argparse.ArgumentParser(
        prog="gembatch-tui",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # Abbreviations would turn a later new flag into a breaking change for existing command lines.
        allow_abbrev=False,
    )
    _add_run_flags(parser)
    _add_quota_flags(parser)
    _add_ui_flags(parser)
    _add_serve_flags(parser)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    return parser


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("what to run")
    group.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="TOML config file (see config.example.toml); an error if it does not exist",
    )
    group.add_argument(
        "--input",
        metavar="DIR",
        help="folder of *.jsonl input files, one batch job per file; each line is "
        '{"key": "...", "request": {...}} (required unless --demo)',
    )
    group.add_argument(
        "--output",
        metavar="DIR",
        help="folder for the results: NAME.jsonl gives DIR/NAME.results.jsonl; "
        "created if missing (required unless --demo)",
    )
    group.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="state file, .json or .toml; running the same command again resumes from it "
        "(default: OUTPUT/gembatch.checkpoint.json)",
    )
    group.add_argument("--model", metavar="NAME", help="model for every job (default: gemini-2.5-flash)")
    group.add_argument(
        "--base-url", metavar="URL", help="API endpoint to use instead of Google's: a proxy, a gateway, the emulator"
    )
    group.add_argument(
        "--trace",
        metavar="FILE",
        help="append every API call of the run to FILE as one JSON line (method, path, status, time, the bodies "
        "without prompts, answers or the API key): to show what the service said",
    )
    group.add_argument(
        "--poll-interval", metavar="SECONDS", type=float, help="seconds between two polls of the job list (default: 30)"
    )
    group.add_argument(
        "--max-attempts",
        metavar="N",
        type=int,
        help="jobs per file before it counts as failed; a job that ends FAILED or EXPIRED "
        "on the server is submitted again until then (default: 3)",
    )
    group.add_argument(
        "--input-moved",
        action="store_true",
        help="the input folder moved since the checkpoint was made: resume with this one (without the flag a "
        "checkpoint used with another input folder is refused, exit 2)",
    )
    group.add_argument(
        "--resubmit-changed",
        action="store_true",
        default=None,
        help="an input file changed after its upload or job: submit the new content as a new attempt once its "
        "current job (if any) has ended (default: warn, and keep the job of the old content and its results)",
    )
    group.add_argument(
        "--allow-duplicate-inputs",
        action="store_true",
        default=None,
        help="submit input files whose content is identical (default: refused, exit 2, naming both; "
        "config: allow_duplicate_inputs = true)",
    )
    group.add_argument(
        "--request-check",
        choices=("error", "warn", "off"),
        help="request lines the API would refuse (checked against its schema, as `gembatch-tui lint` does): "
        "error rejects the file (default), warn logs and submits it, off skips the check",
    )
    group.add_argument(
        "--job-kind",
        choices=("auto", "generate", "embed"),
        help="the kind of batch job of each file: generate (batchGenerateContent), embed (embeddings: lines "
        '{"key": ..., "request": {"content": {...}}}) or auto (default: taken from each file\'s lines); a file '
        "whose lines are of the other kind, or of both, is rejected with the line named",
    )


def _add_quota_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("quota and speed")
    group.add_argument(
        "--max-concurrent-jobs", metavar="N", type=int, help="most unfinished jobs at a time (default: 100)"
    )
    group.add_argument(
        "--token-budget",
        metavar="N",
        type=int,
        help="most enqueued tokens at a time, if you know your tier's limit "
        "(default, or 0: learn it from the server's 429 answers)",
    )
    group.add_argument(
        "--creates-per-minute",
        metavar="N",
        type=int,
        help="most job creates per minute (default, or 0: no limit of ours)",
    )
    group.add_argument("--upload-concurrency", metavar="N", type=int, help="uploads at the same time (default: 4)")
    group.add_argument(
        "--cost-limit-usd",
        metavar="USD",
        type=float,
        help="do not start when the estimated cost at batch prices is over this many US dollars "
        "(see `gembatch-tui cost --help`; default, or 0: no limit)",
    )


def _add_ui_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mode")
    group.add_argument(
        "--headless",
        action="store_true",
        help="no UI: one log line per event on stderr; the exit code tells the outcome",
    )
    group.add_argument(
        "--demo",
        action="store_true",
        help="run against a local emulator with made-up input files; no key or network "
        "needed (--input, --output and --checkpoint become optional)",
    )
    group.add_argument(
        "--progress-interval",
        metavar="SECONDS",
        type=float,
        help="seconds between two progress lines in the log (batches and requests done, what admission "
        "waits for, ETA) (default: 60)",
    )
    group.add_argument("--no-mouse", action="store_true", help="do not capture the mouse in the UI")
    group.add_argument(
        "--read-only",
        action="store_true",
        help="watch a run through its checkpoint without submitting or changing anything",
    )
    group.add_argument(
        "--rebuild-from-server",
        action="store_true",
        help="the checkpoint is damaged or lost: keep its files (renamed with a timestamp), make a new one "
        "from the server's batch and file lists matched to the input files by display name, then run "
        "(with --headless; nothing already on the server is submitted again)",
    )


def _add_serve_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("watch from a browser")
    group.add_argument(
        "--serve",
        action="store_true",
        help="serve the UI to web browsers at http://HOST:PORT/ instead of this terminal (with the run's other "
        "flags, --demo included); the first browser tab runs the engine, later ones watch read-only; "
        "Ctrl-C stops every tab's app (checkpoint saved)",
    )
    group.add_argument(
        "--host",
        metavar="HOST",
        help="with --serve: the address to listen on (default: 127.0.0.1, this machine only; reach it through "
        "an SSH tunnel; the page has no login) (config: [serve] host)",
    )
    group.add_argument(
        "--port", metavar="N", type=int, help="with --serve: the port to listen on (default: 8000) "
        "(config: [serve] port)",
    )


def resolve_settings(argv: Sequence[str] | None) -> Settings:
    """Parse the flags, read the config file, apply the flags over it and check the result.

    Raises ConfigError for a bad value; argparse itself exits with code 2 on a usage error.
    """
    args = build_parser().parse_args(argv)
    config_path = args.config if args.config is not None else default_config_path()
    settings = load_settings(config_path)
    _apply_overrides(settings, args)
    settings.headless = args.headless
    settings.demo = args.demo
    settings.no_mouse = args.no_mouse
    settings.read_only = args.read_only
    settings.rebuild_from_server = args.rebuild_from_server
    settings.input_moved = args.input_moved
    settings.resubmit_changed = bool(args.resubmit_changed)
    settings.serve.on = args.serve
    _check_serve(settings, args)
    _check(settings, args)
    return settings


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _apply_overrides(settings: Settings, args: argparse.Namespace) -> None:
    for dest, key in _OVERRIDES.items():
        value = getattr(args, dest)
        if value is None:
            continue
        try:
            converted = coerce_setting(key, value)
        except ValueError as exc:
            raise ConfigError(f"{_flag(dest)}: {exc}") from None
        assign_setting(settings, key, converted)


def _origin(settings: Settings, args: argparse.Namespace, dest: str) -> str:
    """Where a value came from, for an error message: the flag, or the config file and key."""
    if getattr(args, dest, None) is not None:
        return _flag(dest)
    return f"{settings.config_path}: {dest}" if settings.config_path else _flag(dest)


def _check(settings: Settings, args: argparse.Namespace) -> None:
    """Checks that need the whole picture: required folders, the checkpoint's format."""
    # Numbers (poll interval > 0 and the like) were checked key by key in coerce_setting.
    if settings.checkpoint is not None and settings.checkpoint.suffix not in CHECKPOINT_SUFFIXES:
        raise ConfigError(
            f"{_origin(settings, args, 'checkpoint')}: the checkpoint file must end in .json or .toml, "
            f"got {str(settings.checkpoint)!r}"
        )
    check_backend(settings)
    if settings.rebuild_from_server and (settings.demo or settings.read_only or not settings.headless):
        raise ConfigError(
            "--rebuild-from-server runs with --headless (not with --demo or --read-only): it prints what it "
            "rebuilt, then runs; start the UI afterwards to watch or go on"
        )
    if settings.demo:
        return  # the demo makes its own folders
    if settings.input_dir is None:
        raise ConfigError("no input folder: give --input DIR or set 'input' in the config file")
    if not settings.input_dir.is_dir():
        problem = "is not a folder" if settings.input_dir.exists() else "folder not found"
        raise ConfigError(f"{_origin(settings, args, 'input')}: {problem}: {settings.input_dir}")
    if settings.output_dir is None:
        raise ConfigError("no output folder: give --output DIR or set 'output' in the config file")
    if settings.output_dir.exists() and not settings.output_dir.is_dir():
        raise ConfigError(f"{_origin(settings, args, 'output')}: is not a folder: {settings.output_dir}")
    if os.path.realpath(settings.output_dir) == os.path.realpath(settings.input_dir):
        raise ConfigError(
            f"{_origin(settings, args, 'output')}: the output folder is the input folder ({settings.input_dir}): "
            "its NAME.results.jsonl files would be read as inputs; give another output folder"
        )
    if not settings.read_only:
        _check_writable(_origin(settings, args, "output"), "output folder", settings.output_dir)
        _check_writable(_origin(settings, args, "checkpoint"), "checkpoint's folder",
                        Path(os.path.realpath(settings.checkpoint_path())).parent)
        if settings.trace is not None:
            if settings.trace.is_dir():
                raise ConfigError(f"{_origin(settings, args, 'trace')}: is a folder, not a file: {settings.trace}")
            _check_writable(_origin(settings, args, "trace"), "trace file's folder",
                            Path(os.path.realpath(settings.trace)).parent)


def _check_serve(settings: Settings, args: argparse.Namespace) -> None:
    """--serve goes with the UI; --host and --port go with --serve; the host is a name or an address."""
    if not settings.serve.on:
        if args.host is not None or args.port is not None:
            raise ConfigError(f"{'--host' if args.host is not None else '--port'} goes with --serve "
                              "(serve the UI to a web browser); add --serve or leave it out")
        return
    if settings.headless:
        raise ConfigError("--serve serves the UI to a web browser: it does not go with --headless (no UI)")
    host = settings.serve.host
    if "/" in host or any(c.isspace() for c in host) or (":" in host and not _is_ipv6(host)):
        origin = "--host" if args.host is not None else setting_place(settings, "serve.host")
        raise ConfigError(f"{origin}: expected a host name or address such as 127.0.0.1, localhost or 0.0.0.0 "
                          f"(no scheme, path or port: the port is --port), got {host!r}")


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).version == 6
    except ValueError:
        return False


def _check_writable(origin: str, what: str, folder: Path) -> None:
    """A ConfigError when `folder` cannot be written (or made): the nearest existing folder up must be writable."""
    existing = folder
    while not existing.exists():
        if existing.is_symlink():
            raise ConfigError(f"{origin}: the {what} {folder} cannot be made: {existing} is a dangling symlink")
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{origin}: the {what} {folder} cannot be made: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{origin}: the {what} {folder} is not writable (no write permission on {existing})")
