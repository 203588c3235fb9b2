"""The worker engine: claim due events, run their workflow's steps, record, retry or dead-letter.

One :class:`Worker` per process; any number of processes may share one database (the store's
leases and per-subject claiming keep them apart). The loop:

1. claim up to the free slots (``concurrency`` minus events in flight); each claim runs in its
   own task: decode the payload, route ``(vendor, type)`` to a workflow, skip the steps already
   recorded (read with the claim), run the rest in order and record each (with its timeline
   entry, atomically), the last one together with ``complete``;
   a step that fails after some of its effects took place (:class:`PartialFailure`: an alert
   that reached 1 of 2 targets) has those parts recorded as ``<step>/<part>``, and its retry
   gets them in ``StepContext.done`` to skip them;
2. a failure is classified (:func:`carehook.worker.policy.classify`): retryable and attempts left
   → ``retrying`` after a back-off; otherwise → ``dead``. A step raising
   :class:`~carehook.errors.Deferred` is a planned wait, not a failure: the event is given back
   due at its ``until`` (``Store.defer``), the attempt not counted.
   :class:`~carehook.errors.LeaseLost` means another worker owns the event now: the attempt is
   dropped without a record;
   In ``serve``, a claim first gives way while the process's ingress is busy (``[worker]
   ingress_priority_at`` deliveries being answered), for at most ``ingress_priority_seconds``
   (0.5 s): acknowledgements first, the backlog catches up when the burst is over;
3. with nothing to claim, wait until the store hears of new work, a running event finishes (it
   may unblock the next event of its subject), the earliest retry falls due, or ``poll_seconds``;
4. a heartbeat renews the leases of the events in flight every third of ``lease_seconds``.

On stop: no new claims; events in flight get ``shutdown_grace_seconds`` to finish, the rest are
cancelled and released (due again at once, the attempt not counted).

Logs carry ids, names and error classes only: never payload content, never the message of a
foreign exception (``classify`` withholds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from pydantic_core import from_json

from carehook.errors import Deferred, LeaseLost, PartialFailure, PermanentError, StorageError
from carehook.inbox.port import Store
from carehook.inbox.work import Claim, StepRecord
from carehook.observability import get_logger
from carehook.worker.identity import alive_pids, host_identity, new_owner
from carehook.worker.metrics import WorkerMetrics
from carehook.worker.policy import RetryPolicy, classify
from carehook.workflows import Router, Step, StepContext, StepResult, WorkItem

Clock = Callable[[], datetime]
PolicyFor = Callable[[str], RetryPolicy]

_log = get_logger("carehook.worker")
#: the shortest idle wait: a due time in the past never makes the loop spin
_MIN_WAIT = 0.02
#: the least time between a claim that found nothing and the next claim
_EMPTY_CLAIM_GAP = 0.01
#: the longest a claim waits for a busy ingress (``Worker._give_way``; ``[worker]
#: ingress_priority_seconds``), and how often it looks
GIVE_WAY_SECONDS = 0.5
_GIVE_WAY_STEP = 0.002
#: between a step's name and one of its parts in a step record: ``alert.ops/ops[1]``
PART_SEPARATOR = "/"


def utcnow() -> datetime:
    """The worker's default clock."""
    return datetime.now(UTC)


def work_item(claim: Claim) -> WorkItem:
    """The claim as steps see it; a purged or unreadable payload is a permanent failure."""
    if claim.payload is None:
        raise PermanentError(f"payload of event {claim.pk} was purged (retention)")
    try:
        # pydantic-core's parser first (as the ingress); json.loads decides what it refuses
        # (a lone surrogate escape, NaN), so both accept the same payloads
        payload = from_json(claim.payload)
    except ValueError:
        try:
            payload = json.loads(claim.payload)
        except ValueError:
            raise PermanentError(f"payload of event {claim.pk} is not JSON") from None
    if not isinstance(payload, dict):
        raise PermanentError(f"payload of event {claim.pk} is not a JSON object")
    return WorkItem(
        pk=claim.pk, source=claim.source, vendor=claim.vendor, event_id=claim.event_id,
        type=claim.type, subject=claim.subject, attempts=claim.attempts,
        received_at=claim.received_at, payload=payload, occurred_at=claim.occurred_at,
    )  # fmt: skip


