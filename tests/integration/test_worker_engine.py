"""The worker engine over every real store (in-memory fake, SQLite, PostgreSQL).

Time is a fake clock shared by the worker and the store: a retry's back-off is crossed by moving
the clock, never by sleeping. ``Worker.drain`` processes until nothing is claimable now.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from carehook.bootstrap import Store
from carehook.crypto import KeyRing
from carehook.envelope import Envelope, RequestRecord
from carehook.errors import Deferred, PermanentError, RetryableError
from carehook.inbox import open_store
from carehook.inbox.work import ReplayFilter
from carehook.testing import FakeClock
from carehook.worker.engine import Worker
from carehook.worker.policy import RetryPolicy
from carehook.workflows import (
    Router,
    Step,
    StepContext,
    StepResult,
    TimelineEntry,
    Workflow,
)

FAST = RetryPolicy(base_seconds=5.0, cap_seconds=60.0, max_attempts=12)


@pytest.fixture
def clock() -> FakeClock:
    """The fake clock of the test (now, to the second)."""
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(
    request: pytest.FixtureRequest, keyring: KeyRing, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    """An opened store on each database on the fake clock, closed after the test."""
    inbox: Any
    if request.param == "sqlite":
        inbox = open_store(f"sqlite:///{tmp_path / 'carehook.db'}", keyring, clock=clock)
    else:
        inbox = open_store(request.getfixturevalue("pg_url"), keyring, clock=clock)
    await inbox.open()
    try:
        yield inbox
    finally:
        await inbox.close()


async def deliver(store: Store, clock: FakeClock, subject: str, n: int, **kw: Any) -> int:
    """Accept one handled event of ``subject`` (payload ``{"n": n}``); returns its pk."""
    event_id = kw.pop("event_id", f"evt-{subject}-{n}")
    envelope = Envelope(
        source="abridge", vendor="abridge", event_id=event_id,
        type=kw.pop("type", "encounter.session.completed"), subject=subject, occurred_at=None,
        received_at=clock(), payload=json.dumps({"n": n}).encode(), secret_index=0,
        handled=kw.pop("handled", True),
    )  # fmt: skip
    record = RequestRecord("abridge", clock(), "127.0.0.1", 10, 200, "accepted")
    assert await store.accept(envelope, record)
    rows = await store.list_events(_filter(limit=1))
    return rows[0].id


def _filter(**kw: Any) -> Any:
    from carehook.inbox.port import EventFilter

    return EventFilter(**kw)


@dataclass
class Faults:
    """A test workflow: named steps that count their runs and fail as scripted."""

    runs: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    order: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    script: dict[str, list[BaseException]] = field(default_factory=dict)
    active: set[str] = field(default_factory=set)
    overlaps: int = 0

    def step(self, name: str, *, timeline: bool = False) -> Step:
        """A step that counts its runs per event and raises the next scripted error, if any."""

        async def run(ctx: StepContext) -> StepResult:
            item = ctx.item
            self.runs[(name, item.pk)] += 1
            self.overlaps += item.subject in self.active
            self.active.add(item.subject)
            try:
                for _ in range(random.randint(0, 3)):  # let other events interleave
                    await asyncio.sleep(0)
                self.order[item.subject].append(int(item.payload["n"]))
                errors = self.script.get(name)
                if errors:
                    raise errors.pop(0)
            finally:
                self.active.discard(item.subject)
            entry = TimelineEntry(item.subject, f"{name}:{item.type}") if timeline else None
            return StepResult(timeline=entry)

        return Step(name, run)

    def router(self, *names: str) -> Router:
        """Every event runs ``names`` in order; the last one writes a timeline entry."""
        steps = tuple(self.step(n, timeline=i == len(names) - 1) for i, n in enumerate(names))
        return Router({}, fallback=Workflow("test", steps))


def worker(store: Store, router: Router, clock: FakeClock, **kw: Any) -> Worker:
    """A worker on the fake clock with a seeded rng."""
    policy = kw.pop("policy", FAST)
    return Worker(store, router, lambda _source: policy, clock=clock, rng=random.Random(7), **kw)


async def drain_until(
    w: Worker, clock: FakeClock, done: Callable[[], Any], step_seconds: float = 60.0
) -> int:
    """Drain, move the clock past any back-off, repeat until ``done()``; returns the rounds."""
    for rounds in range(1, 50):
        await w.drain()
        if await done():
            return rounds
        clock.advance(step_seconds)
    raise AssertionError("never finished")


async def status(store: Store, pk: int) -> str:
    """The event's status."""
    row = await store.get_event(pk)
    assert row is not None
    return row.status


