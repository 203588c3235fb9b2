"""The storage port: what the rest of carehook may ask of the inbox.

One Protocol (:class:`Store`: intake and work), one implementation over SQL
(:class:`carehook.inbox.store.SqlStore`) on SQLite and PostgreSQL, and the contract suites of
``tests/contract`` run against both databases. The worker's records and rules are in
:mod:`carehook.inbox.work`.

Durability contract: when ``accept`` returns, the event row and its request-log row are
committed (group commit: concurrent calls share one transaction and one fsync, but each call
returns only after the commit that holds its row). Driver errors are translated into
:class:`carehook.errors.StorageUnavailable` (transient: connection lost, database locked, disk
full) or :class:`carehook.errors.StorageError`; a text the store refuses (NUL, a lone
surrogate) raises :class:`carehook.errors.UnstorableValue` on both databases alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from carehook.envelope import Envelope, RequestRecord
from carehook.inbox.reads import AdminReads
from carehook.inbox.work import (
    AttemptRow,
    Claim,
    PurgeCounts,
    ReplayFilter,
    ReviewRow,
    StepRecord,
    StepRow,
    TimelineRow,
)
from carehook.workflows import ReviewRequest, TimelineEntry

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
    #: the internal key of the event concerned (never the vendor's event id)
    event_pk: int | None
    detail: str


class Store(AdminReads, Protocol):
    """The inbox port: intake (ingress), work (the worker, purge) and the operator's reads
    (:class:`carehook.inbox.reads.AdminReads`)."""

    async def __aenter__(self) -> Self:
        """``open`` the store."""
        ...

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        """``close`` the store."""
        ...

    async def open(self) -> None:
        """Connect, check the schema is current, start the group-commit writer."""
        ...

    async def close(self) -> None:
        """Flush pending writes and release every connection."""
        ...

    async def ping(self) -> None:
        """Raise StorageUnavailable unless a write commits (``/readyz``)."""
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

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Claim]:
        """Claim up to ``limit`` claimable events (oldest first) for ``owner``."""
        ...

    async def extend_leases(self, owner: str, pks: Sequence[int], lease_seconds: float) -> set[int]:
        """Push the leases ``owner`` still holds forward; returns the pks still held."""
        ...

    async def release_dead_owners(self, host: str, alive_pids: Sequence[int]) -> int:
        """Expire leases held by owners on ``host`` whose pid is not alive (after a kill -9).

        Owners are ``"<host>:<pid>:<random>"``. Returns how many leases were expired.
        """
        ...

    async def finished_steps(self, pk: int) -> dict[str, StepRow]:
        """The steps of event ``pk`` already finished, by name (a claim carries their names)."""
        ...

    async def record_step(
        self,
        pk: int,
        owner: str,
        name: str,
        outcome: str,
        detail: str,
        timeline: TimelineEntry | None,
        *,
        data: Mapping[str, object] | None = None,
        review: ReviewRequest | None = None,
    ) -> None:
        """Record a finished step with its timeline entry, the event subject's new working
        ``data`` (replacing it, encrypted) and a review item, atomically (see the module doc)."""
        ...

    async def subject_data(self, subject: str) -> dict[str, object]:
        """A subject's working data, decrypted (``{}`` if it has none)."""
        ...

    async def list_reviews(self, status: str | None = "open", limit: int = 100) -> list[ReviewRow]:
        """Review items, newest first (``status`` None: all)."""
        ...

    async def resolve_review(self, review_id: int, actor: str, note: str) -> ReviewRow:
        """Resolve an open review item with ``note``, audited; ReviewError if there is no such
        item or it is already resolved."""
        ...

    async def start_session(self, session: str, actor: str) -> None:
        """Audit a dashboard sign-in of ``actor`` (``session``: its id, never its cookie)."""
        ...

    async def end_session(self, session: str, expires_at: datetime, actor: str) -> None:
        """Remember that dashboard session ``session`` (its id) was ended before
        ``expires_at``, everywhere this database is shared, and audit the sign-out of
        ``actor``: one transaction. The purge forgets the session after ``expires_at``."""
        ...

    async def session_ended(self, session: str) -> bool:
        """Whether ``session`` was ended (``end_session``) and has not yet been purged."""
        ...

    async def complete(self, pk: int, owner: str, step: StepRecord | None = None) -> None:
        """Record ``step`` (as ``record_step``) and mark the event ``done``, close its attempt,
        drop the lease: one transaction."""
        ...

    async def defer(self, pk: int, owner: str, until: datetime) -> None:
        """Give the event back due at ``until``: a planned wait, the attempt not counted, no
        error recorded, never dead-lettered."""
        ...

    async def fail(
        self, pk: int, owner: str, error_class: str, message: str, retry_at: datetime | None
    ) -> str:
        """Close the attempt with its error; ``retrying`` at ``retry_at``, or ``dead`` if None."""
        ...

    async def release(self, pk: int, owner: str) -> None:
        """Give the event back unfinished (shutdown): due now, this attempt not counted."""
        ...

    async def replay(self, flt: ReplayFilter, actor: str, *, dry_run: bool = False) -> int:
        """Put matching events (not ``processing``/``unhandled``) back to ``pending``, due now,
        attempts reset, one audit row each; returns how many (would be) replayed."""
        ...

    async def list_steps(self, pk: int) -> list[StepRow]:
        """Every finished step of event ``pk``, in order."""
        ...

    async def list_attempts(self, pk: int) -> list[AttemptRow]:
        """Every attempt at event ``pk``, in order."""
        ...

    async def last_errors(self, pks: Sequence[int]) -> dict[int, AttemptRow]:
        """The last failed attempt of each of ``pks`` (for ``dlq ls``)."""
        ...

    async def timeline(self, subject: str, limit: int = 500) -> list[TimelineRow]:
        """A subject's timeline, oldest first."""
        ...

    async def subject_state(self, subject: str) -> str | None:
        """A subject's current state, or None."""
        ...

    async def purge(
        self,
        now: datetime,
        retention_days: Mapping[str, int],
        default_retention_days: int,
        dedup_days: int,
        request_retention_days: Mapping[str, int] | None = None,
        default_request_retention_days: int | None = None,
    ) -> PurgeCounts:
        """Drop payloads past their source's retention, finished events' dedup keys past
        ``dedup_days`` (metadata of purged payloads stays; rows past the dedup window go) and
        request-log rows past their source's request retention (None: kept), and ended
        dashboard sessions past their expiry."""
        ...

    async def next_due(self) -> datetime | None:
        """When ``claim`` may next find something without a new signal (None: nothing waits).

        The earliest of: the due time of each subject's head that is ``pending``/``retrying``,
        and the lease expiry of each head that is ``processing`` (its worker may be dead). Events
        queued behind their subject's head do not count: they become claimable when the head
        finishes, which signals ``wait_for_work``. The time may be in the past (work is due).
        """
        ...

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109 (a bounded wait is the contract)
        """Return when new work may be claimable (an accept, replay or release anywhere that
        this store can hear of: in-process for SQLite and the fake, LISTEN/NOTIFY on
        PostgreSQL), or after ``timeout`` seconds. Also signalled: a retry scheduled, dead
        owners' leases expired, and an event finishing while a later one of its subject
        waits. A signal raised while nobody waits is kept for the next wait (at worst a
        spurious wake-up, never a lost one) once this loop has called ``claim`` or waited."""
        ...


#: the names the two halves had before they were one port
InboxStore = Store
WorkStore = Store
