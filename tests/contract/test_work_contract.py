"""The work contract (claim, steps, retries, replay, purge): each test runs against the one
store on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta

import pytest

from carehook.envelope import Envelope, RequestRecord
from carehook.errors import LeaseLost, StorageError
from carehook.inbox.port import EventFilter, Store
from carehook.inbox.work import ACTION_REPLAY, ReplayFilter, StepRecord
from carehook.workflows import TimelineEntry

from .conftest import NOW, Clock

MakeEnvelope = Callable[..., Envelope]
MakeRecord = Callable[..., RequestRecord]
LEASE = 30.0


class Feed:
    """Accepts events into a store and remembers their pks."""

    def __init__(self, store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord):
        self.store = store
        self.make_envelope = make_envelope
        self.make_record = make_record

    async def __call__(self, **overrides: object) -> int:
        env = self.make_envelope(**overrides)
        assert await self.store.accept(env, self.make_record(env))
        return (await self.store.list_events(EventFilter(limit=1)))[0].id


@pytest.fixture
def feed(work_store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord) -> Feed:
    """``await feed(subject=..., ...)`` accepts one new event and returns its pk."""
    return Feed(work_store, make_envelope, make_record)


async def _status(store: Store, pk: int) -> str:
    row = await store.get_event(pk)
    assert row is not None
    return row.status


async def _claimed(store: Store, owner: str = "h:1:a", limit: int = 10) -> list[int]:
    return [c.pk for c in await store.claim(owner, limit, LEASE)]


# --- claiming -------------------------------------------------------------------------------------


async def test_claim_takes_the_head_of_each_subject_oldest_first(
    work_store: Store, feed: Feed
) -> None:
    """Only the earliest unfinished event of a subject is claimable; subjects run side by side."""
    a1 = await feed(subject="s:a")
    a2 = await feed(subject="s:a")
    b1 = await feed(subject="s:b")
    assert await _claimed(work_store, "h:1:a") == [a1, b1]
    assert await _claimed(work_store, "h:2:b") == []  # a2 waits for a1; nothing else is free
    await work_store.complete(a1, "h:1:a")
    assert await _claimed(work_store, "h:2:b") == [a2]


async def test_claim_sets_the_lease_counts_the_attempt_and_decrypts(
    work_store: Store,
    feed: Feed,
    make_envelope: MakeEnvelope,
    make_record: MakeRecord,
    clock: Clock,
) -> None:
    """A claim hands over the plaintext payload, marks the event processing and opens an attempt."""
    env = make_envelope()
    await work_store.accept(env, make_record(env))
    [claim] = await work_store.claim("h:1:a", 5, LEASE)
    assert (claim.source, claim.event_id, claim.subject, claim.type) == (
        env.source,
        env.event_id,
        env.subject,
        env.type,
    )
    assert claim.payload == env.payload
    assert claim.attempts == 1
    assert claim.received_at == env.received_at
    assert claim.lease_expires_at == clock.now + timedelta(seconds=LEASE)
    row = await work_store.get_event(claim.pk)
    assert row is not None
    assert (row.status, row.attempts) == ("processing", 1)
    [attempt] = await work_store.list_attempts(claim.pk)
    assert (attempt.number, attempt.outcome, attempt.started_at) == (1, "running", clock.now)
    assert attempt.finished_at is None


async def test_claim_honours_the_limit_oldest_first(work_store: Store, feed: Feed) -> None:
    """Different subjects are claimed together, up to the limit, in order of receipt."""
    pks = [await feed(subject=f"s:{i}") for i in range(5)]
    assert await _claimed(work_store, limit=2) == pks[:2]
    assert await _claimed(work_store, limit=10) == pks[2:]


async def test_unhandled_events_are_never_claimed(work_store: Store, feed: Feed) -> None:
    """An unhandled event is stored but neither claimed nor blocking its subject."""
    await feed(subject="s:a", handled=False)
    later = await feed(subject="s:a")
    assert await _claimed(work_store) == [later]


async def test_a_dead_event_does_not_block_its_subject(work_store: Store, feed: Feed) -> None:
    """After an event dies, the next event of its subject goes on."""
    first = await feed(subject="s:a")
    second = await feed(subject="s:a")
    assert await _claimed(work_store) == [first]
    assert await work_store.fail(first, "h:1:a", "PermanentError", "HTTP 400", None) == "dead"
    assert await _claimed(work_store) == [second]


async def test_replayed_dead_event_takes_its_place_at_the_head_again(
    work_store: Store, feed: Feed
) -> None:
    """A replayed dead event runs before later waiting events of its subject."""
    first = await feed(subject="s:a")
    second = await feed(subject="s:a")
    third = await feed(subject="s:a")
    await _claimed(work_store)
    await work_store.fail(first, "h:1:a", "PermanentError", "HTTP 400", None)
    assert await _claimed(work_store) == [second]
    await work_store.complete(second, "h:1:a")
    assert await work_store.replay(ReplayFilter(event_pks=(first,)), "ops@example") == 1
    assert await _claimed(work_store) == [first]  # not `third`
    await work_store.complete(first, "h:1:a")
    assert await _claimed(work_store) == [third]


async def test_a_replayed_earlier_event_waits_for_the_later_one_running(
    work_store: Store, feed: Feed
) -> None:
    """Never two events of one subject at once, even when a replay reorders them."""
    first = await feed(subject="s:a")
    second = await feed(subject="s:a")
    await _claimed(work_store)
    await work_store.fail(first, "h:1:a", "PermanentError", "HTTP 400", None)
    assert await _claimed(work_store) == [second]
    await work_store.replay(ReplayFilter(event_pks=(first,)), "ops@example")
    assert await _claimed(work_store, "h:2:b") == []
    await work_store.complete(second, "h:1:a")
    assert await _claimed(work_store, "h:2:b") == [first]


# --- leases ---------------------------------------------------------------------------------------


async def test_expired_lease_goes_to_another_owner_and_fences_the_first(
    work_store: Store, feed: Feed, clock: Clock
) -> None:
    """After the lease runs out another worker resumes; the first one can change nothing."""
    pk = await feed()
    assert await _claimed(work_store, "h:1:a") == [pk]
    clock.advance(LEASE - 1)
    assert await _claimed(work_store, "h:2:b") == []  # still leased
    clock.advance(2)
    [claim] = await work_store.claim("h:2:b", 10, LEASE)
    assert (claim.pk, claim.attempts) == (pk, 2)
    for lost in (
        work_store.record_step(pk, "h:1:a", "one", "ok", "", None),
        work_store.complete(pk, "h:1:a"),
        work_store.fail(pk, "h:1:a", "X", "y", None),
        work_store.release(pk, "h:1:a"),
    ):
        with pytest.raises(LeaseLost):
            await lost
    assert await work_store.extend_leases("h:1:a", [pk], LEASE) == set()
    assert await work_store.list_steps(pk) == []
    assert await _status(work_store, pk) == "processing"
    assert [a.outcome for a in await work_store.list_attempts(pk)] == ["expired", "running"]
    await work_store.record_step(pk, "h:2:b", "one", "ok", "", None)
    await work_store.complete(pk, "h:2:b")
    assert await _status(work_store, pk) == "done"


async def test_an_owner_whose_lease_expired_is_fenced_even_if_nobody_took_over(
    work_store: Store, feed: Feed, clock: Clock
) -> None:
    """Fencing is by expiry, not by a rival's claim: a late worker must not finish the event."""
    pk = await feed()
    await _claimed(work_store, "h:1:a")
    clock.advance(LEASE + 1)
    with pytest.raises(LeaseLost):
        await work_store.complete(pk, "h:1:a")
    with pytest.raises(LeaseLost):
        await work_store.complete(pk + 1000, "h:1:a")  # unknown event


