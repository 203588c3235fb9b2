"""Admin surface benchmark: the hot-path metrics cost, and admin reads over a large inbox.

1. ``Metrics.observe_request`` per call (the ingress calls it once per delivery), accepted and
   rejected with a cause, in ns.
2. A SQLite inbox with N events and N request-log rows (stored through ``accept``): the time of
   the operator reads the dashboard's overview and lists make (``overview``, a first page and a
   deep cursor page of events, dead letters, sources) and of one store-gauge refresh (the
   ``/metrics`` scrape's store cost), median of R runs each.

Prints figures; asserts nothing.

    .venv/bin/python bench/admin.py [--events 100000] [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from carehook.crypto import new_key_spec, parse_key_spec
from carehook.envelope import Envelope, RequestRecord
from carehook.inbox.reads import EventQuery
from carehook.inbox.sqlite import SqliteInbox
from carehook.observability import Metrics, StoreGauges
from carehook.operations import Operations, SourceConfig


def bench_metrics(calls: int = 200_000) -> None:
    """ns per observe_request call."""
    metrics = Metrics.create()
    for outcome, cause in (("accepted", ""), ("rejected", "signature:bad_signature")):
        started = time.perf_counter()
        for _ in range(calls):
            metrics.observe_request("abridge", outcome, 0.001, cause)
        ns = (time.perf_counter() - started) / calls * 1e9
        print(f"observe_request ({outcome:8}): {ns:7.0f} ns/call")


async def _fill(store: SqliteInbox, n: int) -> None:
    now = datetime.now(UTC) - timedelta(minutes=30)
    batch = []
    for i in range(n):
        env = Envelope(source=("abridge", "healthie")[i % 2], vendor="abridge", event_id=f"e{i}",
                       type="encounter.session.completed", subject=f"abridge:session:{i % 5000}",
                       occurred_at=None, received_at=now + timedelta(milliseconds=i),
                       payload=b'{"x": 1}', secret_index=i % 2, handled=True)  # fmt: skip
        rec = RequestRecord(env.source, env.received_at, "127.0.0.1", 8, 200, "accepted")
        batch.append(store.accept(env, rec))
        if len(batch) == 500:
            await asyncio.gather(*batch)
            batch = []
    await asyncio.gather(*batch)


async def _median(fn: Callable[[], Awaitable[Any]], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def bench_reads(n: int, runs: int) -> None:
    """Median ms of each operator read over an inbox of ``n`` events."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteInbox(f"sqlite:///{Path(tmp) / 'c.db'}", parse_key_spec(new_key_spec("b")))
        await store.open()
        try:
            started = time.perf_counter()
            await _fill(store, n)
            print(f"filled {n} events in {time.perf_counter() - started:.1f} s")
            ops = Operations(store, [SourceConfig("abridge", "abridge", "/webhooks/abridge", 2)])
            deep = n // 2
            gauges = StoreGauges.create(Metrics.create().registry, interval=0)
            cases: dict[str, Callable[[], Awaitable[Any]]] = {
                "overview": ops.overview,
                "events, first page of 50": lambda: ops.events(EventQuery(limit=50)),
                f"events, page at cursor {deep}": lambda: ops.events(EventQuery(before=deep)),
                "events of one subject": lambda: ops.events(EventQuery(subject="abridge:session:7")),  # noqa: E501
                "dead letters (none)": ops.dead_letters,
                "sources": ops.source_statuses,
                "store gauges refresh": lambda: gauges.refresh(store),
            }
            for name, fn in cases.items():
                print(f"{name:32}: {await _median(fn, runs):8.2f} ms (median of {runs})")
        finally:
            await store.close()


def main() -> None:
    """Run both parts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    bench_metrics()
    asyncio.run(bench_reads(args.events, args.runs))


if __name__ == "__main__":
    main()
