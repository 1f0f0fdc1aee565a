"""The exit codes of the command-line contract, shared by the headless runner, the TUI and the subcommands."""

EXIT_OK = 0  # every input file's job succeeded and its results are saved
EXIT_INTERNAL = 1  # a bug: reported with its traceback (never the API key)
EXIT_USAGE = 2  # usage or configuration error; nothing was submitted
EXIT_INCOMPLETE = 3  # the run finished, but some job failed, was cancelled or expired, or a file was rejected
EXIT_OVER_COST_LIMIT = 4  # the estimated cost is over the set limit; nothing was submitted
