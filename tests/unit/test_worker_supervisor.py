"""The supervisor of background tasks: back-off, early returns, prompt stop, worker helpers."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from carehook.crypto import KeyRing
from carehook.inbox.store import SqlStore
from carehook.testing import temp_store
from carehook.worker.engine import Worker
from carehook.worker.policy import RetryPolicy
from carehook.worker.supervisor import BackgroundTask, Supervisor, restart_delay
from carehook.workflows import default_router


@pytest.mark.parametrize(
    ("failures", "expected"), [(1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (50, 30.0)]
)
def test_the_restart_back_off_doubles_from_base_up_to_cap(failures: int, expected: float) -> None:
    """0.5, 1, 2 ... seconds, never above the cap."""
    assert restart_delay(failures, 0.5, 30.0) == expected


async def test_a_task_that_returns_before_stop_is_counted_and_restarted() -> None:
    """Returning early is a crash too: counted, restarted; a stop ends the supervisor."""
    runs = 0
    stop = asyncio.Event()

    async def early(_: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            stop.set()

    registry = CollectorRegistry()
    supervisor = Supervisor([BackgroundTask("purge", early)], registry, base_seconds=0.01)
    await asyncio.wait_for(supervisor.run(stop), 5)
    assert runs == 3
    assert registry.get_sample_value("carehook_background_crashes_total", {"task": "purge"}) == 2
    assert supervisor.down() == frozenset()


async def test_a_stop_during_the_back_off_ends_the_wait_at_once() -> None:
    """A task waiting 30 s to restart does not hold up shutdown."""
    stop = asyncio.Event()

    crashed = asyncio.Event()

    async def crash(_: asyncio.Event) -> None:
        crashed.set()
        raise ValueError

    supervisor = Supervisor([BackgroundTask("worker", crash)], base_seconds=30, cap_seconds=30)
    runner = asyncio.create_task(supervisor.run(stop))
    await crashed.wait()
    await asyncio.sleep(0)  # let the supervisor see the crash
    assert supervisor.down() == {"worker"}
    stop.set()
    await asyncio.wait_for(runner, 2)


async def _broken_wait(timeout: float) -> None:  # noqa: ASYNC109 (the port's signature)
    """A wake-up wait that fails with a bug (not a storage error)."""
    raise LookupError("planted")


async def test_a_crashed_worker_helper_fails_the_worker_so_it_is_restarted(
    keyring: KeyRing,
) -> None:
    """The listener dies of a bug: Worker.run raises it at once instead of running on without
    it, and the supervisor counts the crash."""
    async with temp_store(keyring) as store:
        store.wait_for_work = _broken_wait  # type: ignore[method-assign]
        await _worker_helper_crash(store)


async def _worker_helper_crash(store: SqlStore) -> None:
    stop = asyncio.Event()
    worker = Worker(store, default_router(), lambda _s: RetryPolicy(), poll_seconds=30)
    with pytest.raises(LookupError):
        await asyncio.wait_for(worker.run(stop), 5)
    registry = CollectorRegistry()
    runs = 0

    async def run(stop_: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            stop.set()
        await Worker(store, default_router(), lambda _s: RetryPolicy(), poll_seconds=30).run(stop_)

    supervisor = Supervisor([BackgroundTask("worker", run)], registry, base_seconds=0.01)
    await asyncio.wait_for(supervisor.run(stop), 5)
    assert registry.get_sample_value("carehook_background_crashes_total", {"task": "worker"}) == 1
