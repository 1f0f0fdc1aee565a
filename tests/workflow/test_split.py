"""`gembatch-tui split`: limits, stable keys, byte-identical reruns, nothing written from a bad input."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from gembatch.core.input_scan import ScannedFile, list_input_files, scan_file

from .helpers import request_line, run_cli, run_json, write_lines


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _mixed_input(path: Path, count: int = 25) -> Path:
    lines = []
    for i in range(1, count + 1):
        if i % 3 == 0:  # a bare request, without a key
            lines.append(json.dumps({"contents": [{"parts": [{"text": f"bare question {i} " + "x" * i}]}]}))
        elif i % 3 == 1:
            lines.append(request_line(f"k{i}", "q" * i))
        else:  # {"request"} without a key
            lines.append(json.dumps({"request": {"contents": [{"parts": [{"text": f"no key {i}"}]}]}}))
    return write_lines(path, lines)


def test_split_by_requests_assigns_stable_keys_and_reruns_identically(tmp_path: Path, capsys) -> None:
    source = _mixed_input(tmp_path / "big.jsonl")
    code, out, err = run_cli(capsys, "split", source, "--out", tmp_path / "a", "--max-requests", "10")
    assert code == 0, err
    files = list_input_files(tmp_path / "a")
    assert [p.name for p in files] == ["big-001.jsonl", "big-002.jsonl", "big-003.jsonl"]
    keys = []
    for path in files:
        scanned = scan_file(path)
        assert isinstance(scanned, ScannedFile), scanned  # the engine accepts every file
        keys += [json.loads(line)["key"] for line in path.read_text().splitlines()]
    assert len(keys) == 25 == len(set(keys))
    assert keys[:4] == ["k1", "req-000002", "req-000003", "k4"]
    # the request itself is kept byte for byte
    first_bare = json.loads((tmp_path / "a" / "big-001.jsonl").read_text().splitlines()[2])
    assert first_bare["request"]["contents"][0]["parts"][0]["text"].startswith("bare question 3 ")
    assert "16 line(s) had no key" in out

    before = _digests(tmp_path / "a")
    assert run_cli(capsys, "split", source, "--out", tmp_path / "a", "--max-requests", "10")[0] == 0
    assert _digests(tmp_path / "a") == before  # rerun in place: same files
    assert run_cli(capsys, "split", source, "--out", tmp_path / "b", "--max-requests", "10")[0] == 0
    assert _digests(tmp_path / "b") == before  # rerun elsewhere: byte-identical


def test_every_file_is_under_every_limit(tmp_path: Path, capsys) -> None:
    source = _mixed_input(tmp_path / "big.jsonl", count=60)
    code, report = run_json(capsys, "split", source, "--out", tmp_path / "out", "--max-requests", "9",
                            "--max-bytes", "1500", "--max-tokens", "300", "--prefix", "part")
    assert code == 0
    assert report["requests"] == 60
    assert len(report["files"]) > 60 // 9
    for item in report["files"]:
        path = Path(item["path"])
        data = path.read_bytes()
        assert path.name.startswith("part-")
        assert item["requests"] <= 9 and len(data) == item["bytes"] <= 1500 and item["est_tokens"] <= 300
        scanned = scan_file(path)
        assert isinstance(scanned, ScannedFile) and scanned.est_tokens == item["est_tokens"]
        assert scanned.request_count == item["requests"]
    # greedy: a file is closed only when the next line would not fit
    sizes = [item["requests"] for item in report["files"]]
    assert sum(sizes) == 60


def test_a_bad_line_names_file_and_line_and_writes_nothing(tmp_path: Path, capsys) -> None:
    lines = [request_line(f"k{i}") for i in range(1, 30)]
    lines[20] = '{"key": "k21", "request": {"contents": [}'
    source = write_lines(tmp_path / "big.jsonl", lines)
    code, _, err = run_cli(capsys, "split", source, "--out", tmp_path / "out", "--max-requests", "5")
    assert code == 2
    assert f"{source}:21: bad JSON" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"key": "k2"}', "has 'key' but no 'request'"),
        ('{"foo": 1}', "no 'contents'"),
        ('{"key": "", "request": {}}', "'key' must be a non-empty string"),
        ('{"key": "k2", "request": []}', "'request' must be a JSON object"),
        ("[1, 2]", "not a JSON object"),
        ('{"key": "k1", "request": {}}', "duplicate key 'k1'"),
        ('{"key": "req-000003", "request": {}}', "duplicate key 'req-000003'"),
    ],
)
def test_line_checks(tmp_path: Path, capsys, line: str, reason: str) -> None:
    bare = json.dumps({"contents": [{"parts": [{"text": "hi"}]}]})
    source = write_lines(tmp_path / "in.jsonl", [request_line("k1"), bare, bare, line])
    code, _, err = run_cli(capsys, "split", source, "--out", tmp_path / "out")
    assert code == 2
    assert f"{source}:4:" in err and reason in err, err
    assert not (tmp_path / "out").exists()


def test_a_request_over_the_byte_limit_on_its_own_is_refused(tmp_path: Path, capsys) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request_line("a"), request_line("b", "x" * 500)])
    code, _, err = run_cli(capsys, "split", source, "--out", tmp_path / "out", "--max-bytes", "300")
    assert code == 2
    assert f"{source}:2: the request alone is" in err and "300 bytes" in err
    code, _, err = run_cli(capsys, "split", source, "--out", tmp_path / "out", "--max-tokens", "50")
    assert code == 2 and f"{source}:2:" in err and "tokens" in err


def test_a_folder_with_other_batch_files_or_changed_files_is_refused(tmp_path: Path, capsys) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request_line(f"k{i}") for i in range(6)])
    out = tmp_path / "out"
    write_lines(out / "other.jsonl", [request_line("z")])
    code, _, err = run_cli(capsys, "split", source, "--out", out)
    assert code == 2 and "other.jsonl" in err
    (out / "other.jsonl").unlink()
    assert run_cli(capsys, "split", source, "--out", out, "--max-requests", "3")[0] == 0
    write_lines(source, [request_line(f"k{i}", "changed") for i in range(6)])
    code, _, err = run_cli(capsys, "split", source, "--out", out, "--max-requests", "3")
    assert code == 2 and "exists with other content" in err
    assert [p.name for p in sorted(out.iterdir())] == ["in-001.jsonl", "in-002.jsonl"]  # no temp folder left


def test_split_streams_the_input(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request_line(f"k{i}") for i in range(50)])

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the input must be streamed, not read whole")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    monkeypatch.setattr(Path, "read_text", refuse)
    code, _, err = run_cli(capsys, "split", source, "--out", tmp_path / "out", "--max-requests", "20")
    assert code == 0, err


def test_usage_errors_exit_2(tmp_path: Path, capsys) -> None:
    source = write_lines(tmp_path / "in.jsonl", [request_line("a")])
    assert run_cli(capsys, "split", source)[0] == 2  # --out missing
    assert run_cli(capsys, "split", tmp_path / "nope.jsonl", "--out", tmp_path / "o")[0] == 2
    assert run_cli(capsys, "split", source, "--out", tmp_path / "o", "--max-requests", "0")[0] == 2
    code, _, err = run_cli(capsys, "split", source, "--out", tmp_path / "o", "--max-bytes", "3GB")
    assert code == 2 and "over the API's limit" in err
    code, _, err = run_cli(capsys, "split", source, "--out", tmp_path, "--max-requests", "1")
    assert code == 2 and "input file's folder" in err
    assert run_cli(capsys, "split", source, "--out", tmp_path / "o", "--prefix", "../x")[0] == 2


def test_token_estimate_matches_the_engine(tmp_path: Path, capsys) -> None:
    lines = [request_line(f"k{i}", "y" * (i * 7)) for i in range(10)]
    source = write_lines(tmp_path / "in.jsonl", lines)
    code, report = run_json(capsys, "split", source, "--out", tmp_path / "out")
    assert code == 0
    assert report["files"][0]["est_tokens"] == sum(math.ceil(len(line.encode()) * 0.25) for line in lines)
