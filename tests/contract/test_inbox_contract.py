"""The inbox contract: every test here runs against the one store on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta, timezone

import pytest

from carehook.envelope import Envelope, RequestRecord
from carehook.errors import StorageUnavailable
from carehook.inbox.port import (
    ACTION_PAYLOAD_VIEW,
    OUTCOME_DUPLICATE,
    EventFilter,
    EventRow,
    Store,
)

MakeEnvelope = Callable[..., Envelope]
MakeRecord = Callable[..., RequestRecord]
Outage = Callable[[Store], AbstractAsyncContextManager[None]]
RawStorage = Callable[[Store], Awaitable[bytes]]


async def test_new_event_is_accepted_and_a_repeat_is_a_duplicate(
    store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """The first delivery is new, a redelivery of the same (source, event_id) is not."""
    env = make_envelope()
    assert await store.accept(env, make_record(env)) is True
    assert await store.accept(env, make_record(env)) is False
    assert len(await store.list_events(EventFilter())) == 1


async def test_same_event_id_under_another_source_is_new(
    store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """Event ids are unique per source only: two sources may reuse one."""
    first = make_envelope(source="abridge-prod", event_id="evt_same")
    second = make_envelope(source="abridge-staging", event_id="evt_same")
    assert await store.accept(first, make_record(first))
    assert await store.accept(second, make_record(second))
    rows = await store.list_events(EventFilter())
    assert {(r.source, r.event_id) for r in rows} == {
        ("abridge-prod", "evt_same"),
        ("abridge-staging", "evt_same"),
    }


async def test_request_log_row_for_accepted_duplicate_and_rejected(
    store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """Every request leaves one row: accepted, duplicate (outcome rewritten) and rejected."""
    env = make_envelope()
    await store.accept(env, make_record(env))
    await store.accept(env, make_record(env))
    rejected = make_record(status=401, outcome="rejected", cause="bad_signature", size=17)
    await store.log_request(rejected)

    rows = await store.list_requests()
    assert [(r.outcome, r.status, r.event_id) for r in rows] == [
        ("rejected", 401, None),
        (OUTCOME_DUPLICATE, 200, env.event_id),
        ("accepted", 200, env.event_id),
    ]
    assert rows[0].cause == "bad_signature"
    assert rows[0].size == 17
    assert rows[0].remote_addr == "203.0.113.7"
    assert rows[0].received_at == rejected.received_at


async def test_request_log_takes_the_event_id_from_the_envelope(
    store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """A request record without an event id is logged with the accepted event's id."""
    env = make_envelope()
    await store.accept(env, make_record(env, event_id=None))
    (row,) = await store.list_requests()
    assert row.event_id == env.event_id


async def test_list_requests_filters_by_source_and_limits(
    store: Store, make_record: MakeRecord
) -> None:
    """list_requests returns the newest rows of one source, up to the limit."""
    for i in range(3):
        await store.log_request(make_record(source="a", size=i))
    await store.log_request(make_record(source="b"))
    rows = await store.list_requests(limit=2, source="a")
    assert [(r.source, r.size) for r in rows] == [("a", 2), ("a", 1)]