async def test_retryable_failure_three_times_then_done(store: Store, clock: FakeClock) -> None:
    """A step failing 3 times (retryable) then succeeding ends done after 4 attempts."""
    faults = Faults(script={"s1": [RetryableError("EHR timed out")] * 3})
    pk = await deliver(store, clock, "abridge:session:a", 1)
    w = worker(store, faults.router("s1"), clock)
    await w.drain()
    assert await status(store, pk) == "retrying"
    await w.drain()  # the back-off has not passed: nothing runs
    assert faults.runs[("s1", pk)] == 1

    async def is_done() -> bool:
        return await status(store, pk) == "done"

    await drain_until(w, clock, is_done)
    row = await store.get_event(pk)
    assert row is not None
    assert row.attempts == 4
    attempts = await store.list_attempts(pk)
    assert [a.error_class for a in attempts] == ["RetryableError"] * 3 + [None]
    assert all(a.next_attempt_at is not None for a in attempts[:3])
    assert [s.name for s in await store.list_steps(pk)] == ["s1"]


async def test_retry_waits_for_the_backoff_and_retry_after(store: Store, clock: FakeClock) -> None:
    """A Retry-After of 600 s holds the event back until the clock passes it."""
    faults = Faults(script={"s1": [RetryableError("429 from the EHR", retry_after=600)]})
    pk = await deliver(store, clock, "abridge:session:a", 1)
    w = worker(store, faults.router("s1"), clock, policy=RetryPolicy(5, 3600, 12))
    await w.drain()
    attempt = (await store.list_attempts(pk))[0]
    assert attempt.next_attempt_at is not None
    assert attempt.next_attempt_at >= clock() + timedelta(seconds=600)
    clock.advance(599)
    await w.drain()
    assert faults.runs[("s1", pk)] == 1
    clock.advance(3600)
    await w.drain()
    assert await status(store, pk) == "done"


async def test_permanent_failure_is_dead_and_replay_after_fix_is_done(
    store: Store, clock: FakeClock
) -> None:
    """A permanent failure goes dead at once; after the fault is fixed, a replay ends done."""
    faults = Faults(script={"s1": [PermanentError("EHR refused the note: 400")]})
    pk = await deliver(store, clock, "abridge:session:a", 1)
    w = worker(store, faults.router("s1"), clock)
    await w.drain()
    assert await status(store, pk) == "dead"
    last = (await store.last_errors([pk]))[pk]
    assert (last.error_class, last.error_message) == ("PermanentError", "EHR refused the note: 400")
    assert last.next_attempt_at is None
    assert await store.replay(ReplayFilter(event_pks=(pk,)), "alice") == 1
    await w.drain()
    assert await status(store, pk) == "done"
    assert faults.runs[("s1", pk)] == 2
    audit = await store.list_audit()
    assert any(a.action == "event.replay" and a.actor == "alice" for a in audit)


async def test_exhausted_retries_go_dead(store: Store, clock: FakeClock) -> None:
    """A step that always fails retryably is dead after max_attempts attempts."""
    faults = Faults(script={"s1": [RetryableError("503")] * 10})
    pk = await deliver(store, clock, "abridge:session:a", 1)
    w = worker(store, faults.router("s1"), clock, policy=RetryPolicy(1, 10, 3))

    async def is_dead() -> bool:
        return await status(store, pk) == "dead"

    await drain_until(w, clock, is_dead)
    assert faults.runs[("s1", pk)] == 3
    assert [a.outcome for a in await store.list_attempts(pk)] == ["retrying", "retrying", "dead"]


