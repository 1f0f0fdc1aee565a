"""Checkpoint format versions: a version 1 file (today's, and one from before its latest fields) is read, resumed
against the emulator without a second job, and written back as version 2; a newer version is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from gembatch.core import checkpoint_format, checkpoint_store
from gembatch.core.checkpoint_format import MIGRATIONS, VERSION, CheckpointError, Migration
from gembatch.core.checkpoint_store import CheckpointStore
from gembatch.core.model import Stage

from .emulator.conftest import make_client, upload
from .engine.helpers import assert_one_job_per_attempt, assert_results_match_inputs, engine_settings, run_engine

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_v1"  # made by tests/fixtures/make_checkpoint.py
FIXTURE_ROOT = "/GEMBATCH-FIXTURE-ROOT"
CHECKPOINT = "gembatch.checkpoint.json"
# Fields version 1 grew without a bump (commits 1caaef7, e85d289, e6189a9): a version 1 file may lack them all.
LATER_BATCH_FIELDS = ("result_sha256", "result_size", "result_mtime_ns", "upload_lifetime", "upload_active",
                      "results_inline", "upload_adopted")


def _strip_later_fields(name: str, text: str) -> str:
    """The same checkpoint file as a version 1 writer from before the latest fields would have written it."""
    if name.endswith((".journal", ".journal.bak")):
        lines = []
        for line in text.splitlines():
            obj = json.loads(line)
            for field in LATER_BATCH_FIELDS:
                obj.get("record", {}).pop(field, None)
            lines.append(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))
        return "".join(line + "\n" for line in lines)
    data = json.loads(text)
    data.pop("input_dir", None)
    for batch in data["batches"]:
        for field in LATER_BATCH_FIELDS:
            batch.pop(field, None)
    return json.dumps(data, ensure_ascii=False, indent=1) + "\n"


def install_fixture(tmp_path: Path, *, older: bool = False, renames: dict[str, str] | None = None) -> Path:
    """The fixture's inputs, results and checkpoint files under a fresh folder (its path put in for ROOT); the
    inputs keep the mtimes the checkpoint saw. Returns that folder."""
    root = Path(os.path.realpath(tmp_path)) / "run"
    for source in sorted(FIXTURE.rglob("*")):
        if not source.is_file():
            continue
        target = root / source.relative_to(FIXTURE)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = source.read_text(encoding="utf-8").replace(FIXTURE_ROOT, str(root))
        for old, new in (renames or {}).items():
            text = text.replace(old, new)
        if older and source.name.startswith(CHECKPOINT):
            text = _strip_later_fields(source.name, text)
        target.write_text(text, encoding="utf-8")
    for batch in json.loads((FIXTURE / "out" / CHECKPOINT).read_text(encoding="utf-8"))["batches"]:
        os.utime(root / "in" / f"{batch['batch_id']}.jsonl", ns=(batch["mtime_ns"], batch["mtime_ns"]))
    return root


def fixture_records() -> dict[str, dict[str, Any]]:
    """The fixture's batches as the version 1 code last wrote them (snapshot, then its journal on top)."""
    out = FIXTURE / "out"
    records = {b["batch_id"]: b for b in json.loads((out / CHECKPOINT).read_text(encoding="utf-8"))["batches"]}
    for line in (out / f"{CHECKPOINT}.journal").read_text(encoding="utf-8").splitlines():
        record = json.loads(line).get("record")
        if record is not None:
            records[record["batch_id"]] = record
    return records


RUN_ID = json.loads((FIXTURE / "out" / CHECKPOINT).read_text(encoding="utf-8"))["run_id"]


def on_disk_version(path: Path) -> int:
    return json.loads(path.read_text(encoding="utf-8"))["version"]


# ---- reading and writing back -----------------------------------------------------------------------


