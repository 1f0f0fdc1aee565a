"""Input validation: one streamed pass, the first problem named with file, line and reason."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import gembatch.core.input_scan as input_scan
import pytest
from gembatch.core.input_scan import (
    MAX_FILE_BYTES,
    Rejection,
    ScannedFile,
    list_input_files,
    scan_file,
    sha256_of,
    stat_inputs,
)


def line(key: str, text: str = "hi") -> str:
    return json.dumps({"key": key, "request": {"contents": [{"parts": [{"text": text}]}]}})


def write(path: Path, *lines: str, end: str = "\n") -> Path:
    path.write_text("".join(x + end for x in lines), encoding="utf-8", newline="")
    return path


def rejection(path: Path) -> Rejection:
    result = scan_file(path)
    assert isinstance(result, Rejection), result
    return result


def test_good_file(tmp_path: Path) -> None:
    lines = [line(f"q-{i}", "x" * i) for i in range(5)]
    path = write(tmp_path / "part_1.jsonl", *lines)
    result = scan_file(path)
    assert isinstance(result, ScannedFile)
    data = path.read_bytes()
    assert result.path == path
    assert result.batch_id == "part_1"
    assert result.size_bytes == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.request_count == 5
    assert result.est_tokens == sum(math.ceil(len(x.encode()) / 4) for x in lines)


def test_mtime_is_taken_before_the_read_so_a_change_during_the_scan_shows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "part_1.jsonl", line("a"), line("b"))
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    check_line = input_scan._Scan._check_line

    def touch_then_check(self: input_scan._Scan, body: bytes, line_no: int) -> None:
        if line_no == 1:
            os.utime(path, ns=(2_000_000_000, 2_000_000_000))  # someone edits the file while we read it
        check_line(self, body, line_no)

    monkeypatch.setattr(input_scan._Scan, "_check_line", touch_then_check)
    result = scan_file(path)
    assert isinstance(result, ScannedFile)
    assert result.mtime_ns == 1_000_000_000  # so the check before upload sees 2_000_000_000 and refuses it


def test_stat_inputs_gives_none_for_a_path_that_cannot_be_stat_ed(tmp_path: Path) -> None:
    good = write(tmp_path / "a.jsonl", line("a"))
    gone = tmp_path / "gone.jsonl"
    stats = stat_inputs([good, gone])
    assert stats[gone] is None
    assert stats[good] is not None and stats[good].st_size == good.stat().st_size


def test_token_estimate_uses_the_factor_per_line(tmp_path: Path) -> None:
    lines = [line("a", "é" * 7), line("b", "y" * 10)]  # non-ASCII: bytes, not characters, count
    path = write(tmp_path / "t.jsonl", *lines)
    for factor in (0.25, 1.0, 0.3):
        result = scan_file(path, factor)
        assert isinstance(result, ScannedFile)
        assert result.est_tokens == sum(math.ceil(len(x.encode()) * factor) for x in lines)


def test_crlf_blank_lines_and_no_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"\r\n" + line("a").encode() + b"\r\n\r\n   \r\n" + line("b").encode())
    result = scan_file(path)
    assert isinstance(result, ScannedFile)
    assert result.request_count == 2
    # the CR is part of the line ending, not of the request
    assert result.est_tokens == 2 * math.ceil(len(line("a").encode()) / 4)
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_crlf_error_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"\r\n".join([line("a").encode(), b"", line("a").encode()]) + b"\r\n")
    assert str(rejection(path)) == f"{path}:3: duplicate key 'a' (first seen on line 1)"


def test_sha256_of_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    path.write_bytes(data)
    assert sha256_of(path) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("content", "line_no", "reason"),
    [
        (b'{"key": "a", "request": {}}\n{"key": "b", "request": {"x": 1,}}\n', 2, "bad JSON: "),
        (b'{"key": "a", "request": {}}\n{"key": "b", "request": {}}x\n', 2, "bad JSON: Extra data (column 28)"),
        (b'{"key": "a", "request": {"t": NaN}}\n', 1, "bad JSON: NaN is not a valid JSON value"),
        (b"[1, 2]\n", 1, "line is not a JSON object, got an array"),
        (b'"text"\n', 1, "line is not a JSON object, got a string"),
        (b'\n\n{"request": {}}\n', 3, "missing 'key'"),
        (b'{"key": "", "request": {}}\n', 1, "'key' must be a non-empty string, got an empty string"),
        (b'{"key": 7, "request": {}}\n', 1, "'key' must be a non-empty string, got a number"),
        (b'{"key": null, "request": {}}\n', 1, "'key' must be a non-empty string, got null"),
        (b'{"key": "a"}\n', 1, "missing 'request'"),
        (b'{"key": "a", "request": "hi"}\n', 1, "'request' must be a JSON object, got a string"),
        (b'{"key": "a", "request": []}\n', 1, "'request' must be a JSON object, got an array"),
        (b'{"key": "a", "request": {"t": "ok\xff"}}\n', 1, "invalid UTF-8 at byte offset 33 of the line"),
        (b'\xef\xbb\xbf{"key": "a", "request": {}}\n', 1, "file starts with a UTF-8 byte order mark (BOM)"),
        (b"[" * 100_000 + b"\n", 1, "bad JSON: nested too deeply"),
    ],
)
def test_bad_lines(tmp_path: Path, content: bytes, line_no: int, reason: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    result = rejection(path)
    assert result.path == path
    assert result.line == line_no
    assert result.reason.startswith(reason), result.reason
    assert str(result).startswith(f"{path}:{line_no}: {reason}")


def test_bad_json_gives_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"key": "a" "request": {}}\n')
    assert rejection(path).reason == "bad JSON: Expecting ',' delimiter (column 13)"


def test_duplicate_key_message(tmp_path: Path) -> None:
    path = tmp_path / "batches" / "part_007.jsonl"
    path.parent.mkdir()
    lines = [line(f"q-{i:04d}") for i in range(1, 50)]
    lines[41] = line("q-0017")
    write(path, *lines)
    assert str(rejection(path)) == f"{path}:42: duplicate key 'q-0017' (first seen on line 17)"


def test_first_error_only(tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    path.write_bytes(b'{"key": "a", "request": {}}\nnot json\n{"request": {}}\n')
    result = rejection(path)
    assert result.line == 2


@pytest.mark.parametrize("content", [b"", b"\n\n", b"  \r\n\t\n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    result = rejection(path)
    assert result.line is None
    assert str(result) == f"{path}: empty file: no request lines"


def test_too_big_is_checked_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "big.jsonl", line("a"), line("b"))
    monkeypatch.setattr(input_scan, "MAX_FILE_BYTES", 10)
    opened: list[Path] = []
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: opened.append(self) or real_open(self, *a, **k))
    result = rejection(path)
    assert result.line is None and "over the limit" in result.reason
    assert opened == []
    assert MAX_FILE_BYTES == 2 * 1024**3


def test_sparse_file_over_2gib(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    result = rejection(path)
    assert result.reason == f"file is {MAX_FILE_BYTES + 1} bytes, over the limit of {MAX_FILE_BYTES} bytes (2 GiB)"


def test_directory_named_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "dir.jsonl"
    path.mkdir()
    result = rejection(path)
    assert result.line is None and "is a directory" in result.reason


def test_dangling_symlink(tmp_path: Path) -> None:
    path = tmp_path / "dangling.jsonl"
    path.symlink_to(tmp_path / "nowhere.jsonl")
    result = rejection(path)
    assert result.line is None and "dangling symlink" in result.reason


def test_symlink_loop(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.symlink_to(b)
    b.symlink_to(a)
    result = rejection(a)
    assert result.line is None and "symlink loop" in result.reason


def test_symlink_to_a_good_file_is_followed(tmp_path: Path) -> None:
    target = write(tmp_path / "elsewhere.txt", line("a"))
    link = tmp_path / "linked.jsonl"
    link.symlink_to(target)
    result = scan_file(link)
    assert isinstance(result, ScannedFile) and result.batch_id == "linked"


def test_huge_single_line_is_read_once(tmp_path: Path) -> None:
    text = "z" * (8 * 1024 * 1024)
    path = write(tmp_path / "long.jsonl", line("a", text), line("b"))
    result = scan_file(path)
    assert isinstance(result, ScannedFile) and result.request_count == 2


def test_folder_with_one_bad_file(tmp_path: Path) -> None:
    write(tmp_path / "part_1.jsonl", line("a"), line("b"))
    write(tmp_path / "part_2.jsonl", line("a"), "{oops")
    write(tmp_path / "part_10.jsonl", line("a"))
    (tmp_path / "notes.txt").write_text("not an input")
    results = [scan_file(p) for p in list_input_files(tmp_path)]
    good = [r for r in results if isinstance(r, ScannedFile)]
    bad = [r for r in results if isinstance(r, Rejection)]
    assert [g.batch_id for g in good] == ["part_1", "part_10"]
    assert len(bad) == 1 and bad[0].path == tmp_path / "part_2.jsonl" and bad[0].line == 2


def test_natural_sort(tmp_path: Path) -> None:
    names = ["part_10.jsonl", "part_2.jsonl", "part_1.jsonl", "Part_3.jsonl", "a.jsonl", "part_02.jsonl", "b10c2.jsonl",
             "b10c10.jsonl", "b9.jsonl"]  # fmt: skip
    for name in names:
        (tmp_path / name).write_text("")
    (tmp_path / "ignored.json").write_text("")
    (tmp_path / ".hidden.jsonl").write_text("")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "nested.jsonl").write_text("")
    listed = [p.name for p in list_input_files(tmp_path)]
    assert listed == [
        "a.jsonl",
        "b9.jsonl",
        "b10c2.jsonl",
        "b10c10.jsonl",
        "part_1.jsonl",
        "part_02.jsonl",
        "part_2.jsonl",
        "Part_3.jsonl",
        "part_10.jsonl",
    ]


def test_listing_keeps_problem_entries_for_scan_file(tmp_path: Path) -> None:
    (tmp_path / "dir.jsonl").mkdir()
    (tmp_path / "dangling.jsonl").symlink_to(tmp_path / "missing")
    listed = list_input_files(tmp_path)
    assert [p.name for p in listed] == ["dangling.jsonl", "dir.jsonl"]
    assert all(isinstance(scan_file(p), Rejection) for p in listed)


def test_rejection_str_without_line(tmp_path: Path) -> None:
    assert str(Rejection(Path("batches/x.jsonl"), None, "empty file")) == "batches/x.jsonl: empty file"
    assert str(Rejection(Path("batches/x.jsonl"), 4, "bad")) == "batches/x.jsonl:4: bad"


def test_unreadable_file_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same as above where the tests run as root (who may read anything)."""
    path = write(tmp_path / "secret.jsonl", line("a"))

    def denied(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", denied)
    result = rejection(path)
    assert str(result) == f"{path}: cannot read: permission denied"