class Worker:
    """Claims and processes events of one store until told to stop."""

    def __init__(
        self,
        store: Store,
        router: Router,
        policies: PolicyFor,
        *,
        concurrency: int = 32,
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        shutdown_grace_seconds: float = 10.0,
        owner: str | None = None,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        metrics: WorkerMetrics | None = None,
        ingress_busy: Callable[[], bool] | None = None,
        give_way_seconds: float = GIVE_WAY_SECONDS,
    ) -> None:
        if concurrency < 1 or lease_seconds <= 0 or poll_seconds <= 0 or give_way_seconds <= 0:
            raise ValueError("concurrency, lease_seconds, poll_seconds and give_way_seconds must"
                             " be positive")  # fmt: skip
        self._store = store
        self._router = router
        self._policies = policies
        self._concurrency = concurrency
        self._batch = max(1, concurrency // 2)
        self._lease = lease_seconds
        self._poll = poll_seconds
        self._grace = shutdown_grace_seconds
        self._host = host_identity()
        self.owner = owner or new_owner(self._host)
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrecy)
        self.metrics = metrics or WorkerMetrics.create()
        self._ingress_busy = ingress_busy
        self._give_way_seconds = give_way_seconds
        self._inflight: dict[int, tuple[Claim, asyncio.Task[None]]] = {}
        self._lost: set[int] = set()
        #: events whose outcome is being written: a heartbeat that no longer finds their lease
        #: (the outcome committed, its answer not back yet) must not call them lost
        self._finishing: set[int] = set()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()  # run()'s, once it runs
        self._empty_at: float | None = None  # when the last claim found nothing
        self._due: datetime | None = None  # the store's last next_due answer ...
        self._due_checked = -math.inf  # ... and when it was asked (monotonic)

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Process events until ``stop`` is set, then shut down gracefully."""
        self._stop = stop
        await self._release_dead_owners()
        helpers = [
            asyncio.create_task(self._watch(stop), name="carehook-worker-stop"),
            asyncio.create_task(self._listen(), name="carehook-worker-listen"),
            asyncio.create_task(self._heartbeat(), name="carehook-worker-heartbeat"),
        ]
        for helper in helpers:  # a helper that fails wakes the loop, which then fails too
            helper.add_done_callback(lambda _task: self._wake.set())
        _log.info("worker.started", workers=self._concurrency, host=self._host)
        try:
            while not stop.is_set():
                await self._turn()
                _raise_if_failed(helpers)
        finally:
            try:
                await self._shutdown()
            finally:
                await _cancel(helpers)
            _log.info("worker.stopped")

    async def drain(self) -> None:
        """Process until nothing is claimable and nothing is in flight (tests, one-off runs)."""
        heartbeat = asyncio.create_task(self._heartbeat(), name="carehook-worker-heartbeat")
        try:
            while True:
                self._wake.clear()
                free = self._free_slots()
                claimed = len(self._start(await self._claim(free))) if free > 0 else 0
                if not self._inflight:
                    if self._wake.is_set():
                        # an event finished while the claim ran, perhaps after the claim looked
                        # at its subject: its successor may be claimable now, look once more
                        continue
                    return
                if claimed < free or free == 0:
                    await self._wake.wait()
        finally:
            await _cancel([heartbeat, *(task for _, task in self._inflight.values())])

    async def _turn(self) -> None:
        """Claim into the free slots, then wait for a reason to look again."""
        free = self._free_slots()
        timeout: float | None = None
        if free > 0:
            await self._pace()
            await self._give_way()
            self._wake.clear()
            try:
                claimed = self._start(await self._claim(free))
            except Exception as exc:  # the store is down, or a bug: log it, try again later
                log = _log.warning if isinstance(exc, StorageError) else _log.error
                log("worker.claim_failed", error_class=type(exc).__name__)
                await _wait(self._stop, self._poll)
                return
            self._empty_at = None if claimed else time.monotonic()
            if len(claimed) == free:
                return
            if not claimed:
                timeout = await self._until_due()
        else:
            self._wake.clear()
        if not self._stop.is_set():  # a stop seen before the clear above would be lost
            await _wait(self._wake, timeout)

    async def _pace(self) -> None:
        """After a claim that found nothing, wait a moment before the next.

        Every process sharing a PostgreSQL database hears every notification; without this, N
        processes would run N claims per event received, most of them finding nothing.
        """
        if self._empty_at is not None:
            left = self._empty_at + _EMPTY_CLAIM_GAP - time.monotonic()
            if left > 0:
                await asyncio.sleep(left)

    async def _give_way(self) -> None:
        """While this process's ingress is busy answering deliveries, hold the next claim back
        (``serve``: the worker shares the event loop and the GIL with the acknowledgements).

        At most ``give_way_seconds`` per claim, so under a flood the backlog still moves.
        """
        busy = self._ingress_busy
        if busy is None or not busy():
            return
        self.metrics.gave_way.inc()
        until = time.monotonic() + self._give_way_seconds
        while busy() and time.monotonic() < until and not self._stop.is_set():  # noqa: ASYNC110 (a counter, polled for at most give_way_seconds)
            await asyncio.sleep(_GIVE_WAY_STEP)

    def _free_slots(self) -> int:
        """How many events to claim now: none until half the slots are free (a claim costs
        about the same for one event as for many), unless nothing at all is running."""
        free = self._concurrency - len(self._inflight)
        return free if free >= self._batch or not self._inflight else 0

    async def _claim(self, limit: int) -> list[Claim]:
        return await self._store.claim(self.owner, limit, self._lease)

    def _start(self, claims: Sequence[Claim]) -> Sequence[Claim]:
        for claim in claims:
            task = asyncio.create_task(self._process(claim), name=f"carehook-event-{claim.pk}")
            self._inflight[claim.pk] = (claim, task)
            task.add_done_callback(functools.partial(self._finished, claim.pk))
        self.metrics.in_flight.set(len(self._inflight))
        return claims

    def _finished(self, pk: int, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(pk, None)
        self._lost.discard(pk)
        self._finishing.discard(pk)
        self.metrics.in_flight.set(len(self._inflight))
        self._wake.set()

    async def _until_due(self) -> float | None:
        """Seconds until ``claim`` may find something without a signal, if before the next poll.

        The store is asked at most once per poll (idle workers of many processes would
        otherwise ask after every notification). A due time in the past (a claim lost to
        another worker, a lease just expired) means: look again soon, and ask afresh.
        """
        now = time.monotonic()
        if now - self._due_checked >= self._poll:
            try:
                self._due = await self._store.next_due()
            except StorageError:
                self._due = None
            self._due_checked = now
        if self._due is None:
            return None
        wait = (self._due - self._clock()).total_seconds()
        if wait <= 0:
            self._due_checked = -math.inf
        return min(max(wait + 0.001, _MIN_WAIT), self._poll) if wait < self._poll else None

    # -- helpers running beside the loop -----------------------------------------------------

    async def _watch(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _listen(self) -> None:
        """Turn the store's notifications (and, at the latest, each poll) into wake-ups."""
        while True:
            try:
                await self._store.wait_for_work(self._poll)
            except StorageError as exc:
                _log.warning("worker.listen_failed", error_class=type(exc).__name__)
                await asyncio.sleep(self._poll)
            _raise_if_cancelling()
            self._wake.set()

    async def _heartbeat(self) -> None:
        """Renew the leases in flight; a lease found lost cancels its event's task."""
        beats_per_sweep = 3 * 10  # look for dead owners on this host every ~10 lease periods
        beat = 0
        while True:
            await asyncio.sleep(self._lease / 3)
            beat += 1
            if beat % beats_per_sweep == 0:
                await self._release_dead_owners()
            pks = list(self._inflight)
            if not pks:
                continue
            try:
                held = await self._store.extend_leases(self.owner, pks, self._lease)
            except StorageError as exc:
                _log.warning("worker.heartbeat_failed", error_class=type(exc).__name__)
                continue
            _raise_if_cancelling()
            for pk in set(pks) - held:
                self._drop_lost(pk)

    def _drop_lost(self, pk: int) -> None:
        entry = self._inflight.get(pk)
        if entry is None or entry[1].done() or pk in self._finishing:
            return
        self._lost.add(pk)
        entry[1].cancel()
        self._lease_lost(entry[0])

    async def _release_dead_owners(self) -> None:
        pids = alive_pids()
        if pids is None:
            return
        try:
            count = await self._store.release_dead_owners(self._host, pids)
        except StorageError as exc:
            _log.warning("worker.release_dead_owners_failed", error_class=type(exc).__name__)
            return
        if count:
            _log.info("worker.released_dead_owners", count=count, host=self._host)

    # -- one event ---------------------------------------------------------------------------

    async def _process(self, claim: Claim) -> None:
        """Run one claimed event's remaining steps and record how the attempt ended."""
        try:
            await self._run_workflow(claim)
        except LeaseLost:
            self._lease_lost(claim)
        except asyncio.CancelledError:
            raise
        except Deferred as deferral:
            await self._deferred(claim, deferral)
        except Exception as exc:
            await self._failed(claim, exc)
        else:
            self._done(claim)

    async def _run_workflow(self, claim: Claim) -> None:
        """Run the steps not yet finished; the last one is recorded with ``complete`` (one
        transaction, one commit), the others each with ``record_step``."""
        workflow = self._router.route(claim.vendor, claim.type, claim.source)
        steps = workflow.steps if workflow is not None else ()
        remaining = [step for step in steps if step.name not in claim.finished]
        last: StepRecord | None = None
        if remaining:
            item = work_item(claim)
            stateful = workflow is not None and workflow.stateful
            state: Mapping[str, Any] = {}
            if stateful:  # read with the claim, saving a round trip per event
                read = claim.subject_data
                state = await self._store.subject_data(claim.subject) if read is None else read
            for step in remaining:
                if last is not None:
                    await self._store.record_step(
                        claim.pk, self.owner, last.name, last.outcome, last.detail,
                        last.timeline, data=last.data, review=last.review,
                    )  # fmt: skip
                try:
                    result = await self._run_step(
                        step, item, state, parts_of(claim.finished, step.name)
                    )
                except PartialFailure as exc:
                    await self._record_parts(claim.pk, step.name, exc.done)
                    raise
                last = StepRecord(step.name, result.outcome, result.detail, result.timeline,
                                  result.state, result.review)  # fmt: skip
                if result.state is not None:
                    state = result.state
        self._finishing.add(claim.pk)
        await self._store.complete(claim.pk, self.owner, last)

    async def _record_parts(self, pk: int, step: str, parts: Collection[str]) -> None:
        """Record the parts of a failed step that took effect, so its retry skips them."""
        detail = "took effect; the step retries the rest"
        for part in sorted(parts):
            name = f"{step}{PART_SEPARATOR}{part}"
            await self._store.record_step(pk, self.owner, name, "ok", detail, None)

    async def _run_step(
        self, step: Step, item: WorkItem, state: Mapping[str, Any], done: frozenset[str]
    ) -> StepResult:
        started = time.perf_counter()
        outcome = "error"
        try:
            ctx = StepContext(item=item, now=self._clock(), state=state, done=done)
            result = await step.run(ctx)
            outcome = result.outcome.split(":", 1)[0]
            return result
        finally:
            seconds = time.perf_counter() - started
            self.metrics.step_seconds.labels(outcome).observe(seconds)
            if self.metrics.steps is not None:  # by step and destination (observability.py)
                self.metrics.steps.observe(step.name, seconds, outcome == "error")

    async def _failed(self, claim: Claim, exc: Exception) -> None:
        failure = classify(exc)
        retry_at = None
        policy = self._policies(claim.source)
        if failure.retryable and not policy.exhausted(claim.attempts):
            delay = policy.delay(claim.attempts, failure.retry_after, self._rng)
            retry_at = self._clock() + timedelta(seconds=delay)
            self._due = retry_at if self._due is None else min(self._due, retry_at)
        self._finishing.add(claim.pk)
        try:
            status = await self._store.fail(
                claim.pk, self.owner, failure.error_class, failure.message, retry_at
            )
        except LeaseLost:
            self._lease_lost(claim)
            return
        except StorageError as err:
            # the lease runs out and the event is claimed again: the attempt is not lost
            _log.warning("worker.fail_unrecorded", **_ids(claim), error_class=type(err).__name__)
            return
        self.metrics.finished(claim.source, status)
        log = _log.warning if status == "dead" else _log.info
        log("worker.event_failed", **_ids(claim), status=status, error_class=failure.error_class)

    async def _deferred(self, claim: Claim, deferral: Deferred) -> None:
        """A step's planned wait: give the event back due at ``until``; not a failure."""
        until = deferral.until
        self._due = until if self._due is None else min(self._due, until)
        self._finishing.add(claim.pk)
        try:
            await self._store.defer(claim.pk, self.owner, until)
        except LeaseLost:
            self._lease_lost(claim)
            return
        except StorageError as err:
            _log.warning("worker.defer_unrecorded", **_ids(claim), error_class=type(err).__name__)
            return
        self.metrics.finished(claim.source, "deferred")
        _log.info("worker.event_deferred", **_ids(claim), until=until.isoformat())

    def _done(self, claim: Claim) -> None:
        latency = (self._clock() - claim.received_at).total_seconds()
        self.metrics.finished(claim.source, "done", latency)
        _log.debug("worker.event_done", **_ids(claim), duration_ms=round(latency * 1000, 1))

    def _lease_lost(self, claim: Claim) -> None:
        self.metrics.finished(claim.source, "lease_lost")
        _log.warning("worker.lease_lost", **_ids(claim))

    # -- shutdown ----------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Let events in flight finish within the grace period; release the others."""
        tasks = [task for _, task in self._inflight.values()]
        if tasks:
            _log.info("worker.stopping", count=len(tasks))
            await asyncio.wait(tasks, timeout=self._grace)
        unfinished = [c for c, t in self._inflight.values() if not t.done()]
        await _cancel([task for _, task in self._inflight.values()])
        for claim in unfinished:
            if claim.pk not in self._lost:
                await self._release(claim)

    async def _release(self, claim: Claim) -> None:
        try:
            await self._store.release(claim.pk, self.owner)
        except StorageError as exc:  # LeaseLost included: someone else has it, nothing to give
            _log.warning("worker.release_failed", **_ids(claim), error_class=type(exc).__name__)
            return
        self.metrics.finished(claim.source, "released")
        _log.info("worker.event_released", **_ids(claim))


