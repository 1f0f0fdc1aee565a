"""Run every benchmark in turn (each rewrites its own section of docs/benchmarks.md).

    python benchmarks/run_all.py [--quick] [--no-doc] [--only NAME ...]

`tui_rows.py` measures the TUI at 10,000 rows (in process and in a pseudo-terminal).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ("quota_efficiency", "scale", "uploads", "polling", "tui_rows", "request_check")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the smaller workloads of each script")
    parser.add_argument("--only", nargs="*", choices=ORDER, help="run these only")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    failed = []
    summaries = []
    for name in args.only or ORDER:
        script = HERE / f"{name}.py"
        if not script.exists():
            print(f"== {name}: {script.name} does not exist yet, skipped", flush=True)
            continue
        command = [sys.executable, str(script)] + (["--quick"] if args.quick else []) + (
            ["--no-doc"] if args.no_doc else [])
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        sys.stdout.write(done.stdout)
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        summaries.append(f"{name} ({time.monotonic() - started:.0f} s): {lines[-1] if lines else '(no output)'}")
        if done.returncode != 0:
            failed.append(name)
    print("\n== summary")
    for line in summaries:
        print(line)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
