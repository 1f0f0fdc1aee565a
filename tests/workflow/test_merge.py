"""`gembatch-tui merge`: input order, one result per key, error classes, retried answers winning."""

from __future__ import annotations

import json
from pathlib import Path

from .helpers import answer, error, request_line, run_cli, run_json, write_lines


def _run(tmp_path: Path, results: dict[str, list[str]], inputs: dict[str, list[str]] | None = None) -> None:
    inputs = inputs or {
        "part_2": ["a1", "a2", "a3"],
        "part_10": ["b1", "b2"],
    }
    for name, keys in inputs.items():
        write_lines(tmp_path / "in" / f"{name}.jsonl", [request_line(k) for k in keys])
    for name, lines in results.items():
        write_lines(tmp_path / "out" / f"{name}.results.jsonl", lines)


def _keys(path: Path) -> list[str]:
    return [json.loads(line)["key"] for line in path.read_text().splitlines()]


def test_complete_results_merge_in_input_order(tmp_path: Path, capsys) -> None:
    # result files list keys out of order; the merged file follows the inputs (part_2 before part_10)
    _run(tmp_path, {
        "part_2": [answer("a3"), error("a2", 3), answer("a1", finish="MAX_TOKENS")],
        "part_10": [error("b2", 13, "Internal error 500 encountered."), answer("b1")],
    })
    to = tmp_path / "merged" / "all.jsonl"
    code, out, err = run_cli(capsys, "merge", "--input", tmp_path / "in", "--output", tmp_path / "out", "--to", to)
    assert code == 0, err
    assert _keys(to) == ["a1", "a2", "a3", "b1", "b2"]
    merged = to.read_text().splitlines()
    assert merged[1] == error("a2", 3)  # lines are copied as the API wrote them
    assert "5 requests in 2 input file(s): 3 answered, 2 failed, 0 missing" in out
    assert "INVALID_ARGUMENT (3): Request contains an invalid argument." in out
    assert "INTERNAL (13): Internal error N encountered." in out
    assert "check: OK" in out
    assert not [p for p in to.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_missing_and_duplicate_keys_are_found(tmp_path: Path, capsys) -> None:
    _run(tmp_path, {
        "part_2": [answer("a1"), error("a3"), answer("a3"), answer("zz")],  # a2 missing, a3 twice, zz unexpected
        "part_10": [answer("b1"), answer("b2")],
    })
    to = tmp_path / "merged.jsonl"
    code, report = run_json(capsys, "merge", "--input", tmp_path / "in", "--output", tmp_path / "out", "--to", to)
    assert code == 3
    assert report["ok"] is False
    assert report["missing"] == ["a2"]
    assert report["duplicates"] == ["a3"]
    assert report["unexpected"] == ["zz"]
    assert report["succeeded"] == 4 and report["failed"] == 0  # of a duplicate, the answer is taken
    assert _keys(to) == ["a1", "a3", "b1", "b2"]  # written anyway, without the missing key

    code, out, _ = run_cli(capsys, "merge", "--input", tmp_path / "in", "--output", tmp_path / "out")
    assert code == 3
    assert "missing keys (1): a2" in out and "duplicate keys (1): a3" in out and "check: FAILED" in out


def test_a_file_without_results_and_a_key_in_two_inputs(tmp_path: Path, capsys) -> None:
    _run(tmp_path, {"part_2": [answer("a1"), answer("a2"), answer("x")]},
         inputs={"part_2": ["a1", "a2", "x"], "part_10": ["x", "b2"]})
    code, report = run_json(capsys, "merge", "--input", tmp_path / "in", "--output", tmp_path / "out")
    assert code == 3
    assert report["files_without_results"] == [str(tmp_path / "in" / "part_10.jsonl")]
    assert report["missing"] == ["x", "b2"]
    assert report["duplicates"] == [f"x (input: in {tmp_path / 'in' / 'part_2.jsonl'} and "
                                    f"{tmp_path / 'in' / 'part_10.jsonl'})"]


def test_retried_answers_win_over_failures(tmp_path: Path, capsys) -> None:
    _run(tmp_path, {
        "part_2": [answer("a1"), error("a2"), error("a3")],
        "part_10": [answer("b1")],  # b2 missing: the retry fills it
    })
    write_lines(tmp_path / "retry1" / "retry-001.results.jsonl",
                [answer("a2", "second try"), error("a3"), error("a1", 8, "over quota"), answer("b2")])
    write_lines(tmp_path / "retry2" / "retry-001.results.jsonl", [answer("a3", "third try")])
    to = tmp_path / "merged.jsonl"
    code, report = run_json(capsys, "merge", "--input", tmp_path / "in", "--output", tmp_path / "out",
                            "--retry-output", tmp_path / "retry1", "--retry-output", tmp_path / "retry2", "--to", to)
    assert code == 0, report
    assert report["failed"] == 0 and report["succeeded"] == 5
    assert report["from_retry"] == 3 and report["retried_answers"] == 3
    lines = {json.loads(line)["key"]: json.loads(line) for line in to.read_text().splitlines()}
    assert lines["a1"]["response"]["candidates"][0]["content"]["parts"][0]["text"] == "ok"  # never replaced by an error
    assert lines["a2"]["response"]["candidates"][0]["content"]["parts"][0]["text"] == "second try"
    assert lines["a3"]["response"]["candidates"][0]["content"]["parts"][0]["text"] == "third try"
    assert "b2" in lines

    # only the first round: a3 failed twice, the later error stands
    code, report = run_json(capsys, "merge", "--input", tmp_path / "in", "--output", tmp_path / "out",
                            "--retry-output", tmp_path / "retry1")
    assert code == 0 and report["failed"] == 1 and report["errors"] == {
        "INVALID_ARGUMENT (3): Request contains an invalid argument.": 1}


def test_a_retry_folder_with_an_unknown_key_is_reported(tmp_path: Path, capsys) -> None:
    _run(tmp_path, {"part_2": [answer("a1"), answer("a2"), answer("a3")], "part_10": [answer("b1"), answer("b2")]})
    write_lines(tmp_path / "retry" / "r.results.jsonl", [answer("nobody"), "not json"])
    code, report = run_json(capsys, "merge", "--input", tmp_path / "in", "--output", tmp_path / "out",
                            "--retry-output", tmp_path / "retry")
    assert code == 3
    assert report["unexpected"] == ["nobody (retry)"]
    assert report["unreadable"] == [f"{tmp_path / 'retry' / 'r.results.jsonl'}:2: not JSON"]


def test_a_bad_input_line_stops_with_file_and_line_and_writes_nothing(tmp_path: Path, capsys) -> None:
    _run(tmp_path, {"part_2": [answer("a1")]})
    path = tmp_path / "in" / "part_10.jsonl"
    path.write_text(request_line("b1") + "\n" + '{"key": 5, "request": {}}\n')
    to = tmp_path / "merged.jsonl"
    code, _, err = run_cli(capsys, "merge", "--input", tmp_path / "in", "--output", tmp_path / "out", "--to", to)
    assert code == 2
    assert f"{path}:2: 'key' must be a non-empty string" in err
    assert not to.exists() and not list(tmp_path.glob(".merged*"))



def test_a_merged_file_whose_folder_fsync_fails_is_a_message_naming_it(tmp_path: Path, folder_fsync_fails: None,
                                                                        capsys) -> None:
    _run(tmp_path, {"part_2": [answer("a1"), answer("a2"), answer("a3")], "part_10": [answer("b1"), answer("b2")]})
    to = tmp_path / "merged.jsonl"
    code, out, err = run_cli(capsys, "merge", "--input", tmp_path / "in", "--output", tmp_path / "out", "--to", to)
    assert code == 2
    assert err == f"gembatch-tui merge: {to}: Input/output error; the merge stopped\n"
    assert "merged results written" not in out


def test_usage_errors(tmp_path: Path, capsys) -> None:
    assert run_cli(capsys, "merge", "--input", tmp_path)[0] == 2
    code, _, err = run_cli(capsys, "merge", "--input", tmp_path / "none", "--output", tmp_path)
    assert code == 2 and "--input: folder not found" in err
    (tmp_path / "in").mkdir()
    code, _, err = run_cli(capsys, "merge", "--input", tmp_path / "in", "--output", tmp_path)
    assert code == 2 and "no .jsonl files" in err