async def test_finished_steps_are_not_rerun_on_retry(store: Store, clock: FakeClock) -> None:
    """Step one is recorded, step two fails; the retry runs step two only, once more."""
    faults = Faults(script={"two": [RetryableError("destination down")]})
    pk = await deliver(store, clock, "abridge:session:a", 1)
    w = worker(store, faults.router("one", "two"), clock)

    async def is_done() -> bool:
        return await status(store, pk) == "done"

    await drain_until(w, clock, is_done)
    assert faults.runs[("one", pk)] == 1
    assert faults.runs[("two", pk)] == 2
    assert [s.name for s in await store.list_steps(pk)] == ["one", "two"]
    timeline = await store.timeline("abridge:session:a")
    assert [t.state for t in timeline] == ["two:encounter.session.completed"]


async def test_per_subject_order_holds_under_concurrency_8(store: Store, clock: FakeClock) -> None:
    """Many subjects, interleaved, concurrency 8: each subject's events run in receive order."""
    faults = Faults()
    subjects = [f"nabla:job:{i}" for i in range(12)]
    sent: dict[str, list[int]] = defaultdict(list)
    rng = random.Random(3)
    for n in range(120):
        subject = rng.choice(subjects)
        await deliver(store, clock, subject, n)
        sent[subject].append(n)
    w = worker(store, faults.router("s1"), clock, concurrency=8)
    await w.drain()
    assert dict(faults.order) == dict(sent)
    assert faults.overlaps == 0
    for subject in subjects:
        states = [t.event_pk for t in await store.timeline(subject)]
        assert states == sorted(states)


async def test_drain_looks_again_when_an_event_finishes_during_a_claim(
    store: Store, clock: FakeClock
) -> None:
    """A claim that looked before the head of a subject finished, and returned after, must not
    end ``drain`` with that subject's next event still waiting."""
    first = await deliver(store, clock, "s:a", 1)
    second = await deliver(store, clock, "s:a", 2)
    await deliver(store, clock, "s:b", 3)
    looked = asyncio.Event()
    ran: list[int] = []
    in_flight: list[Worker] = []

    async def step(ctx: StepContext) -> StepResult:
        if ctx.item.pk == first:
            await looked.wait()  # finish only once the racing claim has looked
        ran.append(ctx.item.pk)
        return StepResult()

    class RacingClaims:
        """The store, with its second claim returning only after the first event is done."""

        def __init__(self) -> None:
            self.claims = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        async def claim(self, owner: str, limit: int, lease: float) -> Any:
            self.claims += 1
            found = await store.claim(owner, limit, lease)
            if self.claims == 2:
                assert found == []  # the second event waits behind the first, still running
                looked.set()
                for _ in range(1000):
                    if first not in in_flight[0]._inflight:
                        break
                    await asyncio.sleep(0.005)
            return found

    router = Router({}, fallback=Workflow("step", (Step("step", step),)))
    w = worker(RacingClaims(), router, clock)  # type: ignore[arg-type]
    in_flight.append(w)
    await asyncio.wait_for(w.drain(), 20)
    assert second in ran
    assert await status(store, second) == "done"


async def test_dead_event_does_not_block_its_subject(store: Store, clock: FakeClock) -> None:
    """A dead event lets later events of its subject run (documented rule)."""
    faults = Faults(script={"s1": [PermanentError("bad note")]})
    first = await deliver(store, clock, "abridge:session:a", 1)
    second = await deliver(store, clock, "abridge:session:a", 2)
    w = worker(store, faults.router("s1"), clock)
    await w.drain()
    assert (await status(store, first), await status(store, second)) == ("dead", "done")


