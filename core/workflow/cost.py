"""`gembatch-tui cost`: requests, tokens and cost at batch prices, estimated before a run and counted after it.

The estimate itself and the check a run makes before it starts are core/cost_estimate.py; the prices are
core/pricing.py. This module holds the subcommand's arguments, the counts after a run and the report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..config import ModelPrice, Settings
from ..cost_estimate import CostEstimate, estimate_cost
from ..input_scan import Rejection, ScannedFile, list_input_files, scan_file
from ..pricing import DEFAULT_PRICES, PRICE_NOTE, PRICES_AS_OF, batch_usd, describe_table, find_price, price_table, usd
from ..redact import MISSING_KEY_MESSAGE, api_key_from_env
from .common import (
    EXIT_OK,
    EXIT_OVER_LIMIT,
    WorkflowError,
    add_config_flag,
    existing_dir,
    load_config,
    non_negative_float,
    parser_for,
    positive_int,
    print_json,
)
from .resultset import result_files


@dataclass(frozen=True)
class _Counted:
    """A file's requests with the service's (scaled) token count, to price them like a SizedBatch."""

    request_count: int
    est_tokens: int


# --- after a run: the token counts the results report --------------------------------------------


@dataclass
class Usage:
    """Token counts summed over result lines (usageMetadata), for one model."""

    answered: int = 0
    failed: int = 0
    without_usage: int = 0
    prompt: int = 0
    tool_prompt: int = 0
    cached: int = 0
    candidates: int = 0
    thoughts: int = 0
    total: int = 0

    def add(self, meta: dict[str, Any]) -> None:
        def number(name: str) -> int:
            value = meta.get(name, 0)
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        self.prompt += number("promptTokenCount")
        self.tool_prompt += number("toolUsePromptTokenCount")
        self.cached += number("cachedContentTokenCount")
        self.candidates += number("candidatesTokenCount")
        self.thoughts += number("thoughtsTokenCount")
        self.total += number("totalTokenCount")

    @property
    def input_tokens(self) -> int:
        return self.prompt + self.tool_prompt

    @property
    def output_tokens(self) -> int:
        return self.candidates + self.thoughts  # thinking tokens are billed as output


@dataclass
class ActualCost:
    """Usage by model (the response's modelVersion when a price is known for it, else the given model)."""

    files: int = 0
    by_model: dict[str, Usage] = field(default_factory=dict)
    prices: dict[str, ModelPrice | None] = field(default_factory=dict)

    def usd(self, model: str) -> tuple[float, float] | None:
        price = self.prices.get(model)
        if price is None:
            return None
        usage = self.by_model[model]
        return (batch_usd(usage.input_tokens, price.input_per_million),
                batch_usd(usage.output_tokens, price.output_per_million))

    @property
    def total_usd(self) -> float | None:
        total = 0.0
        for model in self.by_model:
            parts = self.usd(model)
            if parts is None:
                return None
            total += sum(parts)
        return total

    def to_json(self) -> dict[str, Any]:
        models = {}
        for model, usage in self.by_model.items():
            parts = self.usd(model)
            models[model] = {
                "answered": usage.answered, "failed": usage.failed, "without_usage": usage.without_usage,
                "prompt_tokens": usage.prompt, "tool_use_prompt_tokens": usage.tool_prompt,
                "cached_tokens": usage.cached, "candidates_tokens": usage.candidates,
                "thoughts_tokens": usage.thoughts, "total_tokens": usage.total,
                "input_usd": parts[0] if parts else None, "output_usd": parts[1] if parts else None,
            }
        return {"result_files": self.files, "models": models, "total_usd": self.total_usd}


def actual_cost(folders: list[Path], settings: Settings, model: str | None = None) -> ActualCost:
    """Sum the usageMetadata of every `*.results.jsonl` in the folders."""
    table = price_table(settings)
    fallback = model or settings.model
    report = ActualCost()
    for folder in folders:
        for path in result_files(folder):
            report.files += 1
            with path.open("rb") as handle:
                for raw in handle:
                    if raw.strip():
                        _count_line(raw, report, table, fallback)
    return report


def _count_line(raw: bytes, report: ActualCost, table: dict[str, ModelPrice], fallback: str) -> None:
    try:
        item = json.loads(raw)
    except ValueError:
        return
    if not isinstance(item, dict):
        return
    response = item.get("response")
    version = response.get("modelVersion") if isinstance(response, dict) else None
    found = find_price(version, table) if isinstance(version, str) and version else None
    name = version if found and isinstance(version, str) else fallback
    usage = report.by_model.get(name)
    if usage is None:
        usage = report.by_model[name] = Usage()
        priced = found or find_price(name, table)
        report.prices[name] = priced[1] if priced else None
    if "error" in item:
        usage.failed += 1
        return
    usage.answered += 1
    meta = response.get("usageMetadata") if isinstance(response, dict) else None
    if isinstance(meta, dict):
        usage.add(meta)
    else:
        usage.without_usage += 1


# --- the service's own count: countTokens on a sample of each file ---------------------------------


@runtime_checkable
class TokenCounter(Protocol):
    """What the sample needs of a backend (the Gemini one, core/gateway.py, can count tokens)."""

    async def count_tokens(self, request: dict[str, Any], model: str | None = None) -> int: ...


@dataclass(frozen=True)
class TokenSample:
    """countTokens of a sample of one file's requests, next to the estimate (bytes x tokens_per_byte)."""

    path: Path
    requests: int
    estimated: int  # the whole file's estimate
    sampled: int
    sample_estimated: int  # the estimate of the sampled lines
    sample_counted: int  # what countTokens answered for them

    @property
    def counted(self) -> int:
        """The file's count, scaled from the sample by the ratio counted/estimated."""
        if self.sample_estimated == 0:
            return 0
        return round(self.estimated * self.sample_counted / self.sample_estimated)

    def to_json(self) -> dict[str, Any]:
        return {"file": str(self.path), "requests": self.requests, "sampled": self.sampled,
                "sample_estimated_tokens": self.sample_estimated, "sample_counted_tokens": self.sample_counted,
                "estimated_tokens": self.estimated, "counted_tokens": self.counted,
                "estimate_off_percent": off_percent(self.estimated, self.counted)}


def off_percent(estimated: int, counted: int) -> float | None:
    """How far the estimate is from the count, in percent of the count (positive: the estimate is high)."""
    return None if counted == 0 else round((estimated - counted) / counted * 100, 1)


def sample_requests(path: Path, request_count: int, size: int) -> list[tuple[bytes, dict[str, Any]]]:
    """`size` request lines spread evenly over the file (all of them when it has no more), as (line, request)."""
    wanted = ({(2 * i + 1) * request_count // (2 * size) for i in range(size)} if size < request_count
              else set(range(request_count)))
    picked: list[tuple[bytes, dict[str, Any]]] = []
    index = 0
    with path.open("rb") as stream:
        for raw in stream:
            body = raw.rstrip(b"\r\n")
            if not body.strip():
                continue
            if index in wanted:
                picked.append((body, json.loads(body)["request"]))
            index += 1
    return picked


async def count_sample(counter: TokenCounter, batch: ScannedFile, size: int, tokens_per_byte: float,
                       model: str | None = None, concurrency: int = 4) -> TokenSample:
    """countTokens of `size` requests of one scanned file (a few calls at a time), scaled to the file."""
    picked = await asyncio.to_thread(sample_requests, batch.path, batch.request_count, size)
    gate = asyncio.Semaphore(concurrency)

    async def one(request: dict[str, Any]) -> int:
        async with gate:
            return await counter.count_tokens(request, model)

    counts = await asyncio.gather(*(one(request) for _, request in picked))
    return TokenSample(batch.path, batch.request_count, batch.est_tokens, len(picked),
                       sum(math.ceil(len(body) * tokens_per_byte) for body, _ in picked), sum(counts))


async def _count_all(scanned: list[ScannedFile], settings: Settings, args: argparse.Namespace,
                     api_key: str) -> list[TokenSample]:
    from ..backend import GatewayError
    from .common import open_backend

    model = args.model or settings.model
    gateway = open_backend(settings, api_key, model=model, base_url=args.base_url)
    if not isinstance(gateway, TokenCounter):
        await gateway.aclose()
        raise WorkflowError(f"countTokens: the {settings.backend} backend cannot count tokens")
    try:
        return [await count_sample(gateway, batch, args.count_tokens, settings.tokens_per_byte)
                for batch in scanned]
    except GatewayError as exc:
        raise WorkflowError(f"countTokens with model {model}: {exc}") from None
    finally:
        await gateway.aclose()


def _token_report(samples: list[TokenSample], settings: Settings, model: str, size: int) -> dict[str, Any]:
    estimated = sum(s.estimated for s in samples)
    counted = sum(s.counted for s in samples)
    matching = None if estimated == 0 else round(settings.tokens_per_byte * counted / estimated, 4)
    return {"model": model, "sample_per_file": size, "files": [s.to_json() for s in samples],
            "estimated_tokens": estimated, "counted_tokens": counted,
            "estimate_off_percent": off_percent(estimated, counted), "tokens_per_byte": settings.tokens_per_byte,
            "matching_tokens_per_byte": matching}


def _print_token_report(report: dict[str, Any], counted_cost: CostEstimate | None) -> None:
    print(f"token counts from the service (countTokens, model {report['model']}) on up to "
          f"{report['sample_per_file']} requests per file, scaled to the file:")
    for item in report["files"]:
        print(f"  {item['file']}: {item['sampled']} of {item['requests']:,} requests counted: "
              f"~{item['counted_tokens']:,} tokens; the estimate {item['estimated_tokens']:,} is "
              f"{_how_far(item['estimate_off_percent'])}")
    print(f"  all files: ~{report['counted_tokens']:,} tokens; the estimate (bytes x {report['tokens_per_byte']:g}) "
          f"{report['estimated_tokens']:,} is {_how_far(report['estimate_off_percent'])}")
    if report["matching_tokens_per_byte"]:
        print(f"  tokens_per_byte = {report['matching_tokens_per_byte']:g} in the config would make the estimate "
              "(and the admission's enqueued-token budget) match the service's count")
    if counted_cost is not None and counted_cost.total_usd is not None:
        print(f"  estimated cost with the counted input tokens: {usd(counted_cost.total_usd)}")


def _how_far(percent: float | None) -> str:
    if percent is None:
        return "not comparable (the service counted 0 tokens)"
    if percent == 0:
        return "the same"
    return f"{abs(percent):g}% {'high' if percent > 0 else 'low'}"


# --- the subcommand -------------------------------------------------------------------------------

DESCRIPTION = f"""\
Before a run (--input DIR): the requests, the estimated input tokens (the engine's estimate: bytes of each
request line x tokens_per_byte, default 0.25) and the estimated cost at batch prices (50% of the
interactive price), assuming a number of output tokens per request (output_tokens_per_request in the
config, default 1000, or --output-tokens-per-request; thinking tokens count as output). With --limit-usd
it exits with code 4 when the estimate is over the limit, so a script can stop before it pays.

With --count-tokens N, the service's own count (countTokens, free of charge, needs an API key) of N
requests per input file, spread over the file and scaled to it, and how far the bytes estimate is from
it, with the tokens_per_byte that would match (set it in the config: the admission's enqueued-token
budget uses the same estimate).

After a run (--output DIR, may be repeated, e.g. with a retry run's output folder): the token counts the
result lines report (usageMetadata) and their cost at batch prices, per model.

Prices: built-in defaults as of {PRICES_AS_OF} (below), overridden by a [prices] table in the config file:
  [prices."gemini-2.5-flash"]
  input = 0.30     # interactive USD per 1M input tokens
  output = 2.50    # interactive USD per 1M output tokens
Prices change; these are estimates, not a bill. Cached and long-context (over 200k) prompts, audio and
image tokens are priced as plain text here.

A run can refuse to start over a limit too: cost_limit_usd in the config or --cost-limit-usd on the main
command."""

EPILOG = f"""\
{describe_table(DEFAULT_PRICES)}

example:
  gembatch-tui cost --input batches --model gemini-2.5-flash --limit-usd 50
  gembatch-tui cost --output results --output results/retry/results
  gembatch-tui cost --input batches --count-tokens 20

exit codes:
  0  done (and the estimate is within --limit-usd, when given)
  4  the estimate is over --limit-usd
  2  bad usage, or no price known for the model"""


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("cost", DESCRIPTION, EPILOG)
    parser.add_argument("--input", metavar="DIR", type=Path, help="estimate the cost of this input folder")
    parser.add_argument("--output", metavar="DIR", type=Path, action="append", default=[],
                        help="count the tokens the results in this folder report (may be repeated)")
    parser.add_argument("--model", metavar="NAME", help="model to price (default: the config's model)")
    parser.add_argument("--limit-usd", metavar="X", type=non_negative_float,
                        help="exit with code 4 when the estimate is over X US dollars (needs --input)")
    parser.add_argument("--output-tokens-per-request", metavar="N", type=int,
                        help="output tokens assumed per request (default: the config's, else 1000)")
    parser.add_argument("--count-tokens", metavar="N", type=positive_int,
                        help="ask the service (countTokens) for the tokens of N requests per input file, spread "
                             "over the file, scale to the file and show how far the bytes estimate is (needs "
                             "--input and an API key; N calls per file, free of charge)")
    parser.add_argument("--base-url", metavar="URL",
                        help="API endpoint for --count-tokens instead of Google's (default: base_url of the config)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    add_config_flag(parser)
    return parser


def _scan(input_dir: Path, settings: Settings) -> tuple[list[ScannedFile], list[Rejection]]:
    scanned: list[ScannedFile] = []
    rejected: list[Rejection] = []
    for path in list_input_files(input_dir):
        result = scan_file(path, settings.tokens_per_byte, settings.request_check, settings.job_kind)
        (rejected if isinstance(result, Rejection) else scanned).append(result)  # type: ignore[arg-type]
    return scanned, rejected


def _print_estimate(estimate: CostEstimate, rejected: list[Rejection], input_dir: Path) -> None:
    print(f"before the run: {estimate.files} input file(s) in {input_dir}, {estimate.requests:,} requests")
    for rejection in rejected:
        print(f"  not counted (the run would reject it): {rejection}")
    print(f"  input tokens (estimated): {estimate.input_tokens:,}")
    print(f"  output tokens (assumed {estimate.output_tokens_per_request:,} per request): {estimate.output_tokens:,}")
    if estimate.price is None:
        print(f"  no price known for model {estimate.model}")
        return
    alias = f" (priced as {estimate.priced_as})" if estimate.priced_as != estimate.model else ""
    print(f"  model {estimate.model}{alias}: {estimate.price.input_per_million:g} input, "
          f"{estimate.price.output_per_million:g} output USD per 1M tokens interactive; batch pays 50%")
    assert estimate.input_usd is not None and estimate.output_usd is not None and estimate.total_usd is not None
    print(f"  estimated cost at batch prices: {usd(estimate.input_usd)} input + {usd(estimate.output_usd)} "
          f"output = {usd(estimate.total_usd)}")


def _print_actual(actual: ActualCost, folders: list[Path]) -> None:
    print(f"after the run: {actual.files} result file(s) in {', '.join(str(f) for f in folders)}")
    for model, usage in actual.by_model.items():
        print(f"  {model}: {usage.answered:,} answered, {usage.failed:,} failed")
        print(f"    input tokens {usage.input_tokens:,} (prompt {usage.prompt:,}, cached {usage.cached:,}); "
              f"output tokens {usage.output_tokens:,} (answers {usage.candidates:,}, thinking {usage.thoughts:,})")
        if usage.without_usage:
            print(f"    {usage.without_usage:,} answer(s) carry no usageMetadata")
        parts = actual.usd(model)
        if parts is None:
            print(f"    no price known for {model}")
        else:
            print(f"    cost at batch prices: {usd(parts[0])} input + {usd(parts[1])} output = {usd(sum(parts))}")
    total = actual.total_usd
    if total is not None and len(actual.by_model) > 1:
        print(f"  total: {usd(total)}")


def run(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    if args.input is None and not args.output:
        raise WorkflowError("give --input DIR (an estimate before a run), --output DIR (the counts after it), or both")
    if args.limit_usd is not None and args.input is None:
        raise WorkflowError("--limit-usd applies to the estimate of an input folder: give --input DIR")
    if args.count_tokens is not None and args.input is None:
        raise WorkflowError("--count-tokens counts the requests of an input folder: give --input DIR")
    if args.base_url is not None and not args.base_url.startswith(("http://", "https://")):
        raise WorkflowError(f"--base-url: expected an http:// or https:// URL, got {args.base_url!r}")
    if args.output_tokens_per_request is not None:
        if args.output_tokens_per_request < 0:
            raise WorkflowError(f"--output-tokens-per-request: must be 0 or more, got {args.output_tokens_per_request}")
        settings.output_tokens_per_request = args.output_tokens_per_request
    estimate = rejected = None
    tokens: dict[str, Any] | None = None
    counted_cost: CostEstimate | None = None
    if args.input is not None:
        existing_dir(args.input, "--input")
        scanned, rejected = _scan(args.input, settings)
        estimate = estimate_cost(scanned, settings, args.model)
        if estimate.price is None:
            raise WorkflowError(f"no price known for model {estimate.model}: add [prices.\"{estimate.model}\"] with "
                                "input and output (interactive USD per 1M tokens) to the config file")
        if args.count_tokens is not None:
            api_key = api_key_from_env()
            if api_key is None:
                raise WorkflowError(f"--count-tokens asks the service: {MISSING_KEY_MESSAGE}")
            samples = asyncio.run(_count_all(scanned, settings, args, api_key))
            tokens = _token_report(samples, settings, estimate.model, args.count_tokens)
            counted_cost = estimate_cost([_Counted(s.requests, s.counted) for s in samples], settings, args.model)
            tokens["counted_total_usd"] = counted_cost.total_usd
    for folder in args.output:
        existing_dir(folder, "--output")
    actual = actual_cost(args.output, settings, args.model) if args.output else None
    over = (estimate is not None and args.limit_usd is not None and estimate.total_usd is not None
            and estimate.total_usd > args.limit_usd)
    if args.json:
        print_json({
            "estimate": estimate.to_json() if estimate else None,
            "rejected": [str(r) for r in rejected or []],
            "actual": actual.to_json() if actual else None,
            "token_count": tokens,
            "limit_usd": args.limit_usd, "over_limit": over,
            "prices_as_of": PRICES_AS_OF, "note": PRICE_NOTE,
        })
    else:
        if estimate is not None:
            _print_estimate(estimate, rejected or [], args.input)
        if tokens is not None:
            _print_token_report(tokens, counted_cost)
        if actual is not None:
            _print_actual(actual, args.output)
        print(f"note: {PRICE_NOTE}")
        if args.limit_usd is not None and estimate is not None and estimate.total_usd is not None:
            verdict = "OVER the limit (exit code 4)" if over else "within the limit"
            print(f"limit {usd(args.limit_usd)}: the estimate {usd(estimate.total_usd)} is {verdict}")
    return EXIT_OVER_LIMIT if over else EXIT_OK
