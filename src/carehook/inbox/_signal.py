"""An in-process "there may be work" signal that any thread may raise and any loop may await.

The stores raise it after a commit that can make an event claimable (a new handled event, a
replay, a release, a retry scheduled, a subject unblocked); workers await it in
``wait_for_work``. A waiter's loop is remembered on its first ``register``/``wait``, and a raise
sets that loop's :class:`asyncio.Event` (directly on the loop's own thread, else through
``call_soon_threadsafe``). The event stays set until the loop's next ``wait`` consumes it, so a
raise that happens while the worker is busy claiming is not lost: at worst a wait returns at
once and the claim finds nothing (a spurious wake, never a missed one).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class _Waiter:
    """One loop's flag: ``pending`` is True from a raise until the loop consumes it."""

    __slots__ = ("event", "loop", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()
        self.pending = False


class WorkSignal:
    """A thread-safe, loop-safe wake-up for ``wait_for_work``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[asyncio.AbstractEventLoop, _Waiter] = {}

    def register(self) -> None:
        """Listen on the running loop from now on (call before checking for work)."""
        self._waiter()

    def _waiter(self) -> _Waiter:
        loop = asyncio.get_running_loop()
        with self._lock:
            waiter = self._waiters.get(loop)
            if waiter is None:
                waiter = self._waiters[loop] = _Waiter(loop)
            return waiter

    def notify(self) -> None:
        """Wake every registered loop (from any thread, loop or none)."""
        if not self._waiters:  # nobody listens (an ingress-only process): stay off the hot path
            return
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        with self._lock:
            waiters = list(self._waiters.values())
        for w in waiters:
            if w.pending:  # already raised and not consumed yet: nothing to add
                continue
            w.pending = True
            if w.loop is here:
                w.event.set()
            elif w.loop.is_closed():
                with self._lock:
                    self._waiters.pop(w.loop, None)
            else:
                with contextlib.suppress(RuntimeError):  # closed between the check and now
                    w.loop.call_soon_threadsafe(w.event.set)

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 (a poll interval)
        """Return once a raise since the last wait on this loop is seen, or after ``timeout``."""
        w = self._waiter()
        if not w.event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(w.event.wait(), max(timeout, 0.0))
        w.event.clear()
        w.pending = False
