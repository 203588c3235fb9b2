"""Supervision of the background tasks a process runs (the worker, the purge timer).

A task that raises, or returns before it was told to stop, is logged at once (its name and the
error's class, never its message), counted, marked down, and started again after a back-off that
doubles from ``base_seconds`` up to ``cap_seconds`` (reset once a run lasted ``stable_seconds``).
While a task is down, :meth:`Supervisor.down` names it, and ``/readyz`` answers 503.

    carehook_background_crashes_total{task}   crashes (and early returns) of each task
    carehook_background_up{task}              1 while the task runs, 0 while it waits to restart
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from carehook.observability import get_logger

_log = get_logger("carehook.supervisor")

#: a task run beside the gateway until its stop event is set
TaskFn = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class BackgroundTask:
    """A named background task."""

    name: str
    run: TaskFn


class Supervisor:
    """Runs background tasks until stopped, restarting each one that crashes."""

    def __init__(
        self,
        tasks: Sequence[BackgroundTask],
        registry: CollectorRegistry | None = None,
        *,
        base_seconds: float = 0.5,
        cap_seconds: float = 30.0,
        stable_seconds: float = 60.0,
    ) -> None:
        reg = CollectorRegistry() if registry is None else registry
        self.tasks = tuple(tasks)
        self._base = base_seconds
        self._cap = cap_seconds
        self._stable = stable_seconds
        self._down: set[str] = set()
        self.crashes = Counter("carehook_background_crashes", "Crashes of each background task",
                               ["task"], registry=reg)  # fmt: skip
        self.up = Gauge("carehook_background_up", "1 while a background task runs, else 0",
                        ["task"], registry=reg)  # fmt: skip
        for task in self.tasks:
            self.crashes.labels(task.name)
            self.up.labels(task.name).set(0)

    def down(self) -> frozenset[str]:
        """The tasks waiting to be restarted after a crash."""
        return frozenset(self._down)

    async def run(self, stop: asyncio.Event) -> None:
        """Run every task, restarting crashed ones, until ``stop`` is set and all returned."""
        async with asyncio.TaskGroup() as group:
            for task in self.tasks:
                group.create_task(self._keep(task, stop), name=f"carehook-{task.name}")

    async def _keep(self, task: BackgroundTask, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            self._mark(task.name, up=True)
            try:
                await task.run(stop)
            except Exception as exc:  # a crash: keep the process serving, restart the task
                self._crashed(task.name, "background.crashed", type(exc).__name__)
            else:
                if stop.is_set():
                    break
                self._crashed(task.name, "background.exited", "none")
            failures = 1 if time.monotonic() - started >= self._stable else failures + 1
            await _wait(stop, restart_delay(failures, self._base, self._cap))
        self._mark(task.name, up=False)
        self._down.discard(task.name)

    def _crashed(self, name: str, what: str, error_class: str) -> None:
        self.crashes.labels(name).inc()
        self._mark(name, up=False)
        self._down.add(name)
        _log.error(what, task=name, error_class=error_class)

    def _mark(self, name: str, *, up: bool) -> None:
        self.up.labels(name).set(1 if up else 0)
        if up:
            self._down.discard(name)


def restart_delay(failures: int, base: float, cap: float) -> float:
    """The wait before restarting a task that failed ``failures`` times in a row (from 1)."""
    return float(min(cap, base * 2 ** max(failures - 1, 0)))


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
