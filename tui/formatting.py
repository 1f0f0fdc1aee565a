"""How times, durations and counts read on screen (UTC, like the headless log)."""

from __future__ import annotations

import time

from rich.cells import cell_len, set_cell_size


def clock_time(at: float) -> str:
    """`HH:MM:SS` of a unix time, in UTC."""
    return time.strftime("%H:%M:%S", time.gmtime(at))


def date_time(at: float) -> str:
    """`YYYY-MM-DD HH:MM:SSZ` of a unix time, in UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))


def hms(seconds: float) -> str:
    """`H:MM:SS` (elapsed time, estimates); negative counts as zero."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def countdown(seconds: float) -> str:
    """`M:SS` under an hour, else `H:MM:SS`; rounds up so a countdown shows 0:00 only at the end."""
    total = max(0, int(-(-seconds // 1)))
    if total >= 3600:
        return hms(total)
    minutes, secs = divmod(total, 60)
    return f"{minutes}:{secs:02d}"


def time_left(expires_at: float | None, now: float) -> str:
    """A short time-left label at minute resolution: `47h59m`, `12m`, `<1m`, `expired`, or ``."""
    if expires_at is None:
        return ""
    left = expires_at - now
    if left <= 0:
        return "expired"
    minutes = int(left // 60)
    if minutes < 1:
        return "<1m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def count(value: int) -> str:
    """An integer with thousands separators."""
    return f"{value:,}"


def shorten(text: str, width: int) -> str:
    """`text` cut to `width` cells with an ellipsis when it is longer (one line)."""
    text = " ".join(text.split())
    if width <= 0:
        return ""
    if cell_len(text) <= width:
        return text
    return set_cell_size(text, width - 1) + "…"


def last_cells(text: str, width: int) -> str:
    """The end of `text` that fits in `width` cells."""
    kept: list[str] = []
    used = 0
    for char in reversed(text):
        used += cell_len(char)
        if used > width:
            break
        kept.append(char)
    return "".join(reversed(kept))


def shorten_middle(text: str, width: int) -> str:
    """`text` cut to `width` cells with an ellipsis in the middle, keeping its end (`refin…_142`)."""
    text = " ".join(text.split())
    if width <= 0:
        return ""
    if cell_len(text) <= width:
        return text
    if width == 1:
        return "…"
    tail = (width - 1) // 2
    head = set_cell_size(text, width - 1 - tail)
    return head + "…" + last_cells(text, tail)


def compact_count(value: int) -> str:
    """A short count for tight panes: `950`, `33k`, `212k`, `1.2M`."""
    if value < 1000:
        return str(value)
    if value < 999_500:
        return f"{value / 1000:.0f}k"
    return f"{value / 1_000_000:.1f}M"
