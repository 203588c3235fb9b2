"""What the operator service returns: plain dataclasses, metadata only (payloads are bytes apart).

The CLI prints them as tables or JSON, the admin API serialises them, the dashboard renders
them; none of them holds a payload, so none of them can carry PHI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from carehook.inbox.port import EventRow
from carehook.inbox.work import AttemptRow, StepRow

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list, newest first; ``next_cursor`` (an id) fetches the next, if any."""

    items: list[T]
    next_cursor: int | None


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """What the service knows of a configured source (never its secrets, only their ids)."""

    name: str
    vendor: str
    endpoint: str
    #: the configured secrets' ids (``SourceSettings.secret_ids``)
    secret_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class EventDetail:
    """One event's metadata, finished steps and every attempt."""

    event: EventRow
    steps: list[StepRow]
    attempts: list[AttemptRow]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead event with its last error."""

    event: EventRow
    failed_at: datetime | None
    error_class: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class SecretStatus:
    """One secret of a source, by id (``index``: the id, a position only in a source never
    rotated): configured still, events it verified, last match."""

    index: int
    configured: bool
    events: int
    last_matched_at: datetime | None


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """A source's endpoint, secrets and recent traffic."""

    name: str
    vendor: str
    endpoint: str
    configured: bool
    secrets: list[SecretStatus]
    last_matched_index: int | None
    last_matched_at: datetime | None
    last_accepted_at: datetime | None
    last_rejected_at: datetime | None
    rejections_24h: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """A timeline row with the time since the previous entry and since the first."""

    id: int
    at: datetime
    event_pk: int
    type: str
    state: str
    detail: str
    since_previous_seconds: float | None
    elapsed_seconds: float


@dataclass(frozen=True, slots=True)
class Timeline:
    """A subject's timeline, its current state and the time it spent in each state."""

    subject: str
    state: str | None
    entries: list[TimelineEntry]
    total_seconds: float | None
    state_seconds: dict[str, float]


@dataclass(frozen=True, slots=True)
class RateSeries:
    """Requests per minute of one source and outcome over the last hour (oldest first)."""

    source: str
    outcome: str
    per_minute: list[int]


@dataclass(frozen=True, slots=True)
class Overview:
    """The dashboard's first page: traffic, queue, dead letters, rejections, worker health."""

    at: datetime
    rates: list[RateSeries]
    status_counts: dict[str, int]
    queue_depth: int
    oldest_waiting_seconds: float | None
    dead_letters: int
    in_flight: int
    last_claim_at: datetime | None
    rejections_24h: dict[str, dict[str, int]]
