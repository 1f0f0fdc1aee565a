"""Built-in model prices for cost estimates, how a model name finds its price, and dollar amounts.

Prices are the interactive (standard, paid tier) USD per 1M tokens for text, for prompts up to 200k
tokens where the price has tiers. Batch jobs cost half (`BATCH_FACTOR`). Prices change: a `[prices]`
table in the config file overrides any of them, and adds models.
"""

from __future__ import annotations

from .config import ModelPrice, Settings

PRICES_AS_OF = "2025-12-15"
PRICES_SOURCE = "https://ai.google.dev/gemini-api/docs/pricing"
BATCH_FACTOR = 0.5  # Batch Mode costs 50% of the interactive price

DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gemini-3-pro-preview": ModelPrice(2.00, 12.00),  # prompts over 200k tokens: 4.00 / 18.00
    "gemini-3-flash-preview": ModelPrice(0.50, 3.00),
    "gemini-3-pro-image-preview": ModelPrice(2.00, 12.00),  # text output; generated images cost far more
    "gemini-2.5-pro": ModelPrice(1.25, 10.00),  # prompts over 200k tokens: 2.50 / 15.00
    "gemini-2.5-flash": ModelPrice(0.30, 2.50),  # audio input: 1.00
    "gemini-2.5-flash-preview-09-2025": ModelPrice(0.30, 2.50),
    "gemini-2.5-flash-lite": ModelPrice(0.10, 0.40),
    "gemini-2.5-flash-lite-preview-09-2025": ModelPrice(0.10, 0.40),
    "gemini-2.0-flash": ModelPrice(0.10, 0.40),
    "gemini-2.0-flash-lite": ModelPrice(0.075, 0.30),
    "gemini-embedding-001": ModelPrice(0.15, 0.0),  # embeddings have no output tokens; batch: 0.075 (Google, 2025-09)
}

PRICE_NOTE = (f"built-in prices as of {PRICES_AS_OF} ({PRICES_SOURCE}); prices change: check that page and "
              "override them with a [prices] table in the config file")


def price_table(settings: Settings) -> dict[str, ModelPrice]:
    """The built-in prices with the config file's `[prices]` over them."""
    return {**DEFAULT_PRICES, **settings.prices}


def find_price(model: str, table: dict[str, ModelPrice]) -> tuple[str, ModelPrice] | None:
    """(the table's model name, its price) for a model: an exact match, else the longest name that the
    model's name extends with "-…" (gemini-2.5-flash-001 is priced as gemini-2.5-flash); None if neither."""
    name = model.removeprefix("models/")
    if name in table:
        return name, table[name]
    candidates = [known for known in table if name.startswith(known + "-")]
    if not candidates:
        return None
    best = max(candidates, key=len)
    return best, table[best]


def batch_usd(tokens: int, per_million: float) -> float:
    """What `tokens` cost in a batch job at an interactive price of `per_million` USD per 1M tokens."""
    return tokens / 1_000_000 * per_million * BATCH_FACTOR


def usd(amount: float) -> str:
    """A dollar amount with enough digits to see small sums: $0.0123, $12.35."""
    if amount == 0:
        return "$0.00"
    return f"${amount:,.4f}" if abs(amount) < 1 else f"${amount:,.2f}"


def describe_table(table: dict[str, ModelPrice]) -> str:
    """The price table as help text: model, interactive input and output prices."""
    width = max(len(model) for model in table)
    lines = [f"prices as of {PRICES_AS_OF}, interactive USD per 1M tokens (batch pays 50%):",
             f"  {'model':<{width}}   input   output"]
    for model, price in table.items():
        lines.append(f"  {model:<{width}}  {price.input_per_million:>6.3f}  {price.output_per_million:>7.3f}")
    return "\n".join(lines)
