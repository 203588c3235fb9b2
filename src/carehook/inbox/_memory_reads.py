"""The operator's reads (:class:`carehook.inbox.reads.AdminReads`) of the in-memory inbox."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from carehook.inbox.port import AuditRow, EventRow, RequestRow
from carehook.inbox.reads import EventQuery, RateBucket, RequestCount, RequestQuery, SecretUse
from carehook.inbox.work import AttemptRow, ReviewRow

_WAITING = ("pending", "retrying")


def _matches(row: EventRow, q: EventQuery) -> bool:
    equal = all(getattr(q, f) is None or getattr(q, f) == getattr(row, f)
                for f in ("source", "type", "status", "subject"))  # fmt: skip
    return (equal and (q.since is None or row.received_at >= q.since)
            and (q.until is None or row.received_at < q.until)
            and (q.before is None or row.id < q.before))  # fmt: skip


class MemoryReads:
    """The AdminReads methods of :class:`carehook.inbox.memory.InMemoryInbox`."""

    requests: list[RequestRow]
    audit: list[AuditRow]
    reviews: dict[int, ReviewRow]
    attempts: dict[int, list[AttemptRow]]

    def _event_rows(self) -> Iterable[EventRow]:
        """Every stored event's row, oldest first."""
        raise NotImplementedError

    async def query_events(self, q: EventQuery) -> list[EventRow]:
        """Events matching ``q``, newest first."""
        return [r for r in reversed(list(self._event_rows())) if _matches(r, q)][: q.limit]

    async def query_requests(self, q: RequestQuery) -> list[RequestRow]:
        """Request-log rows matching ``q``, newest first."""
        rows = [r for r in reversed(self.requests)
                if (q.source is None or r.source == q.source)
                and (q.outcome is None or r.outcome == q.outcome)
                and (q.since is None or r.received_at >= q.since)
                and (q.before is None or r.id < q.before)]  # fmt: skip
        return rows[: q.limit]

    async def query_reviews(
        self, status: str | None, before: int | None, limit: int
    ) -> list[ReviewRow]:
        """Review items, newest first."""
        rows = [r for r in reversed(self.reviews.values())
                if (status is None or r.status == status) and (before is None or r.id < before)]
        return rows[:limit]

    async def query_audit(self, before: int | None, limit: int) -> list[AuditRow]:
        """Audit rows, newest first."""
        return [r for r in reversed(self.audit) if before is None or r.id < before][:limit]

    async def status_counts(self) -> dict[str, int]:
        """Events per status."""
        return dict(Counter(r.status for r in self._event_rows()))

    async def oldest_waiting(self) -> datetime | None:
        """The oldest pending or retrying event's receipt time."""
        times = [r.received_at for r in self._event_rows() if r.status in _WAITING]
        return min(times, default=None)

    async def last_claim_at(self) -> datetime | None:
        """The newest attempt's start."""
        return max((a.started_at for rows in self.attempts.values() for a in rows), default=None)

    async def secret_usage(self) -> list[SecretUse]:
        """Per source and secret index: events verified and the newest one's time."""
        found: dict[tuple[str, int], tuple[int, datetime]] = {}
        for r in self._event_rows():
            count, last = found.get((r.source, r.secret_index), (0, r.received_at))
            found[(r.source, r.secret_index)] = (count + 1, max(last, r.received_at))
        return [SecretUse(s, i, n, at) for (s, i), (n, at) in sorted(found.items())]

    async def rejection_counts(self, since: datetime) -> list[RequestCount]:
        """Rejected rows since ``since`` by source and cause."""
        found: dict[tuple[str, str, str], tuple[int, datetime]] = {}
        for r in self.requests:
            if r.received_at >= since and r.outcome == "rejected":
                count, last = found.get((r.source, r.outcome, r.cause), (0, r.received_at))
                found[(r.source, r.outcome, r.cause)] = (count + 1, max(last, r.received_at))
        return [RequestCount(s, o, c, n, at) for (s, o, c), (n, at) in sorted(found.items())]

    async def request_rate(self, since: datetime) -> list[RateBucket]:
        """Request-log rows since ``since`` per minute, source and outcome."""
        counts = Counter((r.received_at.replace(second=0, microsecond=0), r.source, r.outcome)
                         for r in self.requests if r.received_at >= since)  # fmt: skip
        return [RateBucket(m, s, o, n) for (m, s, o), n in sorted(counts.items())]
