"""Workflow data and the review queue: each test runs against SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from carehook.errors import LeaseLost, ReviewError
from carehook.inbox.work import ACTION_REVIEW_RESOLVE, StepRecord
from carehook.workflows import ReviewRequest, TimelineEntry

from .conftest import NOW
from .test_work_contract import Feed, MakeEnvelope, MakeRecord, Store, _claimed

CANARY = "CANARY-PHI-5521 Jane Roe"


@pytest.fixture
def feed(work_store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord) -> Feed:
    """``await feed(subject=..., ...)`` accepts one new event and returns its pk."""
    return Feed(work_store, make_envelope, make_record)


async def test_subject_data_commits_with_its_step_and_replaces_the_previous(
    work_store: Store, feed: Feed
) -> None:
    """Data written with a step is read back decrypted; the next write replaces it."""
    assert await work_store.subject_data("s:a") == {}
    pk = await feed(subject="s:a")
    await _claimed(work_store)
    await work_store.record_step(pk, "h:1:a", "one", "ok", "", None,
                                 data={"progress": 10, "who": CANARY})  # fmt: skip
    assert await work_store.subject_data("s:a") == {"progress": 10, "who": CANARY}
    await work_store.record_step(pk, "h:1:a", "two", "ok", "", TimelineEntry("s:a", "running"),
                                 data={"progress": 40})  # fmt: skip
    assert await work_store.subject_data("s:a") == {"progress": 40}
    assert await work_store.subject_state("s:a") == "running"
    assert await work_store.subject_data("s:other") == {}


async def test_a_claim_carries_its_subjects_data_as_the_last_event_left_it(
    work_store: Store, feed: Feed
) -> None:
    """The worker needs no read per event: the claim brings the data the subject's previous
    event committed (and {} for a subject without any)."""
    first = await feed(subject="s:a")
    second = await feed(subject="s:a")
    await feed(subject="s:b")
    claims = {c.pk: c for c in await work_store.claim("h:1:a", 10, 30)}
    assert first in claims
    assert second not in claims  # one event per subject at a time
    assert [c.subject_data for c in claims.values()] == [{}, {}]
    await work_store.complete(first, "h:1:a", StepRecord("one", "ok", "", None,
                                                         {"progress": 10, "who": CANARY}))
    (claim,) = await work_store.claim("h:1:a", 10, 30)
    assert claim.pk == second
    assert claim.subject_data == {"progress": 10, "who": CANARY}
    assert CANARY not in repr(claim)


async def test_a_recorded_step_does_not_write_its_data_or_review_again(
    work_store: Store, feed: Feed
) -> None:
    """Recording the same step twice keeps the first data and opens one review item."""
    pk = await feed(subject="s:a")
    await _claimed(work_store)
    review = ReviewRequest("quality", "high", "score 0.41 < 0.70", "session:1")
    await work_store.record_step(pk, "h:1:a", "q", "ok", "", None, data={"n": 1}, review=review)
    await work_store.record_step(pk, "h:1:a", "q", "ok", "", None, data={"n": 2}, review=review)
    assert await work_store.subject_data("s:a") == {"n": 1}
    assert len(await work_store.list_reviews()) == 1


async def test_a_step_without_the_lease_writes_no_data(work_store: Store, feed: Feed) -> None:
    """Fencing covers the data and the review item too."""
    pk = await feed(subject="s:a")
    await _claimed(work_store)
    with pytest.raises(LeaseLost):
        await work_store.record_step(pk, "h:9:z", "q", "ok", "", None, data={"n": 1},
                                     review=ReviewRequest("quality"))  # fmt: skip
    assert await work_store.subject_data("s:a") == {}
    assert await work_store.list_reviews(status=None) == []


async def test_review_items_list_newest_first_and_resolve_once_audited(
    work_store: Store, feed: Feed
) -> None:
    """A review carries its event's source, subject and pk; resolving is audited and final."""
    first = await feed(subject="s:a", source="abridge")
    second = await feed(subject="s:b", source="abridge")
    await _claimed(work_store)
    await work_store.record_step(first, "h:1:a", "r", "ok", "", None,
                                 review=ReviewRequest("quality", "high", "score 0.41", "k1"))
    await work_store.record_step(second, "h:1:a", "r", "ok", "", None,
                                 review=ReviewRequest("flagged", "critical", "review r_9", "k2"))
    rows = await work_store.list_reviews()
    assert [(r.kind, r.subject, r.event_pk, r.severity, r.status) for r in rows] == [
        ("flagged", "s:b", second, "critical", "open"),
        ("quality", "s:a", first, "high", "open"),
    ]
    assert (rows[1].source, rows[1].summary) == ("abridge", "score 0.41")

    done = await work_store.resolve_review(rows[1].id, "cli:alice", "called the clinic")
    assert (done.status, done.resolved_by, done.note) == ("resolved", "cli:alice",
                                                          "called the clinic")  # fmt: skip
    assert done.resolved_at is not None
    assert [r.id for r in await work_store.list_reviews()] == [rows[0].id]
    assert [r.id for r in await work_store.list_reviews(status="resolved")] == [rows[1].id]
    assert len(await work_store.list_reviews(status=None)) == 2
    audit = [a for a in await work_store.list_audit() if a.action == ACTION_REVIEW_RESOLVE]
    assert [(a.actor, a.event_pk) for a in audit] == [("cli:alice", first)]

    with pytest.raises(ReviewError, match="already resolved"):
        await work_store.resolve_review(rows[1].id, "cli:bob", "again")
    with pytest.raises(ReviewError, match="no review item"):
        await work_store.resolve_review(999_999, "cli:bob", "nothing")


async def test_a_claim_carries_when_the_vendor_says_the_event_happened(
    work_store: Store, feed: Feed
) -> None:
    """occurred_at, read at ingress, reaches the worker with the claim (None stays None)."""
    known = await feed(subject="s:a", occurred_at=NOW - timedelta(seconds=42))
    unknown = await feed(subject="s:b", occurred_at=None)
    claims = {c.pk: c for c in await work_store.claim("h:1:a", 10, 30)}
    assert claims[known].occurred_at == NOW - timedelta(seconds=42)
    assert claims[unknown].occurred_at is None
