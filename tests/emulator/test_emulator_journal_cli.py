"""The journal of calls, scenario files, the command line and `python -m gembatch.core.emulator`."""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import pytest
from gembatch.core.emulator import Emulator, EmulatorSettings, JournalEntry
from gembatch.core.emulator.cli import build_parser, settings_from_args

from .conftest import KEY, jsonl, upload, wait_done

MODEL = "gemini-2.5-flash"


def test_journal_records_every_call(emu: Emulator, client) -> None:
    data = jsonl(2)
    f = upload(client, data, "in-1")
    job = client.batches.create(model=MODEL, src=f.name, config={"display_name": "run1-part1"})
    wait_done(client, job.name)
    list(client.batches.list(config={"page_size": 5}))
    client.batches.cancel(name=job.name)
    client.batches.delete(name=job.name)
    client.files.delete(name=f.name)
    entries = emu.journal()
    assert all(isinstance(e, JournalEntry) for e in entries)
    entries = [e for e in entries if e.kind != "files.get"]  # the upload helper polls until ACTIVE
    kinds = [e.kind for e in entries]
    assert kinds[:3] == ["upload.start", "upload.chunk", "batches.create"]
    assert set(kinds[3:]) == {"batches.get", "batches.list", "batches.cancel", "batches.delete", "files.delete"}
    create = entries[2]
    assert (create.method, create.status, create.display_name, create.resource) == (
        "POST", 200, "run1-part1", job.name)
    assert create.path == "/v1beta/models/gemini-2.5-flash:batchGenerateContent"
    assert create.sha256 == hashlib.sha256(data).hexdigest() == entries[1].sha256
    assert entries[0].display_name == "in-1" and entries[0].resource == f.name
    assert all(e.at <= later.at for e, later in itertools.pairwise(entries))
    emu.reset_journal()
    assert emu.journal() == []