async def test_concurrent_deliveries_of_one_event_store_it_once(
    store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """20 simultaneous deliveries of one event: one row, exactly one caller told it is new."""
    env = make_envelope()
    results = await asyncio.gather(*(store.accept(env, make_record(env)) for _ in range(20)))
    assert results.count(True) == 1
    assert len(await store.list_events(EventFilter())) == 1
    outcomes = [r.outcome for r in await store.list_requests()]
    assert sorted(outcomes) == ["accepted"] + [OUTCOME_DUPLICATE] * 19


async def test_concurrent_distinct_events_all_land_sharing_commits(
    store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """200 simultaneous new events are all stored, in fewer transactions than calls."""
    before = store.commits
    envs = [make_envelope() for _ in range(200)]
    results = await asyncio.gather(*(store.accept(e, make_record(e)) for e in envs))
    assert results == [True] * 200
    rows = await store.list_events(EventFilter(limit=500))
    assert {r.event_id for r in rows} == {e.event_id for e in envs}
    assert len(await store.list_requests(limit=500)) == 200
    assert 1 <= store.commits - before < 200


async def test_list_events_filters_newest_first_with_limit(
    store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """Filters by source, status and type combine; results are newest first and limited."""
    envs = [
        make_envelope(source="a", type="t1"),
        make_envelope(source="a", type="t2"),
        make_envelope(source="b", type="t1"),
        make_envelope(source="a", type="t1", handled=False),
        make_envelope(source="a", type="t1"),
    ]
    for env in envs:
        await store.accept(env, make_record(env))

    def ids(rows: list[EventRow]) -> list[str]:
        return [r.event_id for r in rows]

    every = ids(await store.list_events(EventFilter()))
    assert every == [e.event_id for e in reversed(envs)]
    by_source = await store.list_events(EventFilter(source="a"))
    assert ids(by_source) == [
        envs[4].event_id,
        envs[3].event_id,
        envs[1].event_id,
        envs[0].event_id,
    ]
    combined = await store.list_events(EventFilter(source="a", type="t1", status="pending"))
    assert ids(combined) == [envs[4].event_id, envs[0].event_id]
    assert ids(await store.list_events(EventFilter(status="unhandled"))) == [envs[3].event_id]
    assert ids(await store.list_events(EventFilter(limit=2))) == every[:2]
    assert await store.list_events(EventFilter(source="nobody")) == []


async def test_get_event_returns_the_stored_metadata(
    store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """get_event returns every field as given, times as aware UTC; None for an unknown id."""
    env = make_envelope(secret_index=2)
    await store.accept(env, make_record(env))
    (listed,) = await store.list_events(EventFilter())
    row = await store.get_event(listed.id)
    assert row == listed
    assert row is not None
    assert (row.source, row.vendor, row.event_id, row.type, row.subject) == (
        env.source,
        env.vendor,
        env.event_id,
        env.type,
        env.subject,
    )
    assert (row.status, row.attempts, row.secret_index) == ("pending", 0, 2)
    assert row.received_at == env.received_at
    assert row.received_at.tzinfo is not None
    assert row.received_at.utcoffset() == timedelta(0)
    assert row.occurred_at == env.occurred_at
    assert row.next_attempt_at == env.received_at  # due at once
    assert row.payload_purged is False
    assert await store.get_event(listed.id + 1000) is None


async def test_times_are_normalised_to_utc(
    store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """A time with another offset comes back as the same instant in UTC, microseconds kept."""
    tz = timezone(timedelta(hours=2))
    received = datetime(2026, 5, 10, 11, 0, 0, 0, tzinfo=tz)  # zero microseconds on purpose
    env = make_envelope(received_at=received, occurred_at=None)
    await store.accept(env, make_record(env))
    (row,) = await store.list_events(EventFilter())
    assert row.received_at == datetime(2026, 5, 10, 9, 0, tzinfo=UTC)
    assert row.received_at.utcoffset() == timedelta(0)
    assert row.occurred_at is None


async def test_unhandled_event_is_stored_as_unhandled_and_not_due(
    store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """An event of an unknown type is kept, marked unhandled, with no next attempt."""
    env = make_envelope(type="brand.new.type", handled=False)
    assert await store.accept(env, make_record(env))
    (row,) = await store.list_events(EventFilter())
    assert row.status == "unhandled"
    assert row.next_attempt_at is None


async def test_read_payload_returns_exact_bytes_and_audits(
    store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """The original bytes come back, and the view is audited with its actor."""
    payload = b'{"note": "caf\xc3\xa9 \\u00e9", "raw": "\x00\xff"}'
    env = make_envelope(payload=payload)
    await store.accept(env, make_record(env))
    (row,) = await store.list_events(EventFilter())
    assert await store.read_payload(row.id, actor="admin:alice") == payload
    (audit,) = await store.list_audit()
    assert (audit.actor, audit.action, audit.event_pk) == (
        "admin:alice",
        ACTION_PAYLOAD_VIEW,
        row.id,
    )
    assert audit.at.utcoffset() == timedelta(0)


async def test_read_payload_of_unknown_event_is_none_and_not_audited(store: Store) -> None:
    """No payload, no audit row."""
    assert await store.read_payload(4242, actor="admin:alice") is None
    assert await store.list_audit() == []


async def test_list_audit_is_newest_first_and_limited(
    store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """Audit rows come newest first."""
    env = make_envelope()
    await store.accept(env, make_record(env))
    (row,) = await store.list_events(EventFilter())
    for actor in ("a", "b", "c"):
        await store.read_payload(row.id, actor=actor)
    assert [a.actor for a in await store.list_audit(limit=2)] == ["c", "b"]


async def test_payload_is_not_readable_in_storage(
    store: Store,
    make_envelope: MakeEnvelope,
    make_record: MakeRecord,
    raw_storage: RawStorage,
) -> None:
    """The payload is encrypted at rest: a canary in it never appears in the stored bytes."""
    canary = b"CANARY-7f3a9c-PATIENT-NAME"
    env = make_envelope(payload=b'{"patient": "' + canary + b'"}')
    await store.accept(env, make_record(env))
    stored = await raw_storage(store)
    assert len(stored) > len(canary)
    assert canary not in stored
    (row,) = await store.list_events(EventFilter())
    assert canary in (await store.read_payload(row.id, actor="t") or b"")


async def test_storage_outage_raises_unavailable_and_persists_nothing(
    store: Store,
    make_envelope: MakeEnvelope,
    make_record: MakeRecord,
    outage: Outage,
) -> None:
    """A store that cannot commit says StorageUnavailable, keeps nothing, and recovers."""
    env = make_envelope()
    async with outage(store):
        with pytest.raises(StorageUnavailable):
            await store.accept(env, make_record(env))
        with pytest.raises(StorageUnavailable):
            await store.log_request(make_record(status=401, outcome="rejected"))
    assert await store.list_events(EventFilter()) == []
    assert await store.list_requests() == []
    assert await store.accept(env, make_record(env)) is True  # not a duplicate: nothing stayed
    assert [r.outcome for r in await store.list_requests()] == ["accepted"]


async def test_close_commits_what_was_queued(
    store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """Calls already waiting for a commit when close() starts are committed, not dropped."""
    envs = [make_envelope() for _ in range(30)]
    calls = [asyncio.ensure_future(store.accept(e, make_record(e))) for e in envs]
    await asyncio.sleep(0)  # every call is now queued, waiting for its commit
    await store.close()
    assert await asyncio.gather(*calls) == [True] * 30
    await store.open()
    rows = await store.list_events(EventFilter(limit=100))
    assert {r.event_id for r in rows} == {e.event_id for e in envs}


async def test_ping_answers_when_open(store: Store) -> None:
    """An open, healthy store answers ping."""
    await store.ping()
