"""The batch grid's rows: one per batch, keyed by batch id, filtered and sorted (no Textual here).

Updates are diffs: a changed record whose sort value and filter match did not move only asks for its own
row to be drawn again; a new batch, or a change that moves a row, rebuilds the view once per burst.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from gembatch.core.model import STAGE_GLYPHS, BatchRecord, Stage
from rich.cells import cell_len

from .formatting import count, time_left

STAGE_RANK = {stage: rank for rank, stage in enumerate(Stage)}
EXPIRY_STAGES = frozenset({Stage.UPLOADING, Stage.UPLOADED, Stage.CREATING})


def stage_label(stage: Stage) -> str:
    """The stage as glyph and text, e.g. `✓ downloaded`: readable without colour."""
    return f"{STAGE_GLYPHS.get(stage, '?')} {stage.value}"


def short_job(job_name: str | None) -> str:
    """The job's id: the last part of its resource name (`batches/ID` on Gemini), whatever the backend."""
    if not job_name:
        return ""
    return job_name.rpartition("/")[2]  # the id: the last part of any backend's resource name


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the grid: `width` 0 means sized from the content and the room there is."""

    key: str
    title: str
    width: int
    align: Literal["left", "right"] = "left"
    optional: bool = False  # left out when the batch names could not be shown whole with it


COLUMNS: tuple[Column, ...] = (
    Column("name", "Batch", 0),
    Column("stage", "Stage", 12),
    Column("job", "Job", 0),
    Column("requests", "Reqs", 6, "right"),
    Column("succeeded", "OK", 6, "right"),
    Column("failed", "Fail", 5, "right"),
    Column("expiry", "Expires", 7, "right", optional=True),  # the uploads pane shows it too
    Column("error", "Last error", 0),
)
GUTTER = 2  # the cursor marker and a space: the selected row is visible without colour
NAME_MIN, JOB_MIN, ERROR_MIN = 10, 8, 10  # the narrowest a flexible column gets
ERROR_FAIR = 24  # the error column gets this much before job ids grow to their whole length


@dataclass(frozen=True, slots=True)
class Naturals:
    """The widest name, job id and error the grid has seen: what each flexible column would need."""

    name: int = 0
    job: int = 0
    error: int = 0


def layout_columns(width: int, naturals: Naturals) -> tuple[tuple[Column, int], ...]:
    """The columns that fit in `width` cells and their widths.

    The flexible columns share the room the fixed ones leave: first whole batch names, then a readable
    error, then whole job ids; the error column takes whatever is left, out to the right edge.
    """
    name_want = max(naturals.name, len("Batch ↑"))
    job_want = max(naturals.job, len("Job"))
    name_min, job_min = min(NAME_MIN, name_want), min(JOB_MIN, job_want)
    columns = COLUMNS
    while True:
        fixed = GUTTER + sum(c.width for c in columns) + len(columns) - 1
        room = width - fixed
        optional = [c for c in columns if c.optional]
        if room >= name_want + job_min + ERROR_MIN or not optional:
            break
        columns = tuple(c for c in columns if c is not optional[-1])
    spare = max(0, room - name_min - job_min - ERROR_MIN)

    def grow(current: int, want: int) -> int:
        nonlocal spare
        more = max(0, min(spare, want - current))
        spare -= more
        return current + more

    name = grow(name_min, name_want)
    error = grow(ERROR_MIN, min(ERROR_FAIR, max(naturals.error, ERROR_MIN)))
    job = grow(job_min, job_want)
    error += spare
    flexible = {"name": name, "job": job, "error": error}
    return tuple((c, c.width or flexible[c.key]) for c in columns)


def cell_text(column: str, rec: BatchRecord, now: float) -> str:
    """What one cell of `rec` shows; only `expiry` depends on the time."""
    match column:
        case "name":
            return rec.batch_id
        case "stage":
            return stage_label(rec.stage)
        case "job":
            return short_job(rec.job_name)
        case "requests":
            return count(rec.request_count) if rec.request_count else ""
        case "succeeded":
            return count(rec.succeeded_count) if rec.job_name or rec.succeeded_count else ""
        case "failed":
            return count(rec.failed_count) if rec.job_name or rec.failed_count else ""
        case "expiry":
            return time_left(rec.upload_expires_at, now) if rec.stage in EXPIRY_STAGES else ""
        case "error":
            return " ".join((rec.last_error or "").split())
    return ""


def _none_last(value: Any) -> tuple[bool, Any]:
    return (value is None, value if value is not None else 0)


SORTS: dict[str, tuple[str, Callable[[BatchRecord], Any] | None]] = {
    "input": ("input order", None),
    "name": ("name", lambda r: r.batch_id),
    "stage": ("stage", lambda r: STAGE_RANK[r.stage]),
    "requests": ("requests", lambda r: r.request_count),
    "failed": ("failed requests", lambda r: r.failed_count),
    "expiry": ("upload expiry", lambda r: _none_last(r.upload_expires_at if r.stage in EXPIRY_STAGES else None)),
    "error": ("last error", lambda r: (not r.last_error, r.last_error or "")),
    "updated": ("last change", lambda r: -r.updated_at),
}
SORT_ORDER = tuple(SORTS)
STAGE_PREFIX = "stage:"  # a filter that names one stage exactly


class GridModel:
    """Every batch the grid knows, and the ids it shows (filtered, sorted) in `view`."""

    def __init__(self) -> None:
        self.records: dict[str, BatchRecord] = {}
        self.version: dict[str, int] = {}
        self._position: dict[str, int] = {}
        self.view: list[str] = []
        self.row_of: dict[str, int] = {}
        self.sort_key = "input"
        self.descending = False
        self.filter_text = ""
        self.naturals = Naturals()

    # ---- queries ---------------------------------------------------------------------------------

    @property
    def sort_label(self) -> str:
        """How the view is sorted, for the pane's title."""
        label = SORTS[self.sort_key][0]
        return f"{label} ↓" if self.descending else label

    def matches(self, rec: BatchRecord) -> bool:
        """Does `rec` pass the filter (substring of name, stage, job or error, any case)?"""
        if not self.filter_text:
            return True
        needle = self.filter_text
        if needle.startswith(STAGE_PREFIX):  # `stage:failed`: that stage only (not errors that say "failed")
            return rec.stage.value == needle[len(STAGE_PREFIX):].strip()
        return any(
            needle in text.lower()
            for text in (rec.batch_id, rec.stage.value, rec.last_error or "", rec.job_name or "")
        )

    def _sort_value(self, rec: BatchRecord) -> Any:
        key = SORTS[self.sort_key][1]
        return None if key is None else key(rec)

    # ---- updates ---------------------------------------------------------------------------------

    def upsert(self, records: Iterable[BatchRecord]) -> set[str] | None:
        """Take in changed records; returns the ids whose rows changed in place, or None after a rebuild."""
        rebuild = False
        changed: set[str] = set()
        for rec in records:
            batch_id = rec.batch_id
            old = self.records.get(batch_id)
            if old is None:
                self._position[batch_id] = len(self._position)
                self.version[batch_id] = 0
                rebuild = rebuild or self.matches(rec)
            elif not rebuild:
                shown_before, shown_now = self.matches(old), self.matches(rec)
                rebuild = shown_before != shown_now or (
                    shown_now and self._sort_value(old) != self._sort_value(rec))
            self.records[batch_id] = rec
            self.version[batch_id] += 1
            self._measure(rec)
            changed.add(batch_id)
        if rebuild:
            self.rebuild()
            return None
        return {batch_id for batch_id in changed if batch_id in self.row_of}

    def _measure(self, rec: BatchRecord) -> None:
        """Widen the natural widths to fit `rec` (they never shrink: columns do not jump back and forth)."""
        naturals = self.naturals
        name = cell_len(rec.batch_id)
        job = cell_len(short_job(rec.job_name))
        error = cell_len(cell_text("error", rec, 0.0)) if rec.last_error else 0
        if name > naturals.name or job > naturals.job or error > naturals.error:
            self.naturals = Naturals(max(name, naturals.name), max(job, naturals.job), max(error, naturals.error))

    def rebuild(self) -> None:
        """Filter and sort every record into `view` (one pass, one sort)."""
        ids = [batch_id for batch_id, rec in self.records.items() if self.matches(rec)]
        key = SORTS[self.sort_key][1]
        if key is not None:
            records, position = self.records, self._position
            ids.sort(key=lambda i: (key(records[i]), position[i]))
        if self.descending:
            ids.reverse()
        self.view = ids
        self.row_of = {batch_id: row for row, batch_id in enumerate(ids)}

    def set_filter(self, text: str) -> None:
        """Show only the batches whose name, stage, job or error holds `text`."""
        text = text.strip().lower()
        if text != self.filter_text:
            self.filter_text = text
            self.rebuild()

    def sort_by(self, key: str) -> None:
        """Sort by the column `key` (a key of SORTS)."""
        if key not in SORTS:
            raise ValueError(f"no sort {key!r}; the sorts are {', '.join(SORTS)}")
        self.sort_key = key
        self.rebuild()

    def cycle_sort(self) -> None:
        """Sort by the next column."""
        index = SORT_ORDER.index(self.sort_key)
        self.sort_key = SORT_ORDER[(index + 1) % len(SORT_ORDER)]
        self.rebuild()

    def flip_order(self) -> None:
        """Reverse the sort."""
        self.descending = not self.descending
        self.rebuild()
