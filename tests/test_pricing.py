"""The built-in price table and how a model name finds its price."""

from __future__ import annotations

from gembatch.core.pricing import DEFAULT_PRICES, batch_usd, find_price, usd


def test_model_names_find_their_price() -> None:
    flash = DEFAULT_PRICES["gemini-2.5-flash"]
    assert find_price("models/gemini-2.5-flash", DEFAULT_PRICES) == ("gemini-2.5-flash", flash)
    assert find_price("gemini-2.5-flash-lite-001", DEFAULT_PRICES)[0] == "gemini-2.5-flash-lite"
    assert find_price("gemini-2.5-flash-001", DEFAULT_PRICES)[0] == "gemini-2.5-flash"
    assert find_price("gemini-2.5-flashy", DEFAULT_PRICES) is None
    for name in ("gemini-3-pro-preview", "gemini-3-flash-preview", "gemini-2.5-pro", "gemini-2.5-flash",
                 "gemini-2.5-flash-lite", "gemini-2.0-flash", "gemini-2.0-flash-lite", "gemini-3-pro-image-preview"):
        assert name in DEFAULT_PRICES  # every model of the protocol doc's section 6


def test_batch_jobs_pay_half_and_small_sums_keep_their_digits() -> None:
    assert batch_usd(2_000_000, 0.30) == 0.30
    assert (usd(0), usd(0.0123), usd(12.345), usd(1234.5)) == ("$0.00", "$0.0123", "$12.35", "$1,234.50")
