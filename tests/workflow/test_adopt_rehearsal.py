"""The seed's situation, rehearsed on the emulator: a hand run stopped by a 429, three creates whose answers were
lost, uploads never created, job names in a markdown report. The README's recipe (adopt, then the normal command
headless) must finish it with one job per input file and every request answered once."""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
from collections import Counter
from pathlib import Path

import httpx2
from gembatch.core.exit_codes import EXIT_OK
from gembatch.tui.launch import main as gembatch_main
from google import genai
from google.genai import errors, types

from ..conftest import FAKE_KEY, write_batch_files
from .helpers import run_cli, upload_active

FILES, REQUESTS = 40, 10  # the seed: 154 files of 100 requests
UPLOADED = 30  # the hand run uploaded this many files, in order
CREATES_BEFORE_429 = 21
LOST_ANSWERS = (4, 10, 16)  # indexes of the creates whose answer never came back (the jobs exist)


def sdk_client(base_url: str) -> genai.Client:
    return genai.Client(api_key=FAKE_KEY, http_options=types.HttpOptions(
        base_url=base_url, api_version="v1beta", timeout=10_000))


def hand_run(emulator, client: genai.Client, paths: list[Path]) -> tuple[list[tuple[str, str]], int]:
    """A script without gembatch-tui: upload, then create until the first 429; returns the (file, job) pairs
    whose answer came back, and how many creates took effect."""
    uploads = [upload_active(client, str(p), {"mime_type": "application/jsonl", "display_name": p.stem})
               for p in paths[:UPLOADED]]
    answered: list[tuple[str, str]] = []
    made = 0
    for index, (upload, path) in enumerate(zip(uploads, paths, strict=False)):
        emulator.settings.lost_create_rate = 1.0 if index in LOST_ANSWERS else 0.0
        try:
            job = client.batches.create(model="gemini-2.5-flash", src=upload.name,
                                        config={"display_name": f"refinement {path.stem}"})
        except errors.APIError as exc:
            assert exc.code == 429, exc
            break
        except httpx2.TransportError:  # the connection was dropped: the script moved on, the job exists all the same
            made += 1
            continue
        made += 1
        answered.append((path.name, job.name or ""))
    emulator.settings.lost_create_rate = 0.0
    return answered, made


def markdown_report(pairs: list[tuple[str, str]]) -> str:
    rows = "\n".join(f"| {file} | {job} | submitted |" for file, job in pairs)
    return f"# Refinement run\n\nStopped by a 429.\n\n| file | job | status |\n|---|---|---|\n{rows}\n"


def sha256_hex(value: str | None) -> str:
    assert value, "the file has no sha256Hash"
    return base64.b64decode(value).hex() if len(value) != 64 else value


def all_operations(client: genai.Client) -> list[dict]:
    """Every batch on the account as raw JSON, through the SDK (its typed BatchJob drops inputConfig)."""
    operations: list[dict] = []
    token = ""
    while True:
        path = "batches?pageSize=50" + (f"&pageToken={token}" if token else "")
        page = json.loads(client._api_client.request("get", path, {}).body)
        operations += page.get("operations", [])
        token = page.get("nextPageToken", "")
        if not token:
            return operations


def audit_jobs_per_input(client: genai.Client, paths: list[Path], emulator) -> Counter[str]:
    """Through the SDK: every job on the account, tied to its input file by its source file's content. The engine
    deletes an input upload once its results are saved (the service then answers 403 for it): such a file's
    content hash comes from the emulator's own account of the files it ever held."""
    by_sha = {hashlib.sha256(p.read_bytes()).hexdigest(): p.name for p in paths}
    deleted = {f["name"]: f["sha256"] for f in emulator.files() if f["deleted"]}
    per_file: Counter[str] = Counter()
    for operation in all_operations(client):
        source = operation["metadata"]["inputConfig"]["fileName"]
        try:
            sha = sha256_hex(client.files.get(name=source).sha256_hash)
        except errors.ClientError as exc:
            assert exc.code == 403 and source in deleted, f"{source}: {exc}"
            sha = deleted[source]
        per_file[by_sha[sha]] += 1
    return per_file


def test_the_readme_recipe_finishes_the_seed_run_with_one_job_per_file(tmp_path: Path, emulator, capsys) -> None:
    paths = write_batch_files(tmp_path / "batches", files=FILES, requests=REQUESTS, prefix="refinement_batch")
    emulator.settings.creates_per_minute = CREATES_BEFORE_429
    client = sdk_client(emulator.base_url)
    answered, made = hand_run(emulator, client, paths)
    assert made == CREATES_BEFORE_429 and len(answered) == CREATES_BEFORE_429 - len(LOST_ANSWERS)
    report = tmp_path / "REPORT.md"
    report.write_text(markdown_report(answered), encoding="utf-8")
    emulator.settings.creates_per_minute = None  # the user comes back later, when the quota has room again
    results, checkpoint = tmp_path / "results", tmp_path / "results" / "gembatch.checkpoint.json"
    config = tmp_path / "quick.toml"  # a rehearsal's pace: short polls and cool-downs
    config.write_text("poll_interval = 0.2\n[admission]\ncool_down_seconds = 0.5\ncool_down_max_seconds = 2.0\n",
                      encoding="utf-8")

    code, out, err = run_cli(capsys, "adopt", "--input", paths[0].parent, "--output", results,
                             "--jobs-file", report, "--match-uploads", "--base-url", emulator.base_url,
                             "--config", config)
    assert code == EXIT_OK, err
    lines = {line.split(":", 1)[0]: line for line in out.splitlines() if line.startswith("refinement_batch_")}
    created_from = [lines[f"refinement_batch_{i:03d}"] for i in range(1, CREATES_BEFORE_429 + 1)]
    paid_twice = [line for line in created_from if "a job will be created" in line]
    assert not paid_twice  # the seed's bug: the lost answers' files were to be created again
    for index, line in enumerate(created_from):  # each file the hand run created from: its job, and how it matched
        assert "matched by file" in line and ("by report" in line) is (index not in LOST_ANSWERS), line
    assert f"adopted {CREATES_BEFORE_429} job(s) and {UPLOADED - CREATES_BEFORE_429} upload(s)" in out
    hint = next(line for line in out.splitlines() if "now run:" in line).split("now run:", 1)[1].strip()
    argv = shlex.split(hint)
    assert argv[0] == "gembatch-tui" and "--base-url" in argv and "--config" in argv

    run_code = gembatch_main([*argv[1:], "--headless"])

    assert run_code == EXIT_OK
    per_file = audit_jobs_per_input(client, paths, emulator)
    assert per_file == Counter({p.name: 1 for p in paths})
    for path in paths:
        want = [json.loads(line)["key"] for line in path.read_text().splitlines()]
        got = [json.loads(line)["key"] for line in
               (results / f"{path.stem}.results.jsonl").read_text().splitlines()]
        assert sorted(got) == sorted(want) and len(set(got)) == len(got), path.name
    assert checkpoint.exists()
    client.close()