def test_journal_is_thread_safe(emu: Emulator) -> None:
    def hammer() -> None:
        with httpx2.Client() as http:
            for _ in range(10):
                http.get(f"{emu.base_url}/v1beta/files?pageSize=1", headers={"x-goog-api-key": KEY})

    threads = [threading.Thread(target=hammer) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(emu.journal()) == 50


def test_scenario_file(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text('enqueued_token_limit = 5000\nserver_error_kinds = ["batches.create"]\n'
                        'pending_seconds = 2\nlost_create_mode = "delay"\n')
    settings = EmulatorSettings.from_toml(scenario)
    assert settings.enqueued_token_limit == 5000 and settings.server_error_kinds == {"batches.create"}
    assert settings.pending_seconds == 2.0 and settings.lost_create_mode == "delay"
    scenario.write_text("enqueued_tokens = 5\n")
    with pytest.raises(ValueError, match=r"s\.toml.*'enqueued_tokens'"):
        EmulatorSettings.from_toml(scenario)
    scenario.write_text('pending_seconds = "soon"\n')
    with pytest.raises(ValueError, match="pending_seconds"):
        EmulatorSettings.from_toml(scenario)
    scenario.write_text('lost_create_mode = "vanish"\n')
    with pytest.raises(ValueError, match=r"s\.toml: lost_create_mode"):
        EmulatorSettings.from_toml(scenario)


def test_command_line_options(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text("creates_per_minute = 7\nseed = 4\n")
    parser = build_parser()
    args = parser.parse_args(["--scenario", str(scenario), "--seed", "9", "--max-concurrent-jobs", "off",
                              "--lost-answer-kinds", "files.get,batches.get", "--long-file-id-bug"])
    settings = settings_from_args(args)
    assert (settings.creates_per_minute, settings.seed, settings.max_concurrent_jobs) == (7, 9, None)
    assert settings.lost_answer_kinds == {"files.get", "batches.get"} and settings.long_file_id_bug is True
    help_text = parser.format_help()
    for name in EmulatorSettings.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in help_text
    assert "(default: 100)" in help_text


def test_service_knobs_from_scenario_and_command_line(tmp_path: Path) -> None:
    defaults = EmulatorSettings()
    assert (defaults.file_processing_seconds, defaults.file_processing_seconds_per_mib, defaults.file_failed_rate,
            defaults.quota_error_details, defaults.missing_file_status, defaults.refused_mime_types,
            defaults.inline_results_max_requests, defaults.batches_list_order, defaults.flat_batch_stats) == (
        0.3, 0.05, 0.0, "help", 403, {"jsonl"}, 0, "newest", False)
    assert "gemini-2.5-flash" in defaults.models and "gemini-2.5-flahs" not in defaults.models
    scenario = tmp_path / "s.toml"
    scenario.write_text('file_processing_seconds = 0\nquota_error_details = "full"\nmissing_file_status = 404\n'
                        'models = []\nrefused_mime_types = ["jsonl", "application/jsonl"]\n'
                        'inline_results_max_requests = 5\nbatches_list_order = "shuffled"\nflat_batch_stats = true\n')
    settings = EmulatorSettings.from_toml(scenario)
    assert (settings.file_processing_seconds, settings.quota_error_details, settings.missing_file_status,
            settings.models, settings.refused_mime_types, settings.inline_results_max_requests,
            settings.batches_list_order, settings.flat_batch_stats) == (
        0.0, "full", 404, set(), {"jsonl", "application/jsonl"}, 5, "shuffled", True)
    for bad, message in (('quota_error_details = "some"', r"s\.toml: quota_error_details must be one of"),
                         ("missing_file_status = 410", r"s\.toml: missing_file_status must be one of"),
                         ('batches_list_order = "random"', r"s\.toml: batches_list_order must be one of"),
                         ("file_failed_rate = 2", r"s\.toml: file_failed_rate must be between 0 and 1"),
                         ("file_processing_seconds = -1", r"s\.toml: file_processing_seconds must not be negative"),
                         ('models = "gemini-2.5-flash"', r"setting 'models' must be a list of strings")):
        scenario.write_text(bad + "\n")
        with pytest.raises(ValueError, match=message):
            EmulatorSettings.from_toml(scenario)
    parser = build_parser()
    args = parser.parse_args(["--models", "", "--refused-mime-types", "application/jsonl", "--missing-file-status",
                              "404", "--quota-error-details", "none", "--flat-batch-stats",
                              "--file-processing-seconds-per-mib", "0.5", "--batches-list-order", "oldest"])
    settings = settings_from_args(args)
    assert (settings.models, settings.refused_mime_types, settings.missing_file_status, settings.quota_error_details,
            settings.flat_batch_stats, settings.file_processing_seconds_per_mib, settings.batches_list_order) == (
        set(), {"application/jsonl"}, 404, "none", True, 0.5, "oldest")
    with pytest.raises(ValueError, match="quota_error_details must be one of"):
        settings_from_args(parser.parse_args(["--quota-error-details", "all"]))
    help_text = " ".join(parser.format_help().split())
    assert "python-genai #1218" in help_text and "(default: help)" in help_text and "(default: 403)" in help_text
    assert "a guess" in help_text and "(default: jsonl)" in help_text


def test_python_dash_m_serves_and_stops_on_ctrl_c() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gembatch.core.emulator", "--port", "0", "--pending-seconds",
                             "0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("gembatch emulator listening on http://127.0.0.1:")
        url = first.split(" on ", 1)[1].strip()
        snippet = [proc.stdout.readline() for _ in range(4)]
        assert any(f'base_url="{url}", api_version="v1beta"' in line for line in snippet)
        response = httpx2.get(f"{url}/v1beta/batches?pageSize=1", headers={"x-goog-api-key": KEY})
        assert response.status_code == 200
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        log = proc.stderr.read()
        assert "GET /v1beta/batches?pageSize=1 batches.list" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
