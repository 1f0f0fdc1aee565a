"""`gembatch-tui lint` and core.request_check: the lint corpus, --fix, and the run's refusal of bad requests."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from gembatch.core.cli_args import resolve_settings
from gembatch.core.config import ConfigError, load_settings
from gembatch.core.input_scan import Rejection, ScannedFile, scan_file
from gembatch.core.model import Stage
from gembatch.core.request_check import GenerationConfigBody, RequestBody, check_request, is_plainly_valid
from gembatch.core.workflow import lint
from google.genai import models

from ..engine.helpers import engine_settings, run_engine
from .helpers import request_line, run_cli, run_json, write_lines

CORPUS = Path(__file__).parent / "lint_corpus"

# Each kind of mistake in the corpus: (field, severity, fixable, words of the message), per line.
EXPECTED: dict[str, list[tuple[int, str, str, bool, str]]] = {
    "snake_case_names": [
        (1, "request.generation_config", "warning", True, "the API expects `generationConfig`"),
        (1, "request.generationConfig.max_output_tokens", "warning", True, "the API expects `maxOutputTokens`"),
        (2, "request.generationConfig.response_mime_type", "warning", True, "expects `responseMimeType`"),
        (2, "request.generationConfig.response_schema", "warning", True, "expects `responseSchema`"),
        (3, "request.system_instruction", "warning", True, "expects `systemInstruction`"),
        (3, "request.safety_settings", "warning", True, "expects `safetySettings`"),
    ],
    "thinking_config_outside": [
        (1, "request.thinking_config", "error", True, "inside `generationConfig`"),
        (1, "request.generationConfig.thinkingConfig.thinking_budget", "warning", True, "expects `thinkingBudget`"),
        (2, "request.thinkingConfig", "error", True, "inside `generationConfig`"),
    ],
    "generation_setting_at_top": [
        (1, "request.temperature", "error", True, "inside `generationConfig`"),
        (1, "request.response_schema", "error", True, "inside `generationConfig`"),
    ],
    "system_instruction_in_generation_config": [
        (1, "request.generationConfig.system_instruction", "error", True, "belongs at the top of the request"),
        (2, "request.generationConfig.systemInstruction", "error", True, "belongs at the top of the request"),
        (2, "request.systemInstruction", "error", True, "a plain string where the API expects a Content"),
        (2, "request.generationConfig.tools", "error", True, "belongs at the top of the request"),
    ],
    "system_instruction_string": [
        (1, "request.systemInstruction", "error", True, "a plain string where the API expects a Content"),
    ],
    "contents_string": [
        (1, "request.contents", "error", True, "must be a list of Content objects, got a string"),
        (2, "request.contents", "error", True, "must be a list of Content objects, got one object"),
    ],
    "parts_as_strings": [
        (1, "request.contents[0].parts[0]", "error", True, "a plain string where the API expects a Part"),
    ],
    "sdk_config": [
        (1, "request.config", "error", True, "`config` is the SDK's parameter"),
        (1, "request.systemInstruction", "error", True, "a plain string where the API expects a Content"),
        (1, "request.generationConfig.thinkingConfig.include_thoughts", "warning", True, "expects `includeThoughts`"),
    ],
    "unknown_fields": [
        (1, "request.generatoinConfig", "error", False, "not a field of the request"),
        (2, "request.prompt", "error", False, "not a field of the request"),
        (3, "request.config", "error", False, "'http_options' have no place in the API request"),
    ],
    "wrong_types": [
        (1, "request.generationConfig.maxOutputTokens", "error", False, "valid integer"),
        (1, "request.generationConfig.temperature", "error", False, "valid number"),
        (2, "request.contents[0].parts[0].text", "error", False, "valid string"),
        (3, "request.safetySettings", "error", True, "must be a list of SafetySetting objects, got one object"),
        (4, "request.safetySettings[0].threshold", "error", False, "`BLOCK_NOTHING` is not a HarmBlockThreshold"),
    ],
    "duplicate_fields": [
        (1, "request.generation_config", "error", False, "the same field given twice"),
    ],
    "no_contents": [
        (1, "request", "error", False, "no `contents`"),
        (2, "request.contents", "error", False, "empty"),
    ],
}


def test_the_corpus_has_a_file_for_each_kind_of_mistake() -> None:
    assert sorted(p.stem for p in (CORPUS / "mistakes").glob("*.jsonl")) == sorted(EXPECTED)
    assert sorted(p.name for p in (CORPUS / "fixed").glob("*.jsonl")) == sorted(
        p.name for p in (CORPUS / "mistakes").glob("*.jsonl"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_mistake_is_reported_with_file_line_field_and_fix(name: str, capsys) -> None:
    path = CORPUS / "mistakes" / f"{name}.jsonl"
    code, report = run_json(capsys, "lint", path)
    found = [(p["line"], p["field"], p["severity"], p["fixable"]) for p in report["problems"]]
    assert found == [(line, where, severity, fixable) for line, where, severity, fixable, _ in EXPECTED[name]]
    for problem, (*_, words) in zip(report["problems"], EXPECTED[name], strict=True):
        assert words in problem["message"] + problem["fix"], problem
        assert problem["file"] == str(path) and problem["fix"]
    has_errors = any(severity == "error" for _, _, severity, _, _ in EXPECTED[name])
    assert code == (3 if has_errors else 0)
    code, out, _ = run_cli(capsys, "lint", path)
    first = EXPECTED[name][0]
    assert f"{path}:{first[0]}: {first[2]}: {first[1]}: " in out and "; fix: " in out


def test_the_fix_says_what_the_api_expects(capsys) -> None:
    _, out, _ = run_cli(capsys, "lint", CORPUS / "mistakes" / "snake_case_names.jsonl")
    assert ("`generation_config` is the SDK's name; the API expects `generationConfig`; "
            'fix: rename it to "generationConfig"') in out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fix_turns_each_mistake_into_its_corrected_form(name: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / f"{name}.jsonl"
    shutil.copyfile(CORPUS / "mistakes" / path.name, path)
    code, report = run_json(capsys, "lint", path, "--fix")
    assert path.read_bytes() == (CORPUS / "fixed" / path.name).read_bytes()
    unfixable = [e for e in EXPECTED[name] if not e[3]]
    assert code == (3 if any(e[2] == "error" for e in unfixable) else 0)
    assert report["summary"]["fixed"] == len(EXPECTED[name]) - len(unfixable)
    # what is left after --fix is exactly what could not be fixed
    _, again = run_json(capsys, "lint", path)
    assert [(p["line"], p["field"]) for p in again["problems"]] == [(e[0], e[1]) for e in unfixable]


def test_valid_requests_are_not_flagged(capsys) -> None:
    code, report = run_json(capsys, "lint", CORPUS / "valid")
    assert (code, report["problems"]) == (0, [])
    # the protocol document's own example lines (section 4.1): accepted; snake_case is only a warning
    line1 = {"contents": [{"parts": [{"text": "Describe the process of photosynthesis."}]}],
             "generation_config": {"temperature": 0.7}}
    line2 = {"contents": [{"parts": [{"text": "What are the main ingredients in a Margherita pizza?"}]}]}
    assert check_request(line1).errors == [] and [p.severity for p in check_request(line1).problems] == ["warning"]
    assert check_request(line2).problems == []


def test_the_quick_path_never_passes_what_the_sdk_types_refuse() -> None:
    """Every corpus request the fast path passes has no problem when validated with the SDK's models."""
    passed = 0
    for path in CORPUS.rglob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            request = json.loads(line)["request"]
            if is_plainly_valid(request):
                passed += 1
                assert check_request(request, quick=False).problems == [], line
            else:
                assert check_request(request).problems == check_request(request, quick=False).problems
            if is_plainly_valid(request, sdk_names=True):  # the run's check, which wants errors only
                assert check_request(request, quick=False).errors == [], line
            else:
                assert check_request(request, errors_only=True).errors == check_request(request, quick=False).errors
    assert passed >= 8  # the valid corpus and the fixed lines take the fast path


