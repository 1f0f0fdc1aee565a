"""The estimated cost of a run at batch prices, and the check a run makes before it starts.

`check_cost_limit(settings, batches)` refuses a run over settings.cost_limit_usd (TOML key `cost_limit_usd`,
flag `--cost-limit-usd`); the `cost` subcommand (core/workflow/cost.py) reports the same estimate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .config import ModelPrice, Settings
from .pricing import BATCH_FACTOR, batch_usd, find_price, price_table, usd


class SizedBatch(Protocol):
    """What an estimate needs of a batch: a core.input_scan.ScannedFile or a core.model.BatchRecord."""

    @property
    def request_count(self) -> int: ...

    @property
    def est_tokens(self) -> int: ...


@dataclass(frozen=True)
class CostEstimate:
    """The estimated cost of some batches at batch prices (None when the model has no known price)."""

    model: str
    priced_as: str | None
    price: ModelPrice | None
    files: int
    requests: int
    input_tokens: int
    output_tokens_per_request: int

    @property
    def output_tokens(self) -> int:
        return self.requests * self.output_tokens_per_request

    @property
    def input_usd(self) -> float | None:
        return None if self.price is None else batch_usd(self.input_tokens, self.price.input_per_million)

    @property
    def output_usd(self) -> float | None:
        return None if self.price is None else batch_usd(self.output_tokens, self.price.output_per_million)

    @property
    def total_usd(self) -> float | None:
        if self.input_usd is None or self.output_usd is None:
            return None
        return self.input_usd + self.output_usd

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "priced_as": self.priced_as,
            "price_per_million": None if self.price is None else {
                "input": self.price.input_per_million, "output": self.price.output_per_million,
                "batch_factor": BATCH_FACTOR},
            "files": self.files, "requests": self.requests, "input_tokens": self.input_tokens,
            "output_tokens_per_request": self.output_tokens_per_request, "output_tokens": self.output_tokens,
            "input_usd": self.input_usd, "output_usd": self.output_usd, "total_usd": self.total_usd,
        }


def estimate_cost(batches: Iterable[SizedBatch], settings: Settings, model: str | None = None) -> CostEstimate:
    """The estimate for `batches` with the settings' model (or `model`), prices and output assumption."""
    model = model or settings.model
    found = find_price(model, price_table(settings))
    files = requests = tokens = 0
    for batch in batches:
        files += 1
        requests += batch.request_count
        tokens += batch.est_tokens
    return CostEstimate(model, found[0] if found else None, found[1] if found else None, files, requests, tokens,
                        settings.output_tokens_per_request)


def check_cost_limit(settings: Settings, scanned_files: Iterable[SizedBatch]) -> str | None:
    """Why a run must not start because of its cost limit, or None when it may (or no limit is set).

    `scanned_files` are the batches the run would submit: ScannedFile objects, or BatchRecords (anything with
    `request_count` and `est_tokens`). With a limit set and no price known for the model, the run is refused
    too: a limit that cannot be checked must not be passed silently.
    """
    limit = settings.cost_limit_usd
    if limit is None:
        return None
    estimate = estimate_cost(scanned_files, settings)
    if estimate.total_usd is None:
        return (f"a cost limit of {usd(limit)} is set (cost_limit_usd / --cost-limit-usd) but no price is known "
                f"for model {estimate.model}: add [prices.\"{estimate.model}\"] with input and output (USD per 1M "
                "tokens) to the config file; nothing was submitted")
    if estimate.total_usd <= limit:
        return None
    return (f"estimated cost {usd(estimate.total_usd)} at batch prices for {estimate.requests} requests "
            f"(~{estimate.input_tokens:,} input tokens, {estimate.output_tokens_per_request} output tokens assumed per "
            f"request, model {estimate.model}) is over the cost limit of {usd(limit)} (cost_limit_usd / "
            "--cost-limit-usd); nothing was submitted. See `gembatch-tui cost --input DIR`.")
