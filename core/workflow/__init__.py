"""The workflow around the batches: subcommands of `gembatch-tui` (split, merge, retry-failures, cost, cleanup,
status). The cost check a run makes before it starts is core/cost_estimate.py: the engine never imports this.

    gembatch-tui split big.jsonl --out batches --max-requests 10000
    gembatch-tui merge --input batches --output results --to merged.jsonl

`gembatch.core.workflow.cli.main(argv)` dispatches them; each subcommand is one module with `build_parser()` and
`run(args) -> int`. Nothing here imports Textual.
"""
