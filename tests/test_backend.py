"""The backend boundary: the Gemini backend maps the service's spellings onto core.backend's types, and the
composition opens the backend the `backend` setting names (or says which values it takes)."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from pathlib import Path

import pytest
from gembatch.core import compose, gateway
from gembatch.core.backend import BatchBackend, FileState, JobState
from gembatch.core.cli_args import resolve_settings
from gembatch.core.config import ConfigError, Settings, load_settings
from gembatch.core.workflow.common import WorkflowError, open_backend
from google.genai import types

from .conftest import FAKE_KEY
from .engine.memory_backend import MemoryBackend


@pytest.mark.parametrize(("server", "state", "ended"), [
    ("BATCH_STATE_PENDING", JobState.PENDING, False),
    ("BATCH_STATE_RUNNING", JobState.RUNNING, False),
    ("BATCH_STATE_SUCCEEDED", JobState.SUCCEEDED, True),
    ("BATCH_STATE_FAILED", JobState.FAILED, True),
    ("BATCH_STATE_CANCELLED", JobState.CANCELLED, True),
    ("BATCH_STATE_EXPIRED", JobState.EXPIRED, True),
    ("BATCH_STATE_UNSPECIFIED", JobState.UNSPECIFIED, False),
    ("JOB_STATE_QUEUED", JobState.QUEUED, False),
    ("JOB_STATE_PAUSED", JobState.OTHER, False),
])
def test_the_gemini_backend_maps_each_job_state_and_keeps_the_services_word(server: str, state: JobState,
                                                                             ended: bool) -> None:
    job = gateway.job_from_operation({"name": "batches/1", "metadata": {"state": server}})
    assert job.state is state and job.ended is ended
    assert job.state_label == server.replace("BATCH_STATE_", "JOB_STATE_")  # what the checkpoint has always kept


def test_a_job_the_sdk_returns_is_mapped_too() -> None:
    job = gateway._job_from_sdk(types.BatchJob(name="batches/2", state=types.JobState.JOB_STATE_RUNNING))
    assert job.state is JobState.RUNNING and job.state_label == "JOB_STATE_RUNNING"


@pytest.mark.parametrize(("server", "state"), [
    ("ACTIVE", FileState.ACTIVE), ("PROCESSING", FileState.PROCESSING), ("FAILED", FileState.FAILED),
    ("STATE_UNSPECIFIED", FileState.UNSPECIFIED), (None, None),
])
def test_the_gemini_backend_maps_each_file_state(server: str | None, state: FileState | None) -> None:
    assert gateway.file_state(server) is state


def test_an_upload_lives_as_long_as_the_server_says_else_the_files_apis_48_hours() -> None:
    created = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    said = gateway._remote_file(types.File(name="files/a", create_time=created, state="ACTIVE",
                                           expiration_time=datetime(2026, 12, 1, 7, 0, tzinfo=UTC)))
    silent = gateway._remote_file(types.File(name="files/b", create_time=created, state="ACTIVE"))
    assert said.lifetime == 3600.0 and said.usable
    assert silent.lifetime == 48 * 3600.0 and silent.expires_at == created.timestamp() + 48 * 3600.0
    assert gateway._remote_file(types.File(name="files/c")).expires_at is None  # no time at all: none known


def test_the_default_backend_is_the_gemini_one_with_the_runs_settings() -> None:
    settings = Settings(model="gemini-2.5-pro", base_url="http://127.0.0.1:9")
    settings.transfer.max_retries = 3
    backend = compose.open_backend(settings, FAKE_KEY, model="gemini-2.0-flash")
    assert isinstance(backend, gateway.Gateway)
    assert backend.model == "gemini-2.0-flash" and backend._base_url == "http://127.0.0.1:9"
    assert backend._max_retries == 3 and backend.list_page_size == gateway.LIST_PAGE_SIZE


def test_an_unknown_backend_in_the_config_file_names_the_file_line_setting_and_valid_values(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('model = "gemini-2.5-flash"\nbackend = "vertex"\n', encoding="utf-8")
    settings = load_settings(path)
    with pytest.raises(ConfigError) as caught:
        compose.open_backend(settings, FAKE_KEY)
    assert str(caught.value) == f"{path}:2: backend: unknown backend 'vertex'; expected one of 'gemini'"


def test_the_main_command_refuses_an_unknown_backend_before_anything_runs(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('backend = "memory"\n', encoding="utf-8")
    (tmp_path / "in").mkdir()
    with pytest.raises(ConfigError, match=r"config.toml:1: backend: unknown backend 'memory'; expected one of"):
        resolve_settings(["--config", str(path), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")])


def test_a_subcommand_reports_an_unknown_backend_as_its_own_error() -> None:
    with pytest.raises(WorkflowError, match="backend: unknown backend 'nope'; expected one of 'gemini'"):
        open_backend(Settings(backend="nope"), FAKE_KEY)


def test_adding_a_backend_is_one_entry_in_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    def open_other(settings: Settings, api_key: str, *, model: str, base_url: str | None, trace: object) -> object:
        made.append(model)
        return "the other backend"

    monkeypatch.setitem(compose.BACKENDS, "other", open_other)
    assert compose.open_backend(Settings(backend="other", model="m"), FAKE_KEY) == "the other backend"
    assert made == ["m"]
    with pytest.raises(ConfigError, match="expected one of 'gemini', 'other'"):
        compose.open_backend(Settings(backend="third"), FAKE_KEY)


def _members(cls: type) -> dict[str, list[str]]:
    """Public methods of a class with their parameter names (self left out)."""
    return {name: list(inspect.signature(value).parameters)[1:] for name, value in vars(cls).items()
            if callable(value) and not name.startswith("_")}


@pytest.mark.parametrize("backend", [gateway.Gateway, MemoryBackend])
def test_each_backend_has_every_method_of_the_protocol_with_its_parameters(backend: type) -> None:
    wanted = _members(BatchBackend)
    have = _members(backend)
    assert {name: have.get(name) for name in wanted} == wanted
    assert all(inspect.iscoroutinefunction(getattr(backend, name)) for name in wanted)
    assert {"list_page_size", "on_retry"} <= set(BatchBackend.__annotations__)
