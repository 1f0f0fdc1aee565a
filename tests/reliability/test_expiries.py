"""Files that expire on the server (they live 48 h): an upload before its create (re-uploaded: see
tests/engine/test_engine_run.py), and a result file before it was downloaded (a run stopped for two days)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gembatch.core.engine import EXIT_INCOMPLETE, EXIT_OK
from gembatch.core.events import BatchChanged, Event
from gembatch.core.model import Stage

from ..engine.helpers import engine_settings, run_engine
from .support import FIGURES, assert_no_display_name_twice, assert_results_complete, write_inputs


async def test_a_result_file_gone_before_its_download_ends_the_batch_instead_of_retrying_forever(
        tmp_path: Path, emulator) -> None:
    """ENGINE CHANGE NEEDED (see docs/reliability.md): Engine._download_one retries a download that answers 404 every
    5 s for ever, so the run never ends. A result file that is gone will not come back: the batch must end (as a job
    that EXPIRED: submitted again while attempts remain) and the run must finish."""
    write_inputs(tmp_path / "in", 3, 2, tag="gone")
    settings = engine_settings(tmp_path, emulator.base_url)
    if hasattr(settings.recovery, "result_gone_after"):  # the proposed setting: how long a 404 may last
        settings.recovery.result_gone_after = 1.0
    expired: list[str] = []

    def expire_the_results(event: Event) -> None:
        rec = event.record if isinstance(event, BatchChanged) else None
        if rec is not None and rec.stage is Stage.SUCCEEDED and rec.batch_id == "part_002" and not expired \
                and rec.result_name:
            expired.append(rec.result_name)
            emulator.expire_file(rec.result_name)

    try:
        code, engine, _ = await run_engine(settings, timeout=15, hooks=(expire_the_results,))
    except TimeoutError:
        pytest.fail("ENGINE CHANGE NEEDED: a result file gone from the server is downloaded again every 5 s for "
                    "ever and the run never ends; see docs/reliability.md, 'engine changes'")
    assert expired
    rec = engine.records["part_002"]
    assert code in (EXIT_OK, EXIT_INCOMPLETE)
    if code == EXIT_OK:  # submitted again as a new attempt, whose results arrived
        assert rec.attempt == 2 and rec.stage is Stage.DOWNLOADED  # a1 succeeded too, but its results are lost
        assert_no_display_name_twice(emulator)
        assert_results_complete(settings.input_dir, settings.output_dir)
    else:
        assert rec.stage in (Stage.FAILED, Stage.EXPIRED) and "gone" in (rec.last_error or "")
        assert_no_display_name_twice(emulator)
    FIGURES["result files expired before download"] += 1