async def test_extend_leases_keeps_the_event_and_reports_what_is_held(
    work_store: Store, feed: Feed, clock: Clock
) -> None:
    """A heartbeat pushes the lease forward; a lease held by nobody else is not extended."""
    mine = await feed(subject="s:a")
    other = await feed(subject="s:b")
    await work_store.claim("h:1:a", 1, LEASE)
    await work_store.claim("h:2:b", 1, LEASE)
    clock.advance(LEASE - 5)
    assert await work_store.extend_leases("h:1:a", [mine, other], LEASE) == {mine}
    clock.advance(10)
    assert await _claimed(work_store, "h:3:c") == [other]  # its lease ran out; mine did not
    await work_store.complete(mine, "h:1:a")


async def test_release_dead_owners_frees_only_leases_of_dead_pids_on_the_host(
    work_store: Store, feed: Feed
) -> None:
    """After a kill -9 a restarted worker takes back what its dead predecessor held."""
    dead = await feed(subject="s:a")
    alive = await feed(subject="s:b")
    elsewhere = await feed(subject="s:c")
    await work_store.claim("hostA:111:r1", 1, LEASE)
    await work_store.claim("hostA:222:r2", 1, LEASE)
    await work_store.claim("hostB:111:r3", 1, LEASE)
    assert await work_store.release_dead_owners("hostA", [222, 333]) == 1
    assert await _claimed(work_store, "hostA:333:r4") == [dead]
    assert {alive, elsewhere}.isdisjoint(await _claimed(work_store, "hostA:333:r4"))