@pytest.mark.parametrize("older", [False, True], ids=["today", "before-latest-fields"])
def test_a_version_1_checkpoint_loads_with_its_journal_and_load_writes_nothing(tmp_path: Path, older: bool) -> None:
    root = install_fixture(tmp_path, older=older)
    files = sorted((root / "out").glob(f"{CHECKPOINT}*"))
    before = {path: path.read_bytes() for path in files}
    store = CheckpointStore(root / "out" / CHECKPOINT)
    state = store.load()

    assert state is not None and store.disk_version == 1 and on_disk_version(store.path) == 1
    assert {b: r.stage for b, r in state.records.items()} == {
        "alpha": Stage.DOWNLOADED, "bravo": Stage.DOWNLOADED, "charlie": Stage.RUNNING, "delta": Stage.PENDING,
        "echo": Stage.CREATING, "foxtrot": Stage.UPLOADED}  # echo's create intent is in the journal only
    assert state.records["echo"].display_name == f"gembatch-{RUN_ID}-echo-b887cb573f76-a1"
    assert state.run_id == RUN_ID and state.learned["accepted_jobs_max"] == 2
    if older:  # the fields it lacks take the defaults that mean "not known"
        assert state.input_dir is None
        assert all(r.result_sha256 is None and r.result_size is None and r.upload_lifetime is None
                   and not r.upload_active for r in state.records.values())
    else:
        assert state.input_dir == str(root / "in")
        assert state.records["alpha"].result_size == 417 and state.records["charlie"].upload_active
    assert {path: path.read_bytes() for path in files} == before


@pytest.mark.parametrize("older", [False, True], ids=["today", "before-latest-fields"])
async def test_the_first_commit_after_loading_version_1_writes_version_2(tmp_path: Path, older: bool) -> None:
    root = install_fixture(tmp_path, older=older)
    path = root / "out" / CHECKPOINT
    version_1 = path.read_bytes()
    store = CheckpointStore(path)
    state = store.load()
    assert state is not None
    expected = {b: r.to_dict() for b, r in state.records.items()}

    await store.commit()  # nothing new to journal: the upgrade alone is written

    assert on_disk_version(path) == 2 and store.disk_version == 2
    assert store.bak_path.read_bytes() == version_1  # the last good copy is the file as it was
    assert not store.journal_path.exists()  # folded into the new snapshot
    again = CheckpointStore(path).load()
    assert again is not None and {b: r.to_dict() for b, r in again.records.items()} == expected
    assert again.learned == state.learned and again.input_dir == state.input_dir

    written = path.read_bytes()
    state.records["foxtrot"].note(state.created_at + 10, "a change after the upgrade")
    store.append(state.records["foxtrot"])
    await store.commit()  # now an ordinary commit: a journal line, the snapshot left alone
    assert path.read_bytes() == written and store.journal_path.exists()
    assert CheckpointStore(path).load().records["foxtrot"].history[-1].note == "a change after the upgrade"


def test_a_toml_checkpoint_is_versioned_the_same_way(tmp_path: Path) -> None:
    state = CheckpointStore(install_fixture(tmp_path) / "out" / CHECKPOINT).load()
    assert state is not None
    path = tmp_path / "run.toml"
    CheckpointStore(path).create(state)
    text = path.read_text(encoding="utf-8")
    assert "\nversion = 2\n" in text
    path.write_text(text.replace("\nversion = 2\n", "\nversion = 1\n", 1), encoding="utf-8")  # as version 1 wrote it

    store = CheckpointStore(path)
    loaded = store.load()
    assert loaded is not None and store.disk_version == 1
    store.commit_sync()
    assert "\nversion = 2\n" in path.read_text(encoding="utf-8") and "\nversion = 1\n" in store.bak_path.read_text()
    assert CheckpointStore(path).load().records.keys() == state.records.keys()

    path.write_text(path.read_text(encoding="utf-8").replace("\nversion = 2\n", "\nversion = 3\n", 1),
                    encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"written by a newer gembatch-tui \(format version 3"):
        CheckpointStore(path).load()


@pytest.mark.parametrize("name", [CHECKPOINT, "run.toml"])
def test_a_newer_version_is_refused_naming_the_file_and_left_alone(tmp_path: Path, name: str) -> None:
    state = CheckpointStore(install_fixture(tmp_path) / "out" / CHECKPOINT).load()
    assert state is not None
    path = tmp_path / name
    CheckpointStore(path).create(state)
    text = path.read_text(encoding="utf-8")
    newer = text.replace('"version": 2,', '"version": 7,') if name.endswith(".json") else \
        text.replace("\nversion = 2\n", "\nversion = 7\n")
    assert newer != text
    path.write_text(newer, encoding="utf-8")

    store = CheckpointStore(path)
    with pytest.raises(CheckpointError) as caught:
        store.load()
    message = str(caught.value)
    assert str(path) in message and "written by a newer gembatch-tui" in message and "upgrade" in message
    assert "format version 7" in message and f"versions 1 to {VERSION}" in message
    assert path.read_text(encoding="utf-8") == newer and not store.bak_path.exists()