def parts_of(finished: Collection[str], step: str) -> frozenset[str]:
    """The recorded parts of ``step`` among the event's finished step names."""
    prefix = f"{step}{PART_SEPARATOR}"
    return frozenset(name[len(prefix):] for name in finished if name.startswith(prefix))


def _ids(claim: Claim) -> dict[str, Any]:
    """The log fields that identify an attempt (ids and names only)."""
    return {"event_pk": claim.pk, "source": claim.source, "type": claim.type,
            "attempt": claim.attempts}  # fmt: skip


async def _wait(event: asyncio.Event, seconds: float | None) -> None:
    """Wait for ``event`` at most ``seconds`` (``asyncio.timeout``: unlike
    ``wait_for`` on 3.11, it never swallows a cancellation that meets the event being set)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def _raise_if_failed(helpers: Sequence[asyncio.Task[None]]) -> None:
    """Re-raise the error of a helper that crashed: without its heartbeat or listener the
    worker must not go on quietly (its supervisor logs the crash and restarts it)."""
    for helper in helpers:
        if helper.done() and not helper.cancelled() and helper.exception() is not None:
            raise cast(BaseException, helper.exception())


def _raise_if_cancelling() -> None:
    """Honour a cancellation that a callee swallowed (``asyncio.wait_for`` can, on 3.11)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _cancel(tasks: Sequence[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
