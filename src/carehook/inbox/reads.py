"""The operator's read half of the storage port: filtered, cursor-paged lists and aggregates.

What the admin API, the dashboard and the CLI ask of the store beyond the intake and worker
halves (:mod:`carehook.inbox.port`, :mod:`carehook.inbox.work`). Every list is newest first
by id (ids grow in order of receipt), so ``before`` (the last id of the previous page) gives
a stable cursor. Implemented once, by :class:`carehook.inbox._reads_sql.SqlReads`, for the one
store on both databases; part of :class:`carehook.inbox.port.Store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the port imports this module: its row types are for annotations only
    from carehook.inbox.port import AuditRow, EventRow, RequestRow
    from carehook.inbox.work import ReviewRow


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events to list: every given field must match; ``before`` is the cursor (an id)."""

    source: str | None = None
    type: str | None = None
    status: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: int | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class RequestQuery:
    """Which request-log rows to list."""

    source: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    before: int | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class SecretUse:
    """How often, and when last, a source's secret (by id) verified a stored event."""

    source: str
    secret_index: int
    events: int
    last_matched_at: datetime


@dataclass(frozen=True, slots=True)
class RequestCount:
    """Request-log rows of one (source, outcome, cause) since a time, and the newest's time
    (the outcome is ``rejected``: the only refusal the request log holds)."""

    source: str
    outcome: str
    cause: str
    count: int
    last_at: datetime


@dataclass(frozen=True, slots=True)
class RateBucket:
    """Requests of one source and outcome received within one minute."""

    minute: datetime
    source: str
    outcome: str
    count: int


class AdminReads(Protocol):
    """The operator's reads (a part of :class:`carehook.inbox.port.Store`)."""

    async def query_events(self, q: EventQuery) -> list[EventRow]:
        """Events matching ``q``, newest first, at most ``q.limit``, ids below ``q.before``."""
        ...

    async def query_requests(self, q: RequestQuery) -> list[RequestRow]:
        """Request-log rows matching ``q``, newest first."""
        ...

    async def query_reviews(
        self, status: str | None, before: int | None, limit: int
    ) -> list[ReviewRow]:
        """Review items (``status`` None: all), newest first, ids below ``before``."""
        ...

    async def query_audit(self, before: int | None, limit: int) -> list[AuditRow]:
        """Audit rows, newest first, ids below ``before``."""
        ...

    async def status_counts(self) -> dict[str, int]:
        """How many events are in each status (statuses without events are left out)."""
        ...

    async def oldest_waiting(self) -> datetime | None:
        """When the oldest ``pending`` or ``retrying`` event was received (None: none waits)."""
        ...

    async def last_claim_at(self) -> datetime | None:
        """When a worker last began an attempt (None: never)."""
        ...

    async def secret_usage(self) -> list[SecretUse]:
        """Per source and secret index: stored events it verified and the newest one's time."""
        ...

    async def rejection_counts(self, since: datetime) -> list[RequestCount]:
        """Rejected request-log rows received at or after ``since``, by source and cause."""
        ...

    async def request_rate(self, since: datetime) -> list[RateBucket]:
        """Request-log rows received at or after ``since``, per minute, source and outcome."""
        ...
