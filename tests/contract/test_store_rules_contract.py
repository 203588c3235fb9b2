"""The one store's newer rules, on SQLite and PostgreSQL alike: decrypt per claim, refusal of
unstorable text, deferral, the last step with ``complete``, the write probe, request retention,
and a claim whose cost does not depend on the backlog's plan."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

import pytest

from carehook.envelope import Envelope, RequestRecord
from carehook.errors import StorageUnavailable, UnstorableValue
from carehook.inbox.port import EventFilter, Store
from carehook.inbox.work import CRYPTO_ERROR, StepRecord
from carehook.workflows import TimelineEntry

from .conftest import NOW, Clock

MakeEnvelope = Callable[..., Envelope]
MakeRecord = Callable[..., RequestRecord]
Outage = Callable[[Any], AbstractAsyncContextManager[None]]
LEASE = 30.0


async def _accept(store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord,
                  **kw: Any) -> int:  # fmt: skip
    env = make_envelope(**kw)
    assert await store.accept(env, make_record(env))
    (row,) = await store.list_events(EventFilter(limit=1))
    return row.id


async def test_an_undecryptable_payload_dead_letters_its_own_event_only(
    work_store: Any, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """A damaged ciphertext: its event goes dead with cause crypto; the batch's others run."""
    pks = [await _accept(work_store, make_envelope, make_record) for _ in range(3)]
    damaged = pks[1]
    sql = "UPDATE events SET payload = ? WHERE id = ?"
    await work_store.dialect.write(lambda tx: tx.run(sql, [b"not a ciphertext", damaged]))
    claims = await work_store.claim("h:1:a", 10, LEASE)
    assert [c.pk for c in claims] == [pks[0], pks[2]]
    assert all(c.payload is not None for c in claims)
    row = await work_store.get_event(damaged)
    assert row is not None
    assert row.status == "dead"
    [attempt] = await work_store.list_attempts(damaged)
    assert (attempt.outcome, attempt.error_class) == ("dead", CRYPTO_ERROR)
    assert await work_store.claim("h:1:a", 10, LEASE) == []  # nothing left in processing limbo


@pytest.mark.parametrize(
    ("field", "value"),
    [("subject", "abridge:session:\x00x"), ("event_id", "evt_\ud800"), ("type", "a\x00b")],
)
async def test_unstorable_text_is_refused_alike_and_nothing_is_stored(
    work_store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord, field: str,
    value: str,
) -> None:  # fmt: skip
    """NUL or a lone surrogate in a stored field: UnstorableValue (never StorageError)."""
    env = make_envelope(**{field: value})
    with pytest.raises(UnstorableValue, match=field):
        await work_store.accept(env, make_record(env))
    assert await work_store.list_events(EventFilter()) == []
    assert await work_store.list_requests() == []


async def test_a_request_log_row_with_unstorable_text_is_written_escaped(
    work_store: Store, make_record: MakeRecord
) -> None:
    """The 422 of such a request is still logged: its odd characters escaped, not refused."""
    record = make_record(status=422, outcome="rejected", cause="id \x00 bad",
                         event_id="evt_\ud800")  # fmt: skip
    await work_store.log_request(record)
    (row,) = await work_store.list_requests()
    assert (row.status, row.cause, row.event_id) == (422, "id \\x00 bad", "evt_\\ud800")


async def test_defer_gives_the_event_back_at_its_time_without_using_an_attempt(
    work_store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord, clock: Clock
) -> None:
    """A deferral: pending until ``until`` (however far), attempts not counted, no error."""
    pk = await _accept(work_store, make_envelope, make_record)
    [claim] = await work_store.claim("h:1:a", 1, LEASE)
    assert claim.attempts == 1
    until = clock() + timedelta(days=3)  # far beyond any back-off cap
    await work_store.defer(pk, "h:1:a", until)
    row = await work_store.get_event(pk)
    assert row is not None
    assert (row.status, row.attempts, row.next_attempt_at) == ("pending", 0, until)
    assert await work_store.next_due() == until
    assert await work_store.claim("h:1:a", 1, LEASE) == []
    clock.advance(3 * 86400 + 1)
    [again] = await work_store.claim("h:1:a", 1, LEASE)
    assert again.attempts == 1
    attempts = await work_store.list_attempts(pk)
    assert [(a.outcome, a.error_class) for a in attempts] == [("deferred", None),
                                                              ("running", None)]  # fmt: skip
    assert attempts[0].next_attempt_at == until


async def test_complete_records_the_last_step_with_it(
    work_store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """complete(step=...) writes the step, its timeline entry and ``done`` together."""
    pk = await _accept(work_store, make_envelope, make_record, subject="s:last")
    await work_store.claim("h:1:a", 1, LEASE)
    step = StepRecord("notify", "ok", "sent", TimelineEntry("s:last", "notified", "by mail"))
    await work_store.complete(pk, "h:1:a", step)
    assert [(s.name, s.outcome) for s in await work_store.list_steps(pk)] == [("notify", "ok")]
    assert await work_store.subject_state("s:last") == "notified"
    row = await work_store.get_event(pk)
    assert row is not None
    assert row.status == "done"


async def test_ping_fails_while_writes_cannot_commit(work_store: Store, outage: Outage) -> None:
    """``ping`` (``/readyz``) commits a write: a store that cannot write is unavailable."""
    await work_store.ping()
    async with outage(work_store):
        with pytest.raises(StorageUnavailable):
            await work_store.ping()
    await work_store.ping()


async def test_purge_drops_request_log_rows_past_their_retention(
    work_store: Store, make_record: MakeRecord
) -> None:
    """Request-log rows go after their source's request retention, others' after the default."""
    for source, days in (("a", 10), ("a", 2), ("b", 10), ("b", 2)):
        at = NOW - timedelta(days=days)
        await work_store.log_request(make_record(source=source, received_at=at))
    counts = await work_store.purge(NOW, {}, 30, 30, {"a": 5}, 1)
    assert counts.requests == 3
    assert [(r.source) for r in await work_store.list_requests()] == ["a"]
    kept = await work_store.purge(NOW, {}, 30, 30)  # no request retention given: rows kept
    assert kept.requests == 0


async def test_an_ended_dashboard_session_is_kept_until_its_expiry(work_store: Store) -> None:
    """Logout's record: idempotent, seen by the store's readers, and purged once the session
    would have expired anyway (never before); each sign-in and sign-out is audited (the audit
    rows stay when the session's row goes)."""
    assert not await work_store.session_ended("s1")
    await work_store.start_session("s1", "oncall")
    await work_store.end_session("s1", NOW + timedelta(hours=8), "oncall")
    await work_store.end_session("s1", NOW + timedelta(hours=8), "oncall")  # again: no error
    await work_store.end_session("s2", NOW - timedelta(seconds=1), "root")
    assert await work_store.session_ended("s1")
    assert await work_store.session_ended("s2")
    assert not await work_store.session_ended("s3")
    counts = await work_store.purge(NOW, {}, 30, 30)
    assert counts.sessions == 1
    assert await work_store.session_ended("s1")
    assert not await work_store.session_ended("s2")
    later = await work_store.purge(NOW + timedelta(hours=9), {}, 30, 30)
    assert later.sessions == 1
    assert not await work_store.session_ended("s1")
    audit = [(a.actor, a.action, a.detail) for a in reversed(await work_store.list_audit())]
    assert audit == [("oncall", "session.start", "dashboard session s1"),
                     ("oncall", "session.end", "dashboard session s1"),
                     ("oncall", "session.end", "dashboard session s1"),
                     ("root", "session.end", "dashboard session s2")]  # fmt: skip
