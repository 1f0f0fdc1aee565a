"""`gembatch-tui cost`: estimates at batch prices, the limit, the counts after a run (the estimate itself and
check_cost_limit: tests/test_cost_estimate.py; the price table: tests/test_pricing.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from gembatch.core.cli_args import resolve_settings
from gembatch.core.config import ConfigError, load_settings
from gembatch.core.gateway import Gateway
from gembatch.core.pricing import PRICES_AS_OF
from gembatch.core.workflow.cost import sample_requests

from .helpers import answer, error, request_line, run_cli, run_json, write_lines


def _inputs(tmp_path: Path) -> tuple[Path, int]:
    lines = [request_line(f"k{i}", "w" * 400) for i in range(100)]
    write_lines(tmp_path / "in" / "a.jsonl", lines[:60])
    write_lines(tmp_path / "in" / "b.jsonl", lines[60:])
    return tmp_path / "in", sum(math.ceil(len(line.encode()) * 0.25) for line in lines)


def test_estimate_at_batch_prices(tmp_path: Path, capsys) -> None:
    input_dir, tokens = _inputs(tmp_path)
    code, report = run_json(capsys, "cost", "--input", input_dir, "--model", "gemini-2.5-flash",
                            "--output-tokens-per-request", "200")
    assert code == 0
    est = report["estimate"]
    assert est["requests"] == 100 and est["files"] == 2 and est["input_tokens"] == tokens
    assert est["output_tokens"] == 100 * 200
    assert est["input_usd"] == pytest.approx(tokens / 1e6 * 0.30 * 0.5)
    assert est["output_usd"] == pytest.approx(20_000 / 1e6 * 2.50 * 0.5)
    assert report["prices_as_of"] == PRICES_AS_OF and "prices change" in report["note"]

    code, out, _ = run_cli(capsys, "cost", "--input", input_dir)
    assert code == 0
    assert "100 requests" in out and f"input tokens (estimated): {tokens:,}" in out
    assert "assumed 1,000 per request" in out and "batch pays 50%" in out
    assert f"as of {PRICES_AS_OF}" in out and "prices change" in out


def test_limit_usd_exits_4_when_over(tmp_path: Path, capsys) -> None:
    input_dir, _ = _inputs(tmp_path)
    # 100 requests x 1000 output tokens x 10 USD/1M x 50% = 0.50 USD of output alone on 2.5 Pro
    code, out, _ = run_cli(capsys, "cost", "--input", input_dir, "--model", "gemini-2.5-pro", "--limit-usd", "0.1")
    assert code == 4 and "OVER the limit (exit code 4)" in out
    code, out, _ = run_cli(capsys, "cost", "--input", input_dir, "--model", "gemini-2.5-pro", "--limit-usd", "5")
    assert code == 0 and "within the limit" in out
    code, report = run_json(capsys, "cost", "--input", input_dir, "--model", "gemini-2.5-pro", "--limit-usd", "0.1")
    assert code == 4 and report["over_limit"] is True


def test_prices_from_the_config_and_unknown_models(tmp_path: Path, capsys) -> None:
    input_dir, tokens = _inputs(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text('output_tokens_per_request = 0\n[prices."my-tuned-model"]\ninput = 2\noutput = 4\n'
                      '[prices."gemini-2.5-flash"]\ninput = 1.0\noutput = 1.0\n')
    code, report = run_json(capsys, "cost", "--input", input_dir, "--config", config, "--model", "my-tuned-model")
    assert code == 0
    assert report["estimate"]["total_usd"] == pytest.approx(tokens / 1e6 * 2 * 0.5)
    code, report = run_json(capsys, "cost", "--input", input_dir, "--config", config)
    assert report["estimate"]["price_per_million"]["input"] == 1.0  # the config overrides the built-in price
    code, _, err = run_cli(capsys, "cost", "--input", input_dir, "--model", "no-such-model")
    assert code == 2 and 'add [prices."no-such-model"]' in err


def test_cost_limit_setting_from_toml_and_flag(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    config = tmp_path / "c.toml"
    config.write_text("cost_limit_usd = 25.5\n")
    settings = resolve_settings(["--config", str(config), "--input", str(tmp_path / "in"), "--output", str(tmp_path)])
    assert settings.cost_limit_usd == 25.5
    settings = resolve_settings(["--config", str(config), "--input", str(tmp_path / "in"), "--output",
                                 str(tmp_path), "--cost-limit-usd", "3"])
    assert settings.cost_limit_usd == 3.0
    config.write_text("cost_limit_usd = 0\n")
    assert load_settings(config).cost_limit_usd is None
    with pytest.raises(ConfigError, match="--cost-limit-usd"):
        resolve_settings(["--input", str(tmp_path / "in"), "--output", str(tmp_path), "--cost-limit-usd", "-1"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[prices."m"]\ninput = 1\n', "c.toml:1: prices.m: missing 'output'"),
        ('[prices."m"]\ninput = 1\noutput = "x"\n', "prices.m: output: expected a number"),
        ('[prices."m"]\ninput = -1\noutput = 1\n', "prices.m: input: must be at least 0"),
        ('[prices."m"]\ninput = 1\noutput = 1\nbatch = 3\n', "prices.m: unknown key 'batch'"),
        ("[prices]\nm = 3\n", "c.toml:2: prices.m: expected a table"),
        ("prices = 3\n", "c.toml:1: prices: expected a table"),
    ],
)
def test_bad_price_tables_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert message in str(info.value)


def test_actual_cost_after_a_run(tmp_path: Path, capsys) -> None:
    write_lines(tmp_path / "out" / "a.results.jsonl", [
        answer("a1", prompt_tokens=1000, output_tokens=3000),
        answer("a2", prompt_tokens=1000, output_tokens=1000, model="gemini-2.5-pro"),
        error("a3"),
    ])
    write_lines(tmp_path / "retry" / "r.results.jsonl", [answer("a3", prompt_tokens=500, output_tokens=500)])
    code, report = run_json(capsys, "cost", "--output", tmp_path / "out", "--output", tmp_path / "retry")
    assert code == 0
    models = report["actual"]["models"]
    flash = models["gemini-2.5-flash"]
    assert flash["answered"] == 2 and flash["failed"] == 1
    assert flash["prompt_tokens"] == 1500 and flash["candidates_tokens"] == 3500
    assert flash["input_usd"] == pytest.approx(1500 / 1e6 * 0.30 * 0.5)
    assert flash["output_usd"] == pytest.approx(3500 / 1e6 * 2.50 * 0.5)
    pro = models["gemini-2.5-pro"]
    assert pro["input_usd"] == pytest.approx(1000 / 1e6 * 1.25 * 0.5)
    assert report["actual"]["total_usd"] == pytest.approx(
        flash["input_usd"] + flash["output_usd"] + pro["input_usd"] + pro["output_usd"])
    code, out, _ = run_cli(capsys, "cost", "--output", tmp_path / "out")
    assert code == 0 and "gemini-2.5-pro: 1 answered" in out


def test_usage_errors(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "cost")
    assert code == 2 and "give --input DIR" in err
    code, _, err = run_cli(capsys, "cost", "--output", tmp_path, "--limit-usd", "1")
    assert code == 2 and "--limit-usd" in err
    assert run_cli(capsys, "cost", "--input", tmp_path, "--limit-usd", "-3")[0] == 2
    code, _, err = run_cli(capsys, "cost", "--input", tmp_path / "nope")
    assert code == 2 and "folder not found" in err


# --- cost --count-tokens: the service's count on a sample, against the bytes estimate --------------------------


def _uniform_inputs(tmp_path: Path, sizes: dict[str, int], text: str) -> Path:
    for name, count in sizes.items():
        write_lines(tmp_path / "in" / f"{name}.jsonl", [request_line(f"{name}-{i:04d}", text) for i in range(count)])
    return tmp_path / "in"


def test_count_tokens_scales_a_sample_and_shows_how_far_the_estimate_is(tmp_path: Path, emulator, capsys) -> None:
    text = "word " * 60
    input_dir = _uniform_inputs(tmp_path, {"a": 40, "b": 7}, text)
    line_estimate = math.ceil(len(request_line("a-0000", text).encode()) * 0.25)
    per_request = math.ceil(len(text) / 4)  # the emulator's count: a quarter of the text's characters

    code, report = run_json(capsys, "cost", "--input", input_dir, "--count-tokens", "5",
                            "--base-url", emulator.base_url)

    assert code == 0
    counts = [e for e in emulator.journal() if e.kind == "models.countTokens"]
    assert len(counts) == 5 + 5
    tokens = report["token_count"]
    files = {Path(item["file"]).name: item for item in tokens["files"]}
    assert files["a.jsonl"]["sampled"] == 5 and files["a.jsonl"]["sample_counted_tokens"] == 5 * per_request
    assert files["a.jsonl"]["counted_tokens"] == 40 * per_request
    assert files["a.jsonl"]["estimated_tokens"] == 40 * line_estimate
    assert tokens["counted_tokens"] == 47 * per_request and tokens["estimated_tokens"] == 47 * line_estimate
    assert tokens["estimate_off_percent"] == round((line_estimate - per_request) / per_request * 100, 1)
    assert tokens["matching_tokens_per_byte"] == round(0.25 * per_request / line_estimate, 4)
    assert tokens["counted_total_usd"] == pytest.approx(
        47 * per_request / 1e6 * 0.30 * 0.5 + 47 * 1000 / 1e6 * 2.50 * 0.5)

    code, out, _ = run_cli(capsys, "cost", "--input", input_dir, "--count-tokens", "2", "--base-url",
                           emulator.base_url)
    assert code == 0
    assert f"a.jsonl: 2 of 40 requests counted: ~{40 * per_request:,} tokens" in out
    assert "high" in out and "tokens_per_byte = " in out


def test_count_tokens_sends_the_whole_request(tmp_path: Path, emulator, capsys,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A sampled request goes out whole (generateContentRequest), so a systemInstruction is counted too."""
    request = {"contents": [{"parts": [{"text": "hello there"}]}],
               "systemInstruction": {"parts": [{"text": "be brief"}]}, "generationConfig": {"temperature": 0.1}}
    write_lines(tmp_path / "in" / "a.jsonl", [json.dumps({"key": "k", "request": request})])
    seen: list[dict] = []
    original = Gateway.count_tokens

    async def spy(self: Gateway, request: dict, model: str | None = None) -> int:
        seen.append(request)
        return await original(self, request, model)

    monkeypatch.setattr(Gateway, "count_tokens", spy)
    code, report = run_json(capsys, "cost", "--input", tmp_path / "in", "--count-tokens", "3",
                            "--base-url", emulator.base_url)
    assert code == 0 and seen == [request]
    # the emulator counts the text of contents only: "hello there" is 11 characters
    assert report["token_count"]["counted_tokens"] == math.ceil(11 / 4)
    assert [e.kind for e in emulator.journal()].count("models.countTokens") == 1


def test_the_sample_is_spread_over_the_file(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.jsonl", [request_line(f"k{i}") for i in range(100)] + [""])
    picked = sample_requests(path, 100, 4)
    assert [json.loads(line)["key"] for line, _ in picked] == ["k12", "k37", "k62", "k87"]
    assert len(sample_requests(path, 100, 500)) == 100


def test_count_tokens_usage_errors(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_cli(capsys, "cost", "--output", tmp_path, "--count-tokens", "3")
    assert code == 2 and "--count-tokens counts the requests of an input folder" in err
    assert run_cli(capsys, "cost", "--input", tmp_path, "--count-tokens", "0")[0] == 2
    input_dir = _uniform_inputs(tmp_path, {"a": 2}, "hi")
    monkeypatch.delenv("GEMINI_API_KEY")
    code, _, err = run_cli(capsys, "cost", "--input", input_dir, "--count-tokens", "3")
    assert code == 2 and "no API key" in err