async def test_lease_lost_attempt_is_dropped(store: Store, clock: FakeClock) -> None:
    """A worker whose lease ran out (another took over) records nothing and drops the attempt."""
    gate = asyncio.Event()
    entered = asyncio.Event()
    calls = 0

    async def slow(ctx: StepContext) -> StepResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            entered.set()
            await gate.wait()
        return StepResult(timeline=TimelineEntry(ctx.item.subject, "seen"))

    router = Router({}, fallback=Workflow("slow", (Step("slow", slow),)))
    pk = await deliver(store, clock, "abridge:session:a", 1)
    stalled = worker(store, router, clock, lease_seconds=30)
    rescuer = worker(store, router, clock, lease_seconds=30)
    first = asyncio.create_task(stalled.drain())
    await entered.wait()
    clock.advance(31)  # the stalled worker's lease ran out
    await rescuer.drain()
    gate.set()
    await first
    assert await status(store, pk) == "done"
    assert calls == 2
    assert len(await store.timeline("abridge:session:a")) == 1
    lost = stalled.metrics.events.labels("abridge", "lease_lost")._value.get()
    assert lost == 1


async def test_replay_of_a_purged_event_is_dead_with_a_clear_reason(
    store: Store, clock: FakeClock
) -> None:
    """Replaying a dead event whose payload retention purged ends dead: 'payload ... purged'."""
    faults = Faults(script={"s1": [PermanentError("bad note")]})
    pk = await deliver(store, clock, "abridge:session:a", 1)
    w = worker(store, faults.router("s1"), clock)
    await w.drain()
    clock.advance(3 * 86400)
    counts = await store.purge(clock(), {"abridge": 1}, 30, 30)
    assert counts.payloads == 1
    assert await store.replay(ReplayFilter(event_pks=(pk,)), "alice") == 1
    await w.drain()
    assert await status(store, pk) == "dead"
    assert faults.runs[("s1", pk)] == 1
    last = (await store.last_errors([pk]))[pk]
    assert last.error_message is not None
    assert "purged" in last.error_message


async def test_graceful_stop_releases_what_cannot_finish(store: Store, clock: FakeClock) -> None:
    """On stop with no grace, an event stuck in a step is released: pending again, not counted."""
    entered = asyncio.Event()

    async def stuck(_: StepContext) -> StepResult:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    pk = await deliver(store, clock, "abridge:session:a", 1)
    router = Router({}, fallback=Workflow("stuck", (Step("stuck", stuck),)))
    w = worker(store, router, clock, shutdown_grace_seconds=0)
    stop = asyncio.Event()
    running = asyncio.create_task(w.run(stop))
    await entered.wait()
    stop.set()
    await asyncio.wait_for(running, 10)  # far below poll_seconds: the stop woke it
    row = await store.get_event(pk)
    assert row is not None
    assert (row.status, row.attempts) == ("pending", 0)
    assert [a.outcome for a in await store.list_attempts(pk)] == ["released"]


async def test_run_loop_wakes_for_new_events_and_finishes_in_flight(
    store: Store, clock: FakeClock
) -> None:
    """A running worker picks up events accepted after it started; stop lets them finish."""
    seen: list[int] = []
    all_seen = asyncio.Event()

    async def count(ctx: StepContext) -> StepResult:
        seen.append(ctx.item.pk)
        if len(seen) == 30:
            all_seen.set()
        return StepResult()

    router = Router({}, fallback=Workflow("count", (Step("count", count),)))
    w = worker(store, router, clock, poll_seconds=30)  # only a wake-up can be this quick
    stop = asyncio.Event()
    running = asyncio.create_task(w.run(stop))
    pks = [await deliver(store, clock, f"healthie:appointment:{i % 5}", i) for i in range(30)]
    await asyncio.wait_for(all_seen.wait(), 20)
    stop.set()
    await asyncio.wait_for(running, 10)  # far below poll_seconds: the stop woke it
    assert sorted(seen) == sorted(pks)
    assert {await status(store, pk) for pk in pks} == {"done"}