# --- steps ----------------------------------------------------------------------------------------


async def test_a_step_and_its_timeline_entry_are_recorded_once(
    work_store: Store, feed: Feed, clock: Clock
) -> None:
    """Recording a step twice leaves one step row, one timeline row, and does not raise."""
    pk = await feed(subject="s:a", type="encounter.session.completed")
    await _claimed(work_store)
    entry = TimelineEntry("s:a", "note.filed", "DocumentReference created")
    await work_store.record_step(pk, "h:1:a", "fhir.note", "ok", "first", entry)
    clock.advance(1)
    again = TimelineEntry("s:a", "note.refiled", "again")
    await work_store.record_step(pk, "h:1:a", "fhir.note", "ok", "second", again)

    [step] = await work_store.list_steps(pk)
    assert (step.name, step.outcome, step.detail) == ("fhir.note", "ok", "first")
    assert step.finished_at == clock.now - timedelta(seconds=1)
    assert set(await work_store.finished_steps(pk)) == {"fhir.note"}
    [row] = await work_store.timeline("s:a")
    assert (row.subject, row.event_pk, row.type, row.state, row.detail) == (
        "s:a",
        pk,
        "encounter.session.completed",
        "note.filed",
        "DocumentReference created",
    )
    assert await work_store.subject_state("s:a") == "note.filed"


async def test_steps_keep_their_order_and_the_subject_state_follows_the_last(
    work_store: Store, feed: Feed
) -> None:
    """Steps list in order; a step without a timeline entry leaves the subject alone."""
    pk = await feed(subject="s:a")
    await _claimed(work_store)
    await work_store.record_step(pk, "h:1:a", "a", "ok", "", TimelineEntry("s:a", "one"))
    await work_store.record_step(pk, "h:1:a", "b", "skipped: not configured", "", None)
    await work_store.record_step(pk, "h:1:a", "c", "ok", "", TimelineEntry("s:a", "two"))
    assert [s.name for s in await work_store.list_steps(pk)] == ["a", "b", "c"]
    assert [t.state for t in await work_store.timeline("s:a")] == ["one", "two"]
    assert [t.state for t in await work_store.timeline("s:a", limit=1)] == ["two"]
    assert await work_store.subject_state("s:a") == "two"
    assert await work_store.subject_state("s:unknown") is None


# --- failures, release, replay --------------------------------------------------------------------


