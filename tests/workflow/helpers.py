"""Running subcommands in-process and building result folders by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from gembatch.core.workflow.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """Run `gembatch-tui ARGV` through the dispatcher; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, dict[str, Any]]:
    """Run with --json and parse what it printed."""
    code, out, err = run_cli(capsys, *argv, "--json")
    assert out.strip(), err
    return code, json.loads(out)


def request_line(key: str, text: str | None = None) -> str:
    return json.dumps({"key": key, "request": {"contents": [{"parts": [{"text": text or f"question {key}"}]}]}})


def answer(key: str, text: str = "ok", prompt_tokens: int = 3, output_tokens: int = 5,
           model: str = "gemini-2.5-flash", finish: str = "STOP") -> str:
    return json.dumps({"key": key, "response": {
        "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": finish}],
        "usageMetadata": {"promptTokenCount": prompt_tokens, "candidatesTokenCount": output_tokens,
                          "totalTokenCount": prompt_tokens + output_tokens},
        "modelVersion": model}})


def error(key: str, code: int = 3, message: str = "Request contains an invalid argument.") -> str:
    return json.dumps({"key": key, "error": {"code": code, "message": message}})


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def upload_active(client: Any, file: Any, config: dict[str, Any], timeout: float = 10.0) -> Any:
    """Upload through the SDK and wait until the file is ACTIVE, as a careful hand-written script does (the
    service keeps new uploads PROCESSING for a while and refuses a create that names one)."""
    import time

    uploaded = client.files.upload(file=file, config=config)
    deadline = time.monotonic() + timeout
    while uploaded.state is not None and uploaded.state.name == "PROCESSING":
        if time.monotonic() > deadline:
            raise AssertionError(f"{uploaded.name} still PROCESSING after {timeout}s")
        time.sleep(0.05)
        uploaded = client.files.get(name=uploaded.name)
    return uploaded
