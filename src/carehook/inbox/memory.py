"""The inbox port (intake and work halves) in dicts: the fake the contract suite holds to the
same rules as the SQLite and PostgreSQL adapters. Public through :mod:`carehook.testing`.

Single-threaded by construction (every method runs to completion on the event loop without
awaiting in between), so a claim is atomic the way the real adapters' transactions are. Time
comes from the injected ``clock``, so a test can expire leases or reach retry times without
sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from carehook.crypto import KeyRing, payload_aad
from carehook.envelope import Envelope, RequestRecord
from carehook.errors import StorageUnavailable
from carehook.inbox._base import StoreBase
from carehook.inbox._common import as_utc, initial_status, utcnow
from carehook.inbox._memory_reads import MemoryReads  # the operator reads (admin surface)
from carehook.inbox._memory_work import MemoryWork, StoredEvent
from carehook.inbox._signal import WorkSignal
from carehook.inbox.port import (
    ACTION_PAYLOAD_VIEW,
    OUTCOME_DUPLICATE,
    AuditRow,
    EventFilter,
    EventRow,
    RequestRow,
)
from carehook.inbox.work import AttemptRow, ReviewRow, StepRow, TimelineRow


class InMemoryInbox(MemoryWork, MemoryReads, StoreBase):
    """The inbox port in dicts, payloads encrypted like the real stores.

    Set ``unavailable = True`` to make every write raise StorageUnavailable (the store is
    "down"), as a test of the 503 path needs. ``events``, ``requests``, ``audit``, ``steps``,
    ``attempts``, ``timeline_rows`` and ``subjects`` are public so a test can look at what was
    stored.
    """

    def __init__(self, keyring: KeyRing, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._keyring = keyring
        self._clock = clock
        self.events: dict[int, StoredEvent] = {}
        self.requests: list[RequestRow] = []
        self.audit: list[AuditRow] = []
        self.steps: dict[int, dict[str, StepRow]] = {}
        self.attempts: dict[int, list[AttemptRow]] = {}
        self.timeline_rows: list[TimelineRow] = []
        self.subjects: dict[str, tuple[str, datetime]] = {}
        self.subject_blobs: dict[str, bytes] = {}
        self.reviews: dict[int, ReviewRow] = {}
        self._keys: dict[tuple[str, str], int] = {}
        self._last_pk = 0
        self._signal = WorkSignal()
        self.unavailable = False
        self.opened = False

    async def open(self) -> None:
        """Nothing to connect to."""
        self.opened = True

    async def close(self) -> None:
        """Nothing to release."""
        self.opened = False

    async def ping(self) -> None:
        """Raise StorageUnavailable while ``unavailable`` is set."""
        self._check()

    def _check(self) -> None:
        if self.unavailable:
            raise StorageUnavailable("the in-memory inbox is set unavailable")

    # -- intake ------------------------------------------------------------------------------

    async def accept(self, envelope: Envelope, request: RequestRecord) -> bool:
        """Store the event once per (source, event_id); log the request either way."""
        self._check()
        e = envelope
        key = (e.source, e.event_id)
        new = key not in self._keys
        if new:
            self._last_pk += 1
            pk = self._last_pk
            received = as_utc(e.received_at)
            row = EventRow(
                id=pk,
                source=e.source,
                vendor=e.vendor,
                event_id=e.event_id,
                type=e.type,
                subject=e.subject,
                status=initial_status(e.handled),
                attempts=0,
                received_at=received,
                occurred_at=None if e.occurred_at is None else as_utc(e.occurred_at),
                secret_index=e.secret_index,
                next_attempt_at=received if e.handled else None,
                payload_purged=False,
            )
            blob = self._keyring.encrypt(e.payload, payload_aad(e.source, e.event_id))
            self.events[pk] = StoredEvent(row, blob)
            self._keys[key] = pk
        if request.event_id is None:
            request = replace(request, event_id=e.event_id)
        self._log(request if new else replace(request, outcome=OUTCOME_DUPLICATE))
        if new and e.handled:
            self._signal.notify()
        return new

    async def log_request(self, record: RequestRecord) -> None:
        """Append a request-log row."""
        self._check()
        self._log(record)

    def _log(self, r: RequestRecord) -> None:
        self.requests.append(
            RequestRow(
                id=len(self.requests) + 1,
                source=r.source,
                received_at=as_utc(r.received_at),
                remote_addr=r.remote_addr,
                size=r.size,
                status=r.status,
                outcome=r.outcome,
                cause=r.cause,
                event_id=r.event_id,
            )
        )

    def _event_rows(self) -> list[EventRow]:
        """Every stored event's row, oldest first (for the operator reads)."""
        return [s.row for s in self.events.values()]

    async def list_events(self, flt: EventFilter) -> list[EventRow]:
        """Events matching ``flt``, newest first."""
        rows = [
            s.row
            for s in reversed(self.events.values())
            if (flt.source is None or s.row.source == flt.source)
            and (flt.status is None or s.row.status == flt.status)
            and (flt.type is None or s.row.type == flt.type)
        ]
        return rows[: flt.limit]

    async def get_event(self, event_pk: int) -> EventRow | None:
        """One event's metadata, or None."""
        stored = self.events.get(event_pk)
        return None if stored is None else stored.row

    async def read_payload(self, event_pk: int, actor: str) -> bytes | None:
        """Decrypt one payload and audit the access; None once purged or unknown."""
        stored = self.events.get(event_pk)
        if stored is None or stored.ciphertext is None:
            return None
        plaintext = self._decrypt(stored)
        self._check()
        self._audit(actor, ACTION_PAYLOAD_VIEW, event_pk, "")
        return plaintext

    def _decrypt(self, stored: StoredEvent) -> bytes | None:
        if stored.ciphertext is None:
            return None
        row = stored.row
        return self._keyring.decrypt(stored.ciphertext, payload_aad(row.source, row.event_id))

    def _audit(self, actor: str, action: str, event_pk: int | None, detail: str) -> None:
        self.audit.append(
            AuditRow(
                id=len(self.audit) + 1,
                at=self._now(),
                actor=actor,
                action=action,
                event_id=event_pk,
                detail=detail,
            )
        )

    async def list_requests(self, limit: int = 100, source: str | None = None) -> list[RequestRow]:
        """Request-log rows, newest first."""
        rows = [r for r in reversed(self.requests) if source is None or r.source == source]
        return rows[:limit]

    async def list_audit(self, limit: int = 100) -> list[AuditRow]:
        """Audit rows, newest first."""
        return list(reversed(self.audit))[:limit]