async def test_a_failure_with_retry_time_waits_until_then(
    work_store: Store, feed: Feed, clock: Clock
) -> None:
    """A retrying event is not claimable before its retry time; then its attempts count on."""
    pk = await feed()
    await _claimed(work_store)
    retry_at = clock.now + timedelta(seconds=60)
    status = await work_store.fail(pk, "h:1:a", "RetryableError", "HTTP 503", retry_at)
    assert status == "retrying"
    assert await _claimed(work_store) == []
    assert await work_store.next_due() == retry_at
    clock.advance(61)
    [claim] = await work_store.claim("h:1:a", 10, LEASE)
    assert (claim.pk, claim.attempts) == (pk, 2)
    first, second = await work_store.list_attempts(pk)
    assert (first.number, first.outcome, first.error_class, first.error_message) == (
        1,
        "retrying",
        "RetryableError",
        "HTTP 503",
    )
    assert first.next_attempt_at == retry_at
    assert first.finished_at is not None
    assert (second.number, second.outcome) == (2, "running")
    assert (await work_store.last_errors([pk, pk + 1000]))[pk] == first


async def test_a_retrying_event_still_holds_back_its_subject(
    work_store: Store, feed: Feed, clock: Clock
) -> None:
    """While the head of a subject waits for its retry, later events of it wait too."""
    first = await feed(subject="s:a")
    second = await feed(subject="s:a")
    await _claimed(work_store)
    await work_store.fail(first, "h:1:a", "RetryableError", "timeout", clock.now)
    claimed = await _claimed(work_store, "h:2:b")
    assert claimed == [first]
    assert second not in claimed


async def test_release_gives_the_event_back_uncounted(work_store: Store, feed: Feed) -> None:
    """A graceful shutdown's release makes the event claimable at once, attempt not counted."""
    pk = await feed()
    await _claimed(work_store, "h:1:a")
    await work_store.release(pk, "h:1:a")
    row = await work_store.get_event(pk)
    assert row is not None
    assert row.attempts == 0
    [claim] = await work_store.claim("h:2:b", 10, LEASE)
    assert (claim.pk, claim.attempts) == (pk, 1)
    assert [a.outcome for a in await work_store.list_attempts(pk)] == ["released", "running"]


async def test_replay_by_filter_counts_audits_and_resets(
    work_store: Store, feed: Feed, clock: Clock
) -> None:
    """Dry run counts only; a replay resets attempts, clears the error and audits each event."""
    dead_a = await feed(subject="s:1", source="abridge-a")
    dead_b = await feed(subject="s:2", source="abridge-b")
    done = await feed(subject="s:3", source="abridge-a")
    running = await feed(subject="s:4", source="abridge-a")
    pending = await feed(subject="s:5", source="abridge-a")
    unhandled = await feed(subject="s:6", source="abridge-a", handled=False)
    await work_store.claim("h:1:a", 4, LEASE)
    for pk in (dead_a, dead_b):
        await work_store.fail(pk, "h:1:a", "PermanentError", "HTTP 404", None)
    await work_store.complete(done, "h:1:a")

    dead = ReplayFilter(status="dead")
    assert await work_store.replay(dead, "ops@example", dry_run=True) == 2
    assert await _status(work_store, dead_a) == "dead"
    assert await work_store.list_audit() == []

    clock.advance(5)
    assert await work_store.replay(ReplayFilter(source="abridge-a", status="dead"), "ops") == 1
    row = await work_store.get_event(dead_a)
    assert row is not None
    assert (row.status, row.attempts, row.next_attempt_at) == ("pending", 0, clock.now)
    [audit] = await work_store.list_audit()
    assert (audit.action, audit.actor, audit.event_pk) == (ACTION_REPLAY, "ops", dead_a)

    untouchable = (running, pending, unhandled)
    assert await work_store.replay(ReplayFilter(event_pks=untouchable), "ops") == 0
    assert await work_store.replay(ReplayFilter(event_pks=(done,)), "ops") == 1
    assert await work_store.replay(ReplayFilter(status="dead", since=NOW + timedelta(1)), "o") == 0
    assert await _status(work_store, dead_b) == "dead"
    assert len(await work_store.list_audit()) == 2


# --- retention ------------------------------------------------------------------------------------


