"""Retention: drop payloads past each source's ``retention_days``, old dedup keys and request-log
rows past their ``request_retention_days``, on a timer.

PHI minimisation: a payload is kept only as long as its source's retention says; the event's
metadata (ids, type, subject, status, steps, attempts) stays, so the history remains readable
and a late duplicate is still recognised until the dedup window (``worker.dedup_days``) passes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime

from carehook.errors import StorageError
from carehook.inbox.port import Store
from carehook.inbox.work import PurgeCounts
from carehook.observability import get_logger

_log = get_logger("carehook.purge")


class Purger:
    """Runs ``Store.purge`` with each source's retention, once or every ``interval``."""

    def __init__(
        self,
        store: Store,
        retention_days: Mapping[str, int],
        *,
        default_retention_days: int,
        dedup_days: int,
        interval_seconds: float,
        clock: Callable[[], datetime],
        request_retention_days: Mapping[str, int] | None = None,
        default_request_retention_days: int | None = None,
    ) -> None:
        self._store = store
        self._retention = dict(retention_days)
        self._default = default_retention_days
        self._dedup_days = dedup_days
        self._interval = interval_seconds
        self._clock = clock
        self._requests = dict(request_retention_days or {})
        self._default_requests = default_request_retention_days

    async def once(self) -> PurgeCounts:
        """Purge now; returns what went."""
        counts = await self._store.purge(
            self._clock(), self._retention, self._default, self._dedup_days,
            self._requests or None, self._default_requests,
        )  # fmt: skip
        _log.info("purge.done", count=counts.payloads + counts.dedup_keys,
                  requests=counts.requests, sessions=counts.sessions)  # fmt: skip
        return counts

    async def run(self, stop: asyncio.Event) -> None:
        """Purge at start and then every ``interval`` until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.once()
            except StorageError as exc:  # try again next time; the data is only kept longer
                _log.warning("purge.failed", error_class=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await stop.wait()
