"""The operator reads (AdminReads): each test runs against the in-memory fake, SQLite and
PostgreSQL, so the one SQL implementation and the fake agree."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from carehook.envelope import Envelope, RequestRecord
from carehook.inbox.reads import EventQuery, RequestQuery
from carehook.inbox.work import ReplayFilter

from .conftest import NOW

MakeEnvelope = Callable[..., Envelope]
MakeRecord = Callable[..., RequestRecord]


async def _feed(store: Any, make_envelope: MakeEnvelope, make_record: MakeRecord) -> list[int]:
    """Five events: two sources, two secrets, three subjects, one unhandled."""
    specs = [dict(source="a", secret_index=0, subject="s:1"),
             dict(source="a", secret_index=1, subject="s:1"),
             dict(source="b", secret_index=0, subject="s:2", type="other.type"),
             dict(source="a", secret_index=1, subject="s:3"),
             dict(source="b", secret_index=0, subject="s:2", handled=False)]  # fmt: skip
    for spec in specs:
        env = make_envelope(**spec)
        assert await store.accept(env, make_record(env))
    return [e.id for e in await store.query_events(EventQuery(limit=10))]


async def test_query_events_filters_and_pages_newest_first(
    store: Any, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """Every filter narrows; ``before`` pages by id; received since/until bound the time."""
    ids = await _feed(store, make_envelope, make_record)
    assert ids == sorted(ids, reverse=True)
    assert len(ids) == 5
    page = await store.query_events(EventQuery(limit=2))
    rest = await store.query_events(EventQuery(limit=10, before=page[-1].id))
    assert [e.id for e in page + rest] == ids
    assert {e.source for e in await store.query_events(EventQuery(source="b"))} == {"b"}
    assert [e.subject for e in await store.query_events(EventQuery(subject="s:1"))] == ["s:1"] * 2
    assert len(await store.query_events(EventQuery(type="other.type"))) == 1
    assert len(await store.query_events(EventQuery(status="unhandled"))) == 1
    events = await store.query_events(EventQuery(limit=10))
    middle = sorted(e.received_at for e in events)[2]
    since = await store.query_events(EventQuery(since=middle))
    until = await store.query_events(EventQuery(until=middle))
    assert len(since) == 3
    assert len(until) == 2
    assert await store.query_events(EventQuery(since=NOW + timedelta(days=1))) == []


async def test_aggregates_count_statuses_secrets_and_requests(
    store: Any, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """Status counts, the oldest waiting event, per-secret use and request counts by cause."""
    await _feed(store, make_envelope, make_record)
    assert await store.status_counts() == {"pending": 4, "unhandled": 1}
    oldest = await store.oldest_waiting()
    first = min(e.received_at for e in await store.query_events(EventQuery(status="pending")))
    assert oldest == first
    assert await store.last_claim_at() is None
    usage = {(u.source, u.secret_index): u.events for u in await store.secret_usage()}
    assert usage == {("a", 0): 1, ("a", 1): 2, ("b", 0): 2}
    bad = make_record(status=401, outcome="rejected", cause="signature:bad_signature",
                      source="a", received_at=NOW + timedelta(seconds=1))  # fmt: skip
    await store.log_request(bad)
    counts = {(c.source, c.outcome, c.cause): c.count
              for c in await store.rejection_counts(NOW - timedelta(hours=1))}  # fmt: skip
    assert counts == {("a", "rejected", "signature:bad_signature"): 1}
    assert await store.rejection_counts(NOW + timedelta(hours=1)) == []
    rate = await store.request_rate(NOW - timedelta(hours=1))
    assert sum(b.count for b in rate) == 6
    assert all(b.minute.second == 0 and b.minute.tzinfo is not None for b in rate)
    rejected = await store.query_requests(RequestQuery(outcome="rejected"))
    assert [r.cause for r in rejected] == ["signature:bad_signature"]
    older = await store.query_requests(RequestQuery(before=rejected[0].id, limit=100))
    assert len(older) == 5


async def test_reviews_and_audit_page_by_cursor(
    store: Any, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """Audit rows (one per replay) page newest first by ``before``."""
    await _feed(store, make_envelope, make_record)
    assert await store.replay(ReplayFilter(source="a", status="pending"), "ops") == 0
    claims = await store.claim("h:1:x", 10, 30.0)
    for claim in claims:
        await store.fail(claim.pk, "h:1:x", "PermanentError", "refused", None)
    assert await store.replay(ReplayFilter(status="dead"), "ops") == len(claims)
    audit = await store.query_audit(None, 2)
    rest = await store.query_audit(audit[-1].id, 100)
    assert len(audit + rest) == len(claims)
    assert [a.id for a in audit + rest] == sorted((a.id for a in audit + rest), reverse=True)
    assert await store.last_claim_at() is not None
    assert await store.query_reviews("open", None, 10) == []