async def test_purge_drops_finished_payloads_then_expired_keys_keeping_the_rest(
    work_store: Store, feed: Feed, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """Finished payloads go after retention, finished rows after dedup; timelines stay."""
    env = make_envelope(subject="s:1")
    await work_store.accept(env, make_record(env))
    done = (await work_store.list_events(EventFilter(limit=1)))[0].id
    waiting = await feed(subject="s:2")
    kept_longer = await feed(subject="s:3", source="healthie-org")
    unhandled = await feed(subject="s:4", handled=False)
    await work_store.claim("h:1:a", 1, LEASE)
    await work_store.record_step(done, "h:1:a", "x", "ok", "", TimelineEntry("s:1", "seen"))
    await work_store.complete(done, "h:1:a")
    await work_store.claim("h:1:a", 2, LEASE)
    await work_store.release(waiting, "h:1:a")
    await work_store.fail(kept_longer, "h:1:a", "PermanentError", "HTTP 400", None)

    retention = {"healthie-org": 90}
    counts = await work_store.purge(NOW + timedelta(days=10), retention, 7, 30)
    assert (counts.payloads, counts.dedup_keys) == (2, 0)
    purged = {r.id: r.payload_purged for r in await work_store.list_events(EventFilter())}
    assert purged == {done: True, waiting: False, kept_longer: False, unhandled: True}
    assert await work_store.read_payload(done, "ops") is None
    assert await work_store.accept(env, make_record(env)) is False  # still a duplicate

    counts = await work_store.purge(NOW + timedelta(days=31), retention, 7, 30)
    assert (counts.payloads, counts.dedup_keys) == (0, 3)
    assert [r.id for r in await work_store.list_events(EventFilter())] == [waiting]
    assert await work_store.list_steps(done) == []
    assert [(t.event_pk, t.state) for t in await work_store.timeline("s:1")] == [(done, "seen")]
    assert await work_store.accept(env, make_record(env)) is True  # the key expired


# --- waking ---------------------------------------------------------------------------------------


async def test_wait_for_work_wakes_on_a_new_handled_event_and_times_out_otherwise(
    work_store: Store, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """An accept wakes a waiting worker; an unhandled event or a duplicate does not."""
    await work_store.wait_for_work(0.05)  # start listening (may return early once)
    await asyncio.wait_for(work_store.wait_for_work(0.05), 5)  # nothing happens: times out

    waiter = asyncio.create_task(work_store.wait_for_work(30))
    unhandled = make_envelope(handled=False)
    await work_store.accept(unhandled, make_record(unhandled))
    await work_store.accept(unhandled, make_record(unhandled))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    env = make_envelope()
    await work_store.accept(env, make_record(env))
    await asyncio.wait_for(waiter, 5)


async def test_wait_for_work_wakes_on_replay_and_release(work_store: Store, feed: Feed) -> None:
    """A replay or a release makes work claimable now, and says so."""
    pk = await feed()
    await _claimed(work_store)
    await work_store.wait_for_work(0.05)
    await asyncio.sleep(0.05)
    await work_store.wait_for_work(0.01)  # consume the accept's signal
    waiter = asyncio.create_task(work_store.wait_for_work(30))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await work_store.release(pk, "h:1:a")
    await asyncio.wait_for(waiter, 5)

    await _claimed(work_store)
    await work_store.fail(pk, "h:1:a", "PermanentError", "HTTP 400", None)
    await asyncio.sleep(0.05)
    await work_store.wait_for_work(0.01)
    waiter = asyncio.create_task(work_store.wait_for_work(30))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await work_store.replay(ReplayFilter(status="dead"), "ops")
    await asyncio.wait_for(waiter, 5)


async def test_next_due_ignores_events_queued_behind_their_head(
    work_store: Store, feed: Feed, clock: Clock
) -> None:
    """Only subject heads count: a blocked event is not 'due', the running head's lease is."""
    assert await work_store.next_due() is None
    first = await feed(subject="s:a")
    await feed(subject="s:a")
    [claim] = await work_store.claim("h:1:a", 10, LEASE)
    assert claim.pk == first
    assert await work_store.next_due() == claim.lease_expires_at
    await work_store.complete(first, "h:1:a")
    due = await work_store.next_due()
    assert due is not None
    assert due <= clock.now


# --- races ----------------------------------------------------------------------------------------


async def test_racing_workers_never_run_one_subject_twice_at_once(
    racing_stores: list[Store], make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """Four workers, 20 subjects: each event claimed once, one per subject, in order."""
    subjects, total = 20, 160
    feeder = racing_stores[0]
    order: dict[str, list[str]] = defaultdict(list)
    pick = random.Random(7)  # subjects in runs and out of turn, not round-robin
    for _ in range(total):
        env = make_envelope(subject=f"race:{pick.randrange(subjects)}")
        order[env.subject].append(env.event_id)
        await feeder.accept(env, make_record(env))
    claimed: list[str] = []
    finished: dict[str, list[str]] = defaultdict(list)
    in_flight: set[str] = set()

    async def worker(n: int, store: Store) -> None:
        owner, rng = f"race:{n}:{random.getrandbits(32):x}", random.Random(n)
        while len(claimed) < total:
            batch = await store.claim(owner, 3, 60)
            for c in batch:
                assert c.subject not in in_flight, f"{c.subject} runs twice at once"
                in_flight.add(c.subject)
                claimed.append(c.event_id)
            for c in batch:
                await store.record_step(c.pk, owner, "only", "ok", "", None)
                await asyncio.sleep(rng.random() / 200)
                in_flight.discard(c.subject)  # before completing: the next claim needs our commit
                finished[c.subject].append(c.event_id)
                await store.complete(c.pk, owner)
            if not batch:
                await asyncio.sleep(0.001)

    async def monitor() -> None:
        while len(claimed) < total:
            running = await feeder.list_events(EventFilter(status="processing", limit=1000))
            subjects_running = [r.subject for r in running]
            assert len(subjects_running) == len(set(subjects_running)), "a subject runs twice"
            await asyncio.sleep(0.002)

    await asyncio.wait_for(
        asyncio.gather(monitor(), *(worker(n, s) for n, s in enumerate(racing_stores))), 120
    )
    assert sorted(claimed) == sorted(e for ids in order.values() for e in ids)  # each once
    assert finished == order
    assert await feeder.list_events(EventFilter(status="processing")) == []


# --- a refused write among others -------------------------------------------------------------

_CANARY = "canary-7f3e9b"
_REFUSED = "abridge:session:refused"


async def test_a_write_the_database_refuses_fails_alone_and_quotes_nothing(
    work_store: Store, feed: Feed, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str], refuse_timeline_rows: Callable[[Store, str, str], None],
) -> None:  # fmt: skip
    """A completion whose timeline row the database refuses (a statement whose result nobody
    reads, so on PostgreSQL its error arrives with a later statement's answer) fails with
    StorageError; the completions sharing its transaction still commit; it leaves nothing
    behind (its event still runs under its lease, no step, no timeline row); and neither the
    log nor the error quotes the database's message."""
    subjects = ["abridge:session:ok1", _REFUSED, "abridge:session:ok2", "abridge:session:ok3"]
    pks = [await feed(subject=s) for s in subjects]
    assert sorted(await _claimed(work_store)) == sorted(pks)
    refuse_timeline_rows(work_store, _REFUSED, _CANARY)

    def step(subject: str) -> StepRecord:
        return StepRecord("note", "ok", "filed", TimelineEntry(subject, "filed", "note filed"))

    completions = [
        work_store.complete(pk, "h:1:a", step(s)) for pk, s in zip(pks, subjects, strict=True)
    ]
    with caplog.at_level(logging.DEBUG):
        results = await asyncio.gather(*completions, return_exceptions=True)

    refused = subjects.index(_REFUSED)
    assert type(results[refused]) is StorageError
    assert _CANARY not in str(results[refused])
    assert [r for i, r in enumerate(results) if i != refused] == [None] * 3
    assert [await _status(work_store, pk) for pk in pks] == [
        "processing" if i == refused else "done" for i in range(len(pks))
    ]
    assert await work_store.list_steps(pks[refused]) == []
    assert await work_store.timeline(_REFUSED) == []
    assert [len(await work_store.timeline(s)) for s in subjects if s != _REFUSED] == [1, 1, 1]
    out, err = capfd.readouterr()
    assert _CANARY not in caplog.text + out + err