async def test_a_busy_ingress_holds_claims_back_but_never_stops_the_backlog(
    store: Store, clock: FakeClock
) -> None:
    """While the ingress says it is busy, no claim is made for up to the give-way time; a
    claim still comes after that, and at once when the ingress is idle again."""
    claimed_at: list[float] = []
    busy = True

    async def note(ctx: StepContext) -> StepResult:
        claimed_at.append(asyncio.get_running_loop().time())
        return StepResult()

    router = Router({}, fallback=Workflow("note", (Step("note", note),)))
    w = worker(store, router, clock, concurrency=1, poll_seconds=30, ingress_busy=lambda: busy,
               give_way_seconds=0.1)  # fmt: skip
    await deliver(store, clock, "s:1", 1)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    started = loop.time()
    running = asyncio.create_task(w.run(stop))
    for _ in range(500):
        if claimed_at:
            break
        await asyncio.sleep(0.005)
    # the only claim waited for the longest give-way, the ingress being busy throughout
    assert claimed_at
    assert claimed_at[0] - started >= 0.09
    assert w.metrics.gave_way._value.get() >= 1
    busy = False
    await asyncio.sleep(0.2)  # twice the longest give-way: one begun while busy has ended
    gave_way = w.metrics.gave_way._value.get()
    await deliver(store, clock, "s:2", 2)
    for _ in range(500):
        if len(claimed_at) == 2:
            break
        await asyncio.sleep(0.005)
    stop.set()
    await asyncio.wait_for(running, 10)
    assert len(claimed_at) == 2
    # not held back: the ingress is idle (counted, not timed: a slow fsync in CI is no failure)
    assert w.metrics.gave_way._value.get() == gave_way


async def test_heartbeat_keeps_a_long_step_leased(store: Store, clock: FakeClock) -> None:
    """A step outlasting several lease periods keeps its lease: one attempt, done."""
    beats = asyncio.Event()

    class Counting:
        """The store, counting lease extensions."""

        def __init__(self, inner: Store) -> None:
            self.inner = inner
            self.extended = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        async def extend_leases(self, owner: str, pks: Iterable[int], lease: float) -> set[int]:
            held = await self.inner.extend_leases(owner, list(pks), lease)
            self.extended += 1
            if self.extended >= 4 and held:
                beats.set()
            return held

    async def long(_: StepContext) -> StepResult:
        await beats.wait()
        return StepResult()

    clock.follow_real_time()  # the lease now runs out unless the heartbeat renews it
    counting = Counting(store)
    pk = await deliver(store, clock, "abridge:session:a", 1)
    router = Router({}, fallback=Workflow("long", (Step("long", long),)))
    w = Worker(counting, router, lambda _s: FAST, lease_seconds=0.3)  # type: ignore[arg-type]
    await asyncio.wait_for(w.drain(), 60)
    assert await status(store, pk) == "done"
    assert len(await store.list_attempts(pk)) == 1


async def test_failure_logs_carry_no_payload_or_foreign_message(
    store: Store, clock: FakeClock
) -> None:
    """A foreign exception quoting the payload is logged and stored by class name only."""

    async def leaky(ctx: StepContext) -> StepResult:
        raise KeyError(f"patient Jane Doe {ctx.item.payload}")

    pk = await deliver(store, clock, "abridge:session:a", 424242)
    w = worker(store, Router({}, fallback=Workflow("leaky", (Step("leaky", leaky),))), clock)
    with structlog.testing.capture_logs() as logs:
        await w.drain()
    text = json.dumps(logs, default=str)
    assert "Jane" not in text
    assert "424242" not in text
    assert any(e.get("error_class") == "KeyError" for e in logs)
    attempt = (await store.list_attempts(pk))[0]
    assert attempt.error_class == "KeyError"
    assert attempt.error_message is not None
    assert "Jane" not in attempt.error_message


async def test_heartbeat_finding_the_lease_gone_abandons_the_event(
    store: Store, clock: FakeClock
) -> None:
    """When a renewal finds the lease expired, the worker abandons that attempt (the event is
    claimed afresh and finishes once)."""
    entered = asyncio.Event()
    calls = 0

    async def stuck_once(_: StepContext) -> StepResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            entered.set()
            await asyncio.Event().wait()
        return StepResult()

    pk = await deliver(store, clock, "abridge:session:a", 1)
    router = Router({}, fallback=Workflow("stuck", (Step("stuck", stuck_once),)))
    w = worker(store, router, clock, lease_seconds=0.3)  # renewed every 0.1 s of real time
    draining = asyncio.create_task(w.drain())
    await entered.wait()
    clock.advance(60)  # the store now sees the lease long expired
    await asyncio.wait_for(draining, 10)
    assert w.metrics.events.labels("abridge", "lease_lost")._value.get() == 1
    assert calls == 2
    assert [a.outcome for a in await store.list_attempts(pk)] == ["expired", "done"]


