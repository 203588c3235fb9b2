"""The storage port: what the rest of carehook may ask of the inbox.

One Protocol, two adapters (``sqlite.py``, ``postgres.py``) and one contract suite
(``tests/contract/test_inbox_contract.py``) run against both and against the in-memory fake
in :mod:`carehook.testing`.

Durability contract: when ``accept`` returns, the event row and its request-log row are
committed (group commit: concurrent calls share one transaction and one fsync, but each call
returns only after the commit that holds its row). Driver errors are translated into
:class:`carehook.errors.StorageUnavailable` (transient: connection lost, database locked, disk
full) or :class:`carehook.errors.StorageError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from carehook.envelope import Envelope, RequestRecord

#: every status an event can have
EVENT_STATUSES = ("pending", "processing", "retrying", "done", "dead", "unhandled")
#: the request-log outcome ``accept`` writes, in place of the caller's, for a duplicate event
OUTCOME_DUPLICATE = "duplicate"
#: the audit action ``read_payload`` records
ACTION_PAYLOAD_VIEW = "payload.view"


@dataclass(frozen=True, slots=True)
class EventRow:
    """An event's metadata as stored (never its payload)."""

    id: int
    source: str
    vendor: str
    event_id: str
    type: str
    subject: str
    status: str
    attempts: int
    received_at: datetime
    occurred_at: datetime | None
    secret_index: int
    next_attempt_at: datetime | None
    payload_purged: bool


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to list, newest first."""

    source: str | None = None
    status: str | None = None
    type: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class RequestRow:
    """A stored request-log line."""

    id: int
    source: str
    received_at: datetime
    remote_addr: str
    size: int
    status: int
    outcome: str
    cause: str
    event_id: str | None


@dataclass(frozen=True, slots=True)
class AuditRow:
    """Who did what to which event, when."""

    id: int
    at: datetime
    actor: str
    action: str
    event_id: int | None
    detail: str


class InboxStore(Protocol):
    """The inbox port."""

    async def open(self) -> None:
        """Connect, check the schema is current, start the group-commit writer."""
        ...

    async def close(self) -> None:
        """Flush pending writes and release every connection."""
        ...

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the store answers."""
        ...

    async def accept(self, envelope: Envelope, request: RequestRecord) -> bool:
        """Store the event (payload encrypted) and its request-log row durably.

        Returns True when the event is new, False when (source, event_id) was already stored;
        the request-log row is written either way, in the same transaction, its outcome replaced
        by :data:`OUTCOME_DUPLICATE` for a duplicate and its event_id defaulting to the
        envelope's. A new event is ``pending`` (due at once) if ``envelope.handled``, else
        ``unhandled``.
        """
        ...

    async def log_request(self, record: RequestRecord) -> None:
        """Durably append a request-log row for a request that stored no event."""
        ...

    async def list_events(self, flt: EventFilter) -> list[EventRow]:
        """Events matching ``flt``, newest first."""
        ...

    async def get_event(self, event_pk: int) -> EventRow | None:
        """One event's metadata, or None."""
        ...

    async def read_payload(self, event_pk: int, actor: str) -> bytes | None:
        """Decrypt one event's payload and audit the access; None once purged or unknown.

        The audit row (:data:`ACTION_PAYLOAD_VIEW`, ``actor``) is committed before the plaintext
        is returned: a view that cannot be audited raises instead.
        """
        ...

    async def list_requests(self, limit: int = 100, source: str | None = None) -> list[RequestRow]:
        """Request-log rows, newest first."""
        ...

    async def list_audit(self, limit: int = 100) -> list[AuditRow]:
        """Audit rows, newest first."""
        ...
