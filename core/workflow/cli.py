"""The subcommand dispatcher: `gembatch-tui NAME ...` for the workflow commands around a run.

`main(["split", "big.jsonl", "--out", "batches"])` returns the exit code. Modules are imported only when
their subcommand runs, so `gembatch-tui` itself stays quick to start.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from ..redact import redact
from .common import EXIT_USAGE, WorkflowError

# name -> (module in this package, one-line summary)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "split": ("split", "split one large JSONL of requests into batch files under size/count/token limits"),
    "merge": ("merge", "join all result files into one output in input order; check every key has one result"),
    "retry-failures": ("retry", "write the failed requests into new batch files, to run them again"),
    "cost": ("cost", "estimate requests, tokens and cost before a run; count them after it"),
    "cleanup": ("cleanup", "delete a finished run's uploaded and result files; show storage use"),
    "status": ("status", "a run's state from its checkpoint, as text or JSON, without the TUI"),
    "lint": ("lint", "check every request line against the API's request schema; --fix the obvious mistakes"),
    "adopt": ("adopt", "take over jobs and uploads another script left half done, so nothing is done twice"),
}


def usage() -> str:
    """The list of subcommands, for `gembatch-tui help` and a bad name."""
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: gembatch-tui NAME [options]   (gembatch-tui NAME --help for each)", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    lines += ["", "without a subcommand, gembatch-tui [flags] runs a folder of batch files (gembatch-tui --help)"]
    return "\n".join(lines)


def is_subcommand(argv: Sequence[str]) -> bool:
    """True when the command line starts with a subcommand name (the main command starts with flags)."""
    return bool(argv) and argv[0] in SUBCOMMANDS


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns its exit code (2 for bad usage, with the reason on stderr)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in SUBCOMMANDS:
        if args and args[0] in ("help", "-h", "--help"):
            print(usage())
            return 0
        given = f"unknown subcommand {args[0]!r}\n" if args else ""
        sys.stderr.write(f"gembatch-tui: {given}{usage()}\n")
        return EXIT_USAGE
    name = args[0]
    module = importlib.import_module(f"{__package__}.{SUBCOMMANDS[name][0]}")
    parser = module.build_parser()
    try:
        parsed = parser.parse_args(args[1:])
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return int(module.run(parsed))
    except WorkflowError as exc:
        sys.stderr.write(f"gembatch-tui {name}: {redact(str(exc))}\n")
        return exc.code
    except KeyboardInterrupt:
        sys.stderr.write(f"gembatch-tui {name}: interrupted\n")
        return 130
    except BrokenPipeError:  # `... | head`
        return 0
