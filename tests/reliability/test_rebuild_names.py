"""The rebuild reads back exactly the names core/naming.py writes, whatever the file stem holds."""

from __future__ import annotations

from gembatch.core.naming import job_display_name
from gembatch.core.rebuild import JobName, name_stem, parse_job_display_name
from hypothesis import given
from hypothesis import strategies as st

HEX = "0123456789abcdef"


@given(run_id=st.text(HEX, min_size=8, max_size=8), batch_id=st.text(min_size=1, max_size=300),
       sha=st.text(HEX, min_size=64, max_size=64), attempt=st.integers(1, 999))
def test_job_display_names_round_trip(run_id: str, batch_id: str, sha: str, attempt: int) -> None:
    name = job_display_name(run_id, batch_id, sha, attempt)
    assert parse_job_display_name(name) == JobName(run_id, name_stem(batch_id), sha[:12], attempt)


def test_other_names_are_not_ours() -> None:
    for name in (None, "", "my-batch", "gembatch-upload-" + "a" * 40, "gembatch-abc-x-123-a1"):
        assert parse_job_display_name(name) is None