async def test_worker_rides_out_a_storage_outage(keyring: KeyRing, tmp_path: Path) -> None:
    """Claims failing while the store is down are retried; work resumes when it is back."""
    clock = FakeClock(datetime.now(UTC))
    path = tmp_path / "carehook.db"
    store = open_store(f"sqlite:///{path}", keyring, clock=clock, busy_timeout=0.05)
    await store.open()
    pk = await deliver(store, clock, "abridge:session:a", 1)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock: the store cannot commit
    failures = 0
    claim = store.claim

    async def flaky_claim(owner: str, limit: int, lease: float) -> Any:
        nonlocal failures
        try:
            return await claim(owner, limit, lease)
        except Exception:
            failures += 1
            if failures == 3:  # back after the third failed claim
                blocker.execute("ROLLBACK")
            raise

    store.claim = flaky_claim  # type: ignore[method-assign]
    done = asyncio.Event()

    async def step(_: StepContext) -> StepResult:
        done.set()
        return StepResult()

    w = worker(store, Router({}, fallback=Workflow("s", (Step("s", step),))), clock,
               poll_seconds=0.01)  # fmt: skip
    stop = asyncio.Event()
    running = asyncio.create_task(w.run(stop))
    try:
        await asyncio.wait_for(done.wait(), 10)
        stop.set()
        await asyncio.wait_for(running, 10)
        assert failures == 3
        assert (await store.get_event(pk)).status == "done"  # type: ignore[union-attr]
    finally:
        blocker.close()
        await store.close()


async def test_a_deferral_waits_without_using_attempts_and_is_never_dead_lettered(
    store: Store, clock: FakeClock
) -> None:
    """A step deferring far beyond the back-off cap (as OpenEvidence's ``query.failed`` retry
    does) with one attempt allowed: the event waits, is not dead, and runs when due."""
    pk = await deliver(store, clock, "openevidence:query:q1", 1)
    runs: list[datetime] = []
    due = clock() + timedelta(hours=6)  # FAST caps back-off at 60 s

    async def wait_out(ctx: StepContext) -> StepResult:
        runs.append(ctx.now)
        if ctx.now < due:
            raise Deferred(due, "re-delivery due later (retry_after)")
        return StepResult(outcome="ok")

    router = Router({}, fallback=Workflow("oe", (Step("retry.requester", wait_out),)))
    policy = RetryPolicy(base_seconds=5.0, cap_seconds=60.0, max_attempts=1)
    w = Worker(store, router, lambda _s: policy, clock=clock, rng=random.Random(7))
    await w.drain()
    row = await store.get_event(pk)
    assert row is not None
    assert (row.status, row.attempts, row.next_attempt_at) == ("pending", 0, due)
    assert w.metrics.events.labels("abridge", "deferred")._value.get() == 1
    clock.advance(6 * 3600 + 1)
    await w.drain()
    row = await store.get_event(pk)
    assert row is not None
    assert (row.status, row.attempts) == ("done", 1)
    assert [a.outcome for a in await store.list_attempts(pk)] == ["deferred", "done"]
    assert len(runs) == 2


def test_serve_gives_its_worker_the_configured_give_way(tmp_path: Any) -> None:
    """``[worker] ingress_priority_seconds`` reaches the worker that ``serve`` builds (0.5 s
    when not set)."""
    from carehook.bootstrap import build_components, build_worker
    from carehook.settings import load_settings

    for text, expected in (("", 0.5), ("[worker]\ningress_priority_seconds = 2.5\n", 2.5)):
        config = tmp_path / "carehook.toml"
        config.write_text(f'data_dir = "."\n{text}')
        w = build_worker(build_components(load_settings(config)))
        assert w._give_way_seconds == expected