def test_snake_case_lines_take_the_quick_path_when_only_errors_count() -> None:
    snake = {"contents": [{"parts": [{"text": "x"}]}], "generation_config": {"max_output_tokens": 10},
             "system_instruction": {"parts": [{"text": "be brief"}]}}
    assert not is_plainly_valid(snake) and is_plainly_valid(snake, sdk_names=True)
    assert check_request(snake, errors_only=True).problems == []
    assert [p.severity for p in check_request(snake).problems] == ["warning"] * 3
    both = {**snake, "generationConfig": {"temperature": 1}}
    assert not is_plainly_valid(both, sdk_names=True)
    assert [p.where for p in check_request(both, errors_only=True).errors] == ["request.generation_config"]


def test_the_request_body_holds_every_field_the_sdk_sends() -> None:
    """RequestBody and GenerationConfigBody have every field the SDK's converter puts in the REST body."""
    source = inspect.getsource(models._GenerateContentConfig_to_mldev)
    top = set(re.findall(r"setv\(\s*parent_object,\s*\['(\w+)'\]", source))
    generation = set(re.findall(r"setv\(\s*to_object,\s*\['(\w+)'\]", source))
    assert {"systemInstruction", "tools", "safetySettings", "toolConfig", "cachedContent"} <= top
    assert {"temperature", "thinkingConfig", "responseSchema", "maxOutputTokens"} <= generation
    body = {info.alias for info in RequestBody.model_fields.values()}
    gen = {info.alias for info in GenerationConfigBody.model_fields.values()}
    assert top <= body
    assert generation <= gen


