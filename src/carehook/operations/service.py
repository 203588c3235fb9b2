"""The operator service: every read and action of the CLI, the admin API and the dashboard.

One implementation over the storage port (handed in from outside: the composition root, a CLI
command, a test), so ``carehook events ls`` and ``GET /admin/api/events`` cannot disagree.
Actions name their ``actor`` (a CLI ``--actor``, an admin token's name); the store writes the
audit row for every payload view, replay and review resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from carehook.errors import CarehookError
from carehook.inbox.port import AuditRow, EventRow, RequestRow, Store
from carehook.inbox.reads import EventQuery, RateBucket, RequestCount, RequestQuery
from carehook.inbox.work import ReplayFilter, ReviewRow
from carehook.operations.models import (
    DeadLetter,
    EventDetail,
    Overview,
    Page,
    RateSeries,
    SourceConfig,
    SourceStatus,
    Timeline,
)
from carehook.operations.sources import source_statuses
from carehook.operations.timeline import build_timeline

T = TypeVar("T")
#: the statuses a replay filter may name (processing and unhandled events are never replayed)
REPLAYABLE_STATUSES = ("pending", "retrying", "done", "dead")
RATE_MINUTES = 60


#: the storage port the service reads and acts on (intake, work and the operator's reads)
OperatorStore = Store


class OperationRefused(CarehookError):
    """An operator request that cannot be carried out as asked (bad filter, empty note)."""


def _page(rows: list[T], limit: int, key: Callable[[T], int]) -> Page[T]:
    """``limit`` rows and the cursor to the next page (rows were fetched with limit + 1)."""
    items = rows[:limit]
    return Page(items, key(items[-1]) if len(rows) > limit and items else None)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Operations:
    """What an operator can see and do, over one store."""

    def __init__(
        self, store: OperatorStore, sources: Sequence[SourceConfig],
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:  # fmt: skip
        self.store = store
        self.sources = list(sources)
        self._clock = clock

    async def events(self, q: EventQuery) -> Page[EventRow]:
        """Events matching ``q``, newest first."""
        rows = await self.store.query_events(_plus_one(q))
        return _page(rows, q.limit, lambda r: r.id)

    async def event(self, pk: int) -> EventDetail | None:
        """One event with its finished steps and every attempt, or None."""
        row = await self.store.get_event(pk)
        if row is None:
            return None
        return EventDetail(row, await self.store.list_steps(pk), await self.store.list_attempts(pk))

    async def payload(self, pk: int, actor: str) -> bytes | None:
        """The decrypted payload, the view audited under ``actor`` first; None once purged."""
        return await self.store.read_payload(pk, actor)

    async def replay(self, flt: ReplayFilter, actor: str, *, dry_run: bool = False) -> int:
        """Put matching events back to pending (one audit row each); ``dry_run`` only counts."""
        if not flt.event_pks and not (flt.source or flt.type or flt.status or flt.since):
            raise OperationRefused("give an event id or at least one of source, type, status, "
                                   "since")  # fmt: skip
        if flt.status is not None and flt.status not in REPLAYABLE_STATUSES:
            raise OperationRefused(f"status must be one of: {', '.join(REPLAYABLE_STATUSES)}")
        return await self.store.replay(flt, actor, dry_run=dry_run)

    async def dead_letters(
        self, source: str | None = None, before: int | None = None, limit: int = 100
    ) -> Page[DeadLetter]:
        """Dead events, newest first, each with its last error."""
        q = EventQuery(source=source, status="dead", before=before, limit=limit + 1)
        rows = await self.store.query_events(q)
        errors = await self.store.last_errors([r.id for r in rows[:limit]])
        letters = []
        for row in rows:
            err = errors.get(row.id)
            letters.append(DeadLetter(row, err.finished_at if err else None,
                                      err.error_class if err else None,
                                      err.error_message if err else None))  # fmt: skip
        return _page(letters, limit, lambda d: d.event.id)

    async def requests(self, q: RequestQuery) -> Page[RequestRow]:
        """Request-log rows (with their causes) matching ``q``, newest first."""
        rows = await self.store.query_requests(_plus_one(q))
        return _page(rows, q.limit, lambda r: r.id)

    async def reviews(
        self, status: str | None = "open", before: int | None = None, limit: int = 100
    ) -> Page[ReviewRow]:
        """Review items (``status`` None: all), newest first."""
        rows = await self.store.query_reviews(status, before, limit + 1)
        return _page(rows, limit, lambda r: r.id)

    async def resolve_review(self, review_id: int, actor: str, note: str) -> ReviewRow:
        """Resolve an open item with ``note`` (audited); ReviewError if not open."""
        if not note.strip():
            raise OperationRefused("the note must say what was decided")
        return await self.store.resolve_review(review_id, actor, note)

    async def start_session(self, session: str, actor: str) -> None:
        """Audit a dashboard sign-in."""
        await self.store.start_session(session, actor)

    async def end_session(self, session: str, expires_at: datetime, actor: str) -> None:
        """End a dashboard session (logout) for every process sharing the store; audited."""
        await self.store.end_session(session, expires_at, actor)

    async def session_ended(self, session: str) -> bool:
        """Whether a dashboard session was ended before its expiry."""
        return await self.store.session_ended(session)

    async def timeline(self, subject: str, limit: int = 500) -> Timeline:
        """A subject's timeline with durations and its current state."""
        state = await self.store.subject_state(subject)
        return build_timeline(subject, state, await self.store.timeline(subject, limit))

    async def audit(self, before: int | None = None, limit: int = 100) -> Page[AuditRow]:
        """Audit rows, newest first."""
        rows = await self.store.query_audit(before, limit + 1)
        return _page(rows, limit, lambda r: r.id)

    async def source_statuses(self) -> list[SourceStatus]:
        """Each source: vendor, endpoint, per-secret last match, last accepted and rejected
        times, rejections by cause over 24 h."""
        usage = await self.store.secret_usage()
        counts = await self.store.rejection_counts(self._clock() - timedelta(hours=24))
        return source_statuses(self.sources, usage, counts)

    async def overview(self) -> Overview:
        """Traffic of the last hour, the queue, dead letters, rejections, worker health."""
        now = self._clock()
        start = now.replace(second=0, microsecond=0) - timedelta(minutes=RATE_MINUTES - 1)
        buckets = await self.store.request_rate(start)
        counts = await self.store.status_counts()
        oldest = await self.store.oldest_waiting()
        recent = await self.store.rejection_counts(now - timedelta(hours=24))
        return Overview(
            at=now, rates=_series(buckets, start), status_counts=counts,
            queue_depth=counts.get("pending", 0) + counts.get("retrying", 0),
            oldest_waiting_seconds=None if oldest is None else (now - oldest).total_seconds(),
            dead_letters=counts.get("dead", 0), in_flight=counts.get("processing", 0),
            last_claim_at=await self.store.last_claim_at(), rejections_24h=rejections(recent),
        )  # fmt: skip


Q = TypeVar("Q", EventQuery, RequestQuery)


def _plus_one(q: Q) -> Q:
    """The same query asking for one row more (to know whether a next page exists)."""
    return replace(q, limit=q.limit + 1)


def rejections(counts: list[RequestCount]) -> dict[str, dict[str, int]]:
    """Rejected requests by source, then cause."""
    out: dict[str, dict[str, int]] = {}
    for c in counts:
        by_cause = out.setdefault(c.source, {})
        by_cause[c.cause or c.outcome] = by_cause.get(c.cause or c.outcome, 0) + c.count
    return out


def _series(buckets: Sequence[RateBucket], start: datetime) -> list[RateSeries]:
    """Per (source, outcome): a count for each minute from ``start`` (RATE_MINUTES long)."""
    series: dict[tuple[str, str], list[int]] = {}
    for b in buckets:
        slot = int((b.minute - start).total_seconds() // 60)
        if 0 <= slot < RATE_MINUTES:
            series.setdefault((b.source, b.outcome), [0] * RATE_MINUTES)[slot] += b.count
    return [RateSeries(s, o, v) for (s, o), v in sorted(series.items())]
