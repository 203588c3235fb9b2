"""A subject's timeline with durations: pure arithmetic over timeline rows."""

from __future__ import annotations

import itertools
from datetime import datetime

from carehook.inbox.work import TimelineRow
from carehook.operations.models import Timeline, TimelineEntry


def build_timeline(subject: str, state: str | None, rows: list[TimelineRow]) -> Timeline:
    """Each entry with the time since the previous one and the first; the time per state."""
    entries: list[TimelineEntry] = []
    previous: datetime | None = None
    first = rows[0].at if rows else None
    for row in rows:
        gap = None if previous is None else (row.at - previous).total_seconds()
        elapsed = 0.0 if first is None else (row.at - first).total_seconds()
        entries.append(TimelineEntry(row.id, row.at, row.event_pk, row.type, row.state,
                                     row.detail, gap, elapsed))  # fmt: skip
        previous = row.at
    total = (rows[-1].at - rows[0].at).total_seconds() if rows else None
    return Timeline(subject, state, entries, total, state_durations(rows))


def state_durations(rows: list[TimelineRow]) -> dict[str, float]:
    """Seconds spent in each state: from an entry to the next, summed per state (the current
    state's open span is not counted)."""
    spans: dict[str, float] = {}
    for row, following in itertools.pairwise(rows):
        spans[row.state] = spans.get(row.state, 0.0) + (following.at - row.at).total_seconds()
    return spans


def duration(seconds: float) -> str:
    """``+0.250s``, ``+12.0s``, ``+3m05s``, ``+2h04m``, ``+3d02h``."""
    if seconds < 60:
        return f"+{seconds:.3f}s" if seconds < 10 else f"+{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"+{days}d{hours:02d}h"
    return f"+{hours}h{minutes:02d}m" if hours else f"+{minutes}m{secs:02d}s"