def test_unchanged_lines_keep_their_exact_bytes(tmp_path: Path, capsys) -> None:
    odd = [
        b'{"key":"a","request":{"contents":[{"parts":[{"text":"caf\\u00e9 \\ud83d\\ude00"}]}]}}\r\n',
        b'  {"key": "b" ,  "request" : {"contents": [{"parts": [{"text": "spaced   out"}]}]} }\n',
        b"\n",
        b'{"key": "c", "request": {"contents": "fix me", "generation_config": {"temperature": 0.5}}}\n',
        b'{"key": "d", "request": {"contents": [{"parts": [{"text": "unknown field stays"}]}], "foo": 1}}\n',
        b'{"key": "e", "request": {"contents": [{"parts": [{"text": "\xc3\xa9t\xc3\xa9, no final newline"}]}]}}',
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"".join(odd))
    os.chmod(path, 0o640)
    code, report = run_json(capsys, "lint", path, "--fix")
    assert code == 3  # `foo` cannot be fixed
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == len(odd)
    for index, (before, after) in enumerate(zip(odd, lines, strict=True)):
        if index == 3:
            assert after == (b'{"key": "c", "request": {"contents": [{"role": "user", "parts": [{"text": "fix me"}]}], '
                             b'"generationConfig": {"temperature": 0.5}}}\n')
        else:
            assert after == before
    assert report["summary"]["fixed_lines"] == 1
    assert (path.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["mixed.jsonl"]  # no temporary file left


def test_a_failed_rename_leaves_the_file_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.jsonl"
    original = b'{"key": "a", "request": {"contents": "fix me"}}\n'
    path.write_bytes(original)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)  # the rename of the durable write (core/durable.py)
    with pytest.raises(OSError):
        lint.check_file(path, fix=True)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["a.jsonl"]



def test_a_fix_whose_folder_fsync_fails_is_a_message_naming_the_file(tmp_path: Path, folder_fsync_fails: None,
                                                                       capsys) -> None:
    path = tmp_path / "in" / "a.jsonl"
    path.parent.mkdir()
    path.write_bytes(b'{"key": "a", "request": {"contents": "fix me"}}\n')
    code, out, err = run_cli(capsys, "lint", "--fix", path.parent)
    assert code == 2
    assert err == f"gembatch-tui lint: {path}: Input/output error; lint stopped at this file\n"
    assert out == ""  # no report of a run that stopped


def test_lint_reports_shape_problems_too(tmp_path: Path, capsys) -> None:
    path = write_lines(tmp_path / "in" / "a.jsonl", [
        request_line("k1"), "not json", request_line("k1"), '{"key": "k3"}', '{"request": {"contents": []}}'])
    code, report = run_json(capsys, "lint", tmp_path / "in")
    assert code == 3
    found = [(p["line"], p["field"], p["message"].split(" (")[0]) for p in report["problems"]]
    assert found == [
        (2, "line", "bad JSON: Expecting value"),
        (3, "key", "duplicate key 'k1'"),
        (4, "request", "missing 'request'"),
        (5, "key", "missing 'key'"),
        (5, "request.contents", "empty: the request has nothing to send"),
    ]
    assert path.exists()


def test_exit_codes(tmp_path: Path, capsys) -> None:
    good = write_lines(tmp_path / "good" / "a.jsonl", [request_line("k1"), request_line("k2")])
    assert run_cli(capsys, "lint", good)[0] == 0
    assert run_cli(capsys, "lint", good.parent)[0] == 0
    assert run_cli(capsys, "lint", CORPUS / "mistakes")[0] == 3
    code, _, err = run_cli(capsys, "lint", tmp_path / "missing.jsonl")
    assert code == 2 and "missing.jsonl: no such file or folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "lint", tmp_path / "empty")
    assert code == 2 and "no *.jsonl input files" in err
    assert run_cli(capsys, "lint")[0] == 2
    assert run_cli(capsys, "lint", good, "--frobnicate")[0] == 2


def test_json_summary_counts(capsys) -> None:
    code, report = run_json(capsys, "lint", CORPUS / "mistakes")
    expected = [e for kind in EXPECTED.values() for e in kind]
    assert code == 3
    assert report["summary"]["files"] == len(EXPECTED)
    assert report["summary"]["errors"] == sum(e[2] == "error" for e in expected)
    assert report["summary"]["warnings"] == sum(e[2] == "warning" for e in expected)
    assert report["summary"]["fixable"] == sum(e[3] for e in expected)
    assert report["summary"]["fixed"] == 0