@pytest.mark.parametrize("version", [0, "2", True, None])
def test_a_version_that_is_not_a_version_is_damage(tmp_path: Path, version: object) -> None:
    path = install_fixture(tmp_path) / "out" / CHECKPOINT
    data = json.loads(path.read_text(encoding="utf-8"))
    data["version"] = version
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"is damaged: \"version\" is .* not a format version"):
        CheckpointStore(path).load()


def test_every_older_version_has_a_way_to_this_one() -> None:
    assert VERSION == 2
    assert sorted(MIGRATIONS) == list(range(1, VERSION))


def test_a_migration_step_is_applied_to_the_header_the_snapshot_and_the_journal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook itself: a made-up version 3 whose step renames the model and counts tokens twice."""

    def header(data: dict[str, Any]) -> None:
        data["model"] = f"models/{data['model']}"

    def record(item: dict[str, Any]) -> None:
        if not item.get("doubled"):  # a step must leave a batch already in the newer shape alone
            item["est_tokens"] = 2 * item.get("est_tokens", 0)

    monkeypatch.setitem(MIGRATIONS, 2, Migration(header=header, record=record))
    monkeypatch.setattr(checkpoint_format, "VERSION", 3)
    monkeypatch.setattr(checkpoint_store, "VERSION", 3)
    root = install_fixture(tmp_path)
    path = root / "out" / CHECKPOINT
    data = json.loads(path.read_text(encoding="utf-8"))
    data["version"] = 2
    path.write_text(json.dumps(data), encoding="utf-8")

    store = CheckpointStore(path)
    state = store.load()
    assert state is not None and store.disk_version == 2
    tokens = {b: r["est_tokens"] for b, r in fixture_records().items()}
    assert state.model == "models/gemini-2.5-flash"
    assert {b: r.est_tokens for b, r in state.records.items()} == {b: 2 * t for b, t in tokens.items()}
    store.commit_sync()
    assert on_disk_version(path) == 3 and json.loads(path.read_text(encoding="utf-8"))["model"] == state.model
    assert {b: r.est_tokens for b, r in CheckpointStore(path).load().records.items()} == \
        {b: 2 * t for b, t in tokens.items()}  # read as version 3: not migrated twice


# ---- resuming a run -------------------------------------------------------------------------------------


@pytest.mark.parametrize("older", [False, True], ids=["today", "before-latest-fields"])
async def test_a_run_resumes_from_a_version_1_checkpoint_without_a_second_job(
        tmp_path: Path, emulator, older: bool) -> None:
    records = fixture_records()
    # The server as the run left it: its uploads under their names, and its two unfinished jobs (the emulator
    # names jobs itself: the copy of the checkpoint is given the new names).
    client = make_client(emulator.base_url)
    renames: dict[str, str] = {}
    try:
        for batch_id, rec in records.items():
            if rec["stage"] in ("downloaded", "uploading") or "upload_name" not in rec:
                continue
            data = (FIXTURE / "in" / f"{batch_id}.jsonl").read_bytes()
            upload(client, data, display_name=batch_id, name=rec["upload_name"])
            if rec.get("job_name"):
                job = client.batches.create(model="gemini-2.5-flash", src=rec["upload_name"],
                                            config={"display_name": rec["display_name"]})
                assert job.name is not None
                renames[rec["job_name"]] = job.name
    finally:
        client.close()
    assert sorted(renames) == sorted([records["charlie"]["job_name"], records["delta"]["job_name"]])
    root = install_fixture(tmp_path, older=older, renames=renames)
    emulator.reset_journal()
    settings = engine_settings(root, emulator.base_url, input_dir=root / "in", output_dir=root / "out",
                               checkpoint=root / "out" / CHECKPOINT)

    code, engine, _ = await run_engine(settings)

    assert code == 0
    made = assert_one_job_per_attempt(emulator)  # no display name created twice, on the server either
    # only the two batches without a job on the server got one: echo (its intent was saved, its create never
    # sent) and foxtrot (uploaded, waiting for a slot); each once, under the resumed run's id
    echo = records["echo"]["display_name"]
    assert len(made) == 2 and echo in made, made
    assert next(name for name in made if name != echo).startswith(f"gembatch-{RUN_ID}-foxtrot-")
    assert {job["display_name"] for job in emulator.jobs()} == {
        records["charlie"]["display_name"], records["delta"]["display_name"], *made}
    assert assert_results_match_inputs(root / "in", root / "out") == 6
    assert all(rec.stage is Stage.DOWNLOADED for rec in engine.records.values())
    path = root / "out" / CHECKPOINT
    assert on_disk_version(path) == 2
    assert json.loads(path.read_text(encoding="utf-8"))["input_dir"] == str(root / "in")
