"""The input validator under attack: every bad file is refused with its file and line, nothing of it is uploaded
or created, and the good files next to it complete. A file that changes after validation is never half-submitted.
"""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

from gembatch.core.events import BatchChanged, Event
from gembatch.core.exit_codes import EXIT_INCOMPLETE
from gembatch.core.input_scan import Rejection, ScannedFile, scan_file
from gembatch.core.model import Stage

from ..engine.helpers import engine_settings, run_engine
from .support import FIGURES, assert_no_display_name_twice, assert_results_complete, write_inputs

MB = 1024 * 1024


def _line(key: str, text: str = "hi") -> bytes:
    return json.dumps({"key": key, "request": {"contents": [{"parts": [{"text": text}]}]}}).encode() + b"\n"


def _write_attacks(folder: Path) -> dict[str, str]:
    """Bad files; returns what each one's rejection must say (file name, then ':line' when there is one)."""
    expected: dict[str, str] = {}

    def put(name: str, data: bytes, says: str) -> None:
        (folder / f"{name}.jsonl").write_bytes(data)
        expected[name] = says

    put("bad_json", _line("a") + b'{"key": "b", "request": {\n', "bad_json.jsonl:2: bad JSON")
    put("bad_utf8", _line("a") + _line("b") + b'{"key": "c\xff\xfe", "request": {}}\n',
        "bad_utf8.jsonl:3: invalid UTF-8")
    put("huge_number", b'{"key": "a", "request": {"n": ' + b"9" * 5000 + b"}}\n", "huge_number.jsonl:1: bad JSON")
    put("missing_key", _line("a") + b'{"request": {}}\n', "missing_key.jsonl:2: missing 'key'")
    put("duplicate_key", _line("a") + _line("b") + _line("a"), "duplicate_key.jsonl:3: duplicate key 'a'")
    put("empty", b"", "empty.jsonl: empty file")
    put("blank_lines_only", b"\n\n  \n", "blank_lines_only.jsonl: empty file")
    put("not_an_object", b"[1, 2, 3]\n", "not_an_object.jsonl:1: line is not a JSON object")
    put("nan", b'{"key": "a", "request": {"temperature": NaN}}\n', "nan.jsonl:1: bad JSON: NaN")
    put("bom", b"\xef\xbb\xbf" + _line("a"), "bom.jsonl:1: file starts with a UTF-8 byte order mark")
    put("request_not_object", b'{"key": "a", "request": "text"}\n', "request_not_object.jsonl:1: 'request' must")
    # a 50 MB single line whose JSON breaks at its very end
    put("huge_bad", b'{"key": "a", "request": {"text": "' + b"x" * (50 * MB) + b'"}\n', "huge_bad.jsonl:1: bad JSON")
    os.symlink(folder / "loop_b.jsonl", folder / "loop_a.jsonl")
    os.symlink(folder / "loop_a.jsonl", folder / "loop_b.jsonl")
    expected["loop_a"] = "loop_a.jsonl: cannot read: symlink loop"
    expected["loop_b"] = "loop_b.jsonl: cannot read: symlink loop"
    os.symlink(folder / "nowhere", folder / "dangling.jsonl")
    expected["dangling"] = "dangling.jsonl: dangling symlink"
    (folder / "a_folder.jsonl").mkdir()
    expected["a_folder"] = "a_folder.jsonl: cannot read: is a directory"
    return expected


async def test_bad_files_are_refused_with_file_and_line_and_the_others_complete(tmp_path: Path, emulator) -> None:
    good = write_inputs(tmp_path / "in", 3, 4, tag="good")
    expected = _write_attacks(tmp_path / "in")
    settings = engine_settings(tmp_path, emulator.base_url)

    code, engine, recorder = await run_engine(settings)

    assert code == EXIT_INCOMPLETE
    log = "\n".join(recorder.lines())
    for name, says in expected.items():
        rec = engine.records[name]
        assert rec.stage is Stage.REJECTED, f"{name}: {rec.stage}"
        assert says in (rec.last_error or ""), f"{name}: {rec.last_error!r} does not say {says!r}"
        assert says in log, f"{name}: the log does not say {says!r}"
    uploads = [e for e in emulator.journal() if e.kind == "upload.start"]
    assert len(uploads) == len(good), "a refused file was uploaded"
    assert len(emulator.jobs()) == len(good)
    assert_no_display_name_twice(emulator)
    assert assert_results_complete(settings.input_dir, settings.output_dir, [p.stem for p in good]) == len(good)
    FIGURES["bad inputs tried"] += len(expected)


