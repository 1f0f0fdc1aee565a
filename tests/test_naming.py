"""Every display name core/naming.py writes, it reads back (the rebuild finds jobs by them), whatever the stem."""

from __future__ import annotations

import pytest
from gembatch.core.naming import (
    JobName,
    job_display_name,
    name_stem,
    parse_job_display_name,
    run_job_prefix,
    upload_display_name,
)
from hypothesis import given
from hypothesis import strategies as st

HEX = "0123456789abcdef"
SHA = "0123456789abcdef" * 4


@given(run_id=st.text(HEX, min_size=8, max_size=8), batch_id=st.text(min_size=1, max_size=300),
       sha=st.text(HEX, min_size=64, max_size=64), attempt=st.integers(1, 999))
def test_job_display_names_round_trip(run_id: str, batch_id: str, sha: str, attempt: int) -> None:
    name = job_display_name(run_id, batch_id, sha, attempt)
    assert parse_job_display_name(name) == JobName(run_id, name_stem(batch_id), sha[:12], attempt)
    assert name.startswith(run_job_prefix(run_id))
    assert not name.startswith(run_job_prefix(run_id[:-1]))  # another run's prefix never matches


@pytest.mark.parametrize("batch_id", [
    "part-0001-a3",  # ends the way a name ends
    f"x-{SHA[:12]}-a2",  # holds a hash and an attempt of its own
    "deadbeef-cafe",  # looks like a run id
    "gembatch-upload-x",
    "résumé 2024 (final)",
    "..",
    "-",
    "a" * 300,  # cut to 200
])
def test_odd_file_names_round_trip(batch_id: str) -> None:
    name = job_display_name("0a1b2c3d", batch_id, SHA, 7)
    assert parse_job_display_name(name) == JobName("0a1b2c3d", name_stem(batch_id), SHA[:12], 7)
    assert set(name_stem(batch_id)) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def test_other_names_are_not_ours() -> None:
    for name in (None, "", "my-batch", upload_display_name(SHA), "gembatch-upload-" + "a" * 40,
                 "gembatch-abc-x-123-a1"):
        assert parse_job_display_name(name) is None
