"""The check of a downloaded result file against its input: every input key once, nothing else."""

from __future__ import annotations

import json
from pathlib import Path

from gembatch.core import results
from gembatch.core.results import check_results
from hypothesis import given, settings
from hypothesis import strategies as st


def write_input(path: Path, keys: list[str]) -> Path:
    path.write_text("".join(json.dumps({"key": k, "request": {"contents": []}}) + "\n" for k in keys), "utf-8")
    return path


def write_results(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), "utf-8")
    return path


def ok(key: str) -> str:
    return json.dumps({"key": key, "response": {"candidates": []}})


def err(key: str) -> str:
    return json.dumps({"key": key, "error": {"code": 3, "message": "bad"}})


def test_a_complete_result_file_counts_successes_and_failures(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", ["a", "b", "c"])
    result = write_results(tmp_path / "out.jsonl", [ok("b"), "", err("a"), ok("c")])

    check = check_results(source, result)

    assert check.complete
    assert (check.lines, check.succeeded, check.failed) == (3, 2, 1)


def test_missing_unexpected_duplicate_and_unreadable_lines_are_named(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", ["a", "b", "c", "d"])
    result = write_results(tmp_path / "out.jsonl", [ok("a"), ok("x"), "not json", ok("a"), json.dumps({"n": 1}),
                                                    ok("x"), err("c")])

    check = check_results(source, result)

    assert not check.complete
    assert check.missing_keys == ["b", "d"]
    assert check.unexpected_keys == ["x", "<line 3: not JSON>", "<line 5: no key>"]
    assert check.duplicate_keys == ["a", "x"]
    assert (check.lines, check.succeeded, check.failed) == (7, 4, 1)
    assert "2 missing key(s): 'b', 'd'" in check.problem()


KEYS = st.text(alphabet="abcxyz-0", min_size=1, max_size=3)
RESULT_LINE = st.one_of(
    KEYS.map(ok), KEYS.map(err), st.just("not json"), st.just(json.dumps({"no": "key"})), st.just("")
)


@settings(max_examples=150, deadline=None)
@given(keys=st.lists(KEYS, unique=True, max_size=12), lines=st.lists(RESULT_LINE, max_size=20),
       echo=st.booleans())
def test_the_hashed_check_agrees_with_the_exact_one(tmp_path_factory, keys: list[str], lines: list[str],
                                                    echo: bool) -> None:
    folder = tmp_path_factory.mktemp("case")
    source = write_input(folder / "in.jsonl", keys)
    if echo:  # results for most of the input keys too, so complete and near-complete files are common
        lines = [ok(k) for k in keys[1:]] + lines
    result = write_results(folder / "out.jsonl", lines)

    assert check_results(source, result) == results._check_exact(source, result)


def test_an_input_with_a_repeated_key_falls_back_to_the_exact_check(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", ["a", "a", "b"])
    result = write_results(tmp_path / "out.jsonl", [ok("a"), ok("b")])

    check = check_results(source, result)

    assert check == results._check_exact(source, result)
    assert check.missing_keys == [] and check.lines == 2
