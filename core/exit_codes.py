"""The exit codes of the command-line contract, shared by the headless runner, the TUI and the subcommands."""

from __future__ import annotations

EXIT_OK = 0  # every input file's job succeeded and its results are saved
EXIT_INTERNAL = 1  # a bug: reported with its traceback (never the API key)
EXIT_USAGE = 2  # usage or configuration error; nothing was submitted
EXIT_INCOMPLETE = 3  # the run finished, but some job failed, was cancelled or expired, or a file was rejected
EXIT_OVER_COST_LIMIT = 4  # the estimated cost is over the set limit; nothing was submitted
EXIT_STOPPED = 75  # EX_TEMPFAIL: the user left (`q` in the UI) with work left; the same command resumes
EXIT_SIGNAL_BASE = 128  # stopped by signal N with work left: 128 + N (SIGHUP 129, SIGINT 130, SIGTERM 143)


def leaving_code(run_code: int | None, work_left: bool, signum: int | None = None) -> int:
    """The process exit code of a run that is over: its own code (0 or 3) when every batch has ended, and a code
    the run chose itself (2: a refused key, no accepted MIME type, ...) in any case; else 128 + N after signal N
    (or Ctrl-C, as SIGINT), else EXIT_STOPPED; never 0 with work left."""
    if run_code is not None and (not work_left or run_code not in (EXIT_OK, EXIT_INCOMPLETE)):
        return run_code
    if signum is not None:
        return EXIT_SIGNAL_BASE + int(signum)
    return EXIT_STOPPED