# --- the run: a file with requests the API would refuse is rejected like bad JSON -----------------------------


def _bad_request_file(folder: Path) -> Path:
    return write_lines(folder / "bad_request.jsonl", [
        request_line("k1"),
        json.dumps({"key": "k2", "request": {"contents": [{"parts": [{"text": "hi"}]}],
                                            "thinking_config": {"thinking_budget": 0}}}),
    ])


def test_scan_refuses_a_request_the_api_would_refuse(tmp_path: Path) -> None:
    path = _bad_request_file(tmp_path)
    refused = scan_file(path)
    assert isinstance(refused, Rejection) and refused.line == 2
    text = str(refused)
    assert text.startswith(f"{path}:2: the API would refuse this request: request.thinking_config: ")
    assert 'move it into "generationConfig" as "thinkingConfig"' in text
    assert "gembatch-tui lint" in text and 'request_check = "warn"' in text


def test_scan_names_a_bad_json_line_before_a_refused_request(tmp_path: Path) -> None:
    path = _bad_request_file(tmp_path)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("{oops\n")
    refused = scan_file(path)
    assert isinstance(refused, Rejection) and refused.line == 3 and "bad JSON" in refused.reason


def test_warn_and_off_let_the_file_through(tmp_path: Path) -> None:
    path = _bad_request_file(tmp_path)
    warned = scan_file(path, request_check="warn")
    assert isinstance(warned, ScannedFile) and warned.request_count == 2
    assert warned.request_warning_count == 1
    assert warned.request_warnings[0].startswith(f"{path}:2: request.thinking_config: ")
    quiet = scan_file(path, request_check="off")
    assert isinstance(quiet, ScannedFile) and quiet.request_warning_count == 0 and quiet.request_warnings == ()
    assert quiet.sha256 == warned.sha256


def test_the_setting_comes_from_toml_and_the_flag(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    config = tmp_path / "c.toml"
    config.write_text('request_check = "warn"\n')
    folders = ["--input", str(tmp_path / "in"), "--output", str(tmp_path)]
    assert resolve_settings(folders).request_check == "error"  # the default
    assert resolve_settings(["--config", str(config), *folders]).request_check == "warn"
    assert resolve_settings(["--config", str(config), *folders, "--request-check", "off"]).request_check == "off"
    config.write_text('request_check = "sometimes"\n')
    with pytest.raises(ConfigError, match=r"c\.toml:1: request_check: expected one of 'error', 'warn', 'off'"):
        load_settings(config)


def test_snake_case_alone_does_not_reject_a_file(tmp_path: Path) -> None:
    path = shutil.copyfile(CORPUS / "mistakes" / "snake_case_names.jsonl", tmp_path / "snake.jsonl")
    assert isinstance(scan_file(path), ScannedFile)


async def test_the_run_rejects_the_file_and_runs_the_others(tmp_path: Path, emulator) -> None:
    write_lines(tmp_path / "in" / "good.jsonl", [request_line("g1"), request_line("g2")])
    _bad_request_file(tmp_path / "in")
    settings = engine_settings(tmp_path, emulator.base_url)

    code, engine, recorder = await run_engine(settings)

    assert code == 3
    rec = engine.records["bad_request"]
    assert rec.stage is Stage.REJECTED
    assert "bad_request.jsonl:2: the API would refuse this request: request.thinking_config" in (rec.last_error or "")
    assert any("bad_request.jsonl:2" in line for line in recorder.lines())
    uploads = [e for e in emulator.journal() if e.kind == "upload.start"]
    assert len(uploads) == 1  # only good.jsonl
    assert (settings.output_dir / "good.results.jsonl").exists()


async def test_the_run_submits_it_with_a_warning_when_relaxed(tmp_path: Path, emulator) -> None:
    path = _bad_request_file(tmp_path / "in")
    with path.open("a", encoding="utf-8") as handle:  # 7 refused lines in all: 5 are shown, then the count
        for i in range(6):
            handle.write(json.dumps({"key": f"x{i}", "request": {"contents": f"plain text {i}"}}) + "\n")
    settings = engine_settings(tmp_path, emulator.base_url, request_check="warn")

    code, engine, recorder = await run_engine(settings)

    assert engine.records["bad_request"].stage is not Stage.REJECTED
    refused = [line for line in recorder.lines() if "the API may refuse" in line]
    assert len(refused) == 6 and "bad_request.jsonl:2: request.thinking_config" in refused[0]
    assert "7 request lines in all that the API may refuse (gembatch-tui lint " in refused[-1]
    assert len([e for e in emulator.journal() if e.kind == "upload.start"]) == 1
    assert code == 0  # the emulator answers every request; the real service would fail line 2 inside the job
