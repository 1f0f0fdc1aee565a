"""The estimate at batch prices and check_cost_limit, the check a run makes before it starts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from gembatch.core.config import ModelPrice, Settings
from gembatch.core.cost_estimate import check_cost_limit, estimate_cost
from gembatch.core.input_scan import ScannedFile, list_input_files, scan_file
from gembatch.core.model import BatchRecord


def _inputs(tmp_path: Path) -> tuple[Path, int]:
    """Two input files of 100 requests in all; returns the folder and the estimated input tokens."""
    lines = [json.dumps({"key": f"k{i}", "request": {"contents": [{"parts": [{"text": "w" * 400}]}]}})
             for i in range(100)]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(line + "\n" for line in lines[:60]), encoding="utf-8")
    (folder / "b.jsonl").write_text("".join(line + "\n" for line in lines[60:]), encoding="utf-8")
    return folder, sum(math.ceil(len(line.encode()) * 0.25) for line in lines)


def test_estimate_counts_files_requests_and_tokens(tmp_path: Path) -> None:
    input_dir, tokens = _inputs(tmp_path)
    scanned = [scan_file(p) for p in list_input_files(input_dir)]
    estimate = estimate_cost(scanned, Settings(output_tokens_per_request=200), "gemini-2.5-flash")
    assert (estimate.files, estimate.requests, estimate.input_tokens) == (2, 100, tokens)
    assert estimate.priced_as == "gemini-2.5-flash" and estimate.output_tokens == 100 * 200
    assert estimate.input_usd == pytest.approx(tokens / 1e6 * 0.30 * 0.5)
    assert estimate.output_usd == pytest.approx(20_000 / 1e6 * 2.50 * 0.5)
    unpriced = estimate_cost(scanned, Settings(), "no-such-model")
    assert unpriced.price is None and unpriced.total_usd is None and unpriced.to_json()["total_usd"] is None


def test_check_cost_limit(tmp_path: Path) -> None:
    input_dir, _ = _inputs(tmp_path)
    scanned = [scan_file(p) for p in list_input_files(input_dir)]
    assert all(isinstance(s, ScannedFile) for s in scanned)
    settings = Settings(model="gemini-2.5-pro")
    assert check_cost_limit(settings, scanned) is None  # no limit set
    settings.cost_limit_usd = 100.0
    assert check_cost_limit(settings, scanned) is None
    settings.cost_limit_usd = 0.01
    message = check_cost_limit(settings, scanned)
    assert message is not None
    assert "over the cost limit of $0.0100" in message and "100 requests" in message
    assert "nothing was submitted" in message
    # BatchRecords work as well (a resumed run has records, not scans)
    records = [BatchRecord("a", "a.jsonl", request_count=10, est_tokens=10_000_000)]
    assert check_cost_limit(Settings(cost_limit_usd=1.0), records) is not None
    assert check_cost_limit(Settings(cost_limit_usd=100.0), records) is None
    # a limit that cannot be checked refuses the run
    unknown = check_cost_limit(Settings(model="mystery", cost_limit_usd=100.0), records)
    assert unknown is not None and "no price is known for model mystery" in unknown
    priced = Settings(model="mystery", cost_limit_usd=100.0, prices={"mystery": ModelPrice(1.0, 1.0)})
    assert check_cost_limit(priced, records) is None
    assert estimate_cost(records, priced).total_usd == pytest.approx((10_000_000 + 10 * 1000) / 1e6 * 0.5)