def test_a_huge_line_is_scanned_in_memory_bounded_by_the_line_not_the_file(tmp_path: Path) -> None:
    huge = tmp_path / "huge.jsonl"
    huge.write_bytes(_line("big", "x" * (50 * MB)))
    many = tmp_path / "many.jsonl"
    with many.open("wb") as out:
        for i in range(200):  # 50 MB again, in 256 KB lines
            out.write(_line(f"k{i}", "y" * (256 * 1024)))

    peaks = {}
    for path in (huge, many):
        tracemalloc.start()
        try:
            result = scan_file(path)
            peaks[path.name] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert isinstance(result, ScannedFile), result
    assert peaks["huge.jsonl"] < 5 * 50 * MB, f"{peaks['huge.jsonl'] / MB:.0f} MB to scan one 50 MB line"
    assert peaks["many.jsonl"] < 8 * MB, f"{peaks['many.jsonl'] / MB:.0f} MB to scan 256 KB lines: not streamed"
    FIGURES["bad inputs tried"] += 1
    FIGURES["huge line: scan peak MB for a 50 MB line"] = round(peaks["huge.jsonl"] / MB)


def test_a_huge_number_is_refused_at_its_line_not_a_crash(tmp_path: Path) -> None:
    """json.loads raises a bare ValueError (not JSONDecodeError) for an integer over 4300 digits: that crashed the
    scan, and with it the whole run, before input_scan caught it."""
    path = tmp_path / "huge.jsonl"
    path.write_bytes(_line("a") + b'{"key": "b", "request": ' + b"[" * 10 + b"1" * (20 * MB) + b"\n")
    result = scan_file(path)
    assert isinstance(result, Rejection) and result.line == 2 and "huge.jsonl:2: bad JSON" in str(result), result


async def test_a_file_changed_after_validation_is_refused_and_never_uploaded(tmp_path: Path, emulator) -> None:
    write_inputs(tmp_path / "in", 3, 3, tag="chg")
    settings = engine_settings(tmp_path, emulator.base_url, upload_concurrency=1)
    target = settings.input_dir / "part_003.jsonl"
    changed = False

    def change_it(event: Event) -> None:
        nonlocal changed
        if isinstance(event, BatchChanged) and event.record.batch_id == "part_003" and not changed:
            changed = True  # validated; its upload has not started yet
            with target.open("ab") as out:
                out.write(_line("smuggled"))

    code, engine, _ = await run_engine(settings, hooks=(change_it,))

    rec = engine.records["part_003"]
    assert code == EXIT_INCOMPLETE and rec.stage is Stage.REJECTED
    assert "changed since it was validated" in (rec.last_error or rec.history[-1].note)
    assert "part_003.jsonl" in rec.history[-1].note
    assert not [e for e in emulator.journal() if e.kind == "upload.start" and e.display_name
                and e.display_name.endswith(rec.sha256[:40])], "the changed file was uploaded"
    assert not [j for j in emulator.jobs() if "part_003" in (j["display_name"] or "")], "a job was created for it"
    assert_results_complete(settings.input_dir, settings.output_dir, ["part_001", "part_002"])
    FIGURES["bad inputs tried"] += 1


async def test_a_file_changed_during_its_upload_is_refused_and_never_created(tmp_path: Path, emulator) -> None:
    """Same size, same mtime, other bytes: only the server's hash of what it received can tell; no create follows."""
    write_inputs(tmp_path / "in", 3, 3, tag="swap")
    settings = engine_settings(tmp_path, emulator.base_url)
    target = settings.input_dir / "part_002.jsonl"
    swapped = False

    def swap_it(event: Event) -> None:
        nonlocal swapped
        if isinstance(event, BatchChanged) and event.record.batch_id == "part_002" and \
                event.record.stage is Stage.UPLOADING and not swapped:
            swapped = True
            info = target.stat()
            data = target.read_bytes()
            target.write_bytes(data.replace(b"question", b"QUESTION"))  # same length
            os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))

    code, engine, _ = await run_engine(settings, hooks=(swap_it,))

    rec = engine.records["part_002"]
    assert swapped and code == EXIT_INCOMPLETE and rec.stage is Stage.REJECTED, rec.stage
    assert "content changed during upload" in rec.history[-1].note
    assert not [j for j in emulator.jobs() if "part_002" in (j["display_name"] or "")], "a job was created for it"
    uploaded = [f for f in emulator.files() if f["display_name"] == f"gembatch-upload-{rec.sha256[:40]}"]
    assert all(f["deleted"] for f in uploaded if f["sha256"] != rec.sha256), "the changed upload was kept"
    assert_results_complete(settings.input_dir, settings.output_dir, ["part_001", "part_003"])
    FIGURES["bad inputs tried"] += 1
