"""Worker benchmark: events/s with no-op steps, and receive-to-done latency at a fixed rate.

1. Throughput: N events are stored directly through the store's ``accept`` (spread over many
   subjects), then worker processes (1 on SQLite; 1 and 2 on PostgreSQL) run a workflow of one
   no-op step (``--workflow record``: one step with a timeline entry) until every event is
   done. events/s = N / (last attempt finished - first started), read from the attempts table,
   so process start-up is not counted.
2. Claim cost against the backlog: with 1,000 and with 100,000 events waiting, the median time
   of a claim of 16 events (SQLite and PostgreSQL).
3. Latency: ``carehook serve`` (SQLite, in-process worker, the default record step) receives
   pre-signed Abridge events at a fixed arrival rate (open loop); receive-to-done per event is
   the done attempt's finish time minus the event's receipt time, from the database.

Prints the figures next to the goals of the worker issue. Not a test: it asserts nothing.

    .venv/bin/python bench/worker.py [--events 20000] [--rate 500] [--seconds 10]
                                     [--pg postgresql://postgres@127.0.0.1:5432/postgres]
                                     [--skip throughput,claim,latency]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import multiprocessing
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg

from carehook.crypto import new_key_spec, parse_key_spec
from carehook.envelope import Envelope, RequestRecord
from carehook.inbox import migrate, open_store
from carehook.inbox.store import SqlStore
from carehook.observability import configure_logging
from carehook.worker.engine import Worker
from carehook.worker.policy import RetryPolicy
from carehook.workflows import Router, Step, StepContext, StepResult, TimelineEntry, Workflow

BIN = Path(sys.executable).parent
T = TypeVar("T")
GOALS = {
    "sqlite": ">= 3,000 events/s",
    "pg_one": ">= 1,000 events/s",
    "pg_scaling": ">= 1.5x from 1 to 2 PostgreSQL worker processes",
    "claim": "claim time with 100,000 waiting within 2x of with 1,000 waiting",
    "latency": "receive-to-done p99 <= 250 ms at 500 events/s",
}


# -- throughput ---------------------------------------------------------------------------------


async def _noop(_: StepContext) -> StepResult:
    return StepResult()


async def _record(ctx: StepContext) -> StepResult:
    return StepResult(timeline=TimelineEntry(ctx.item.subject, "recorded", "bench"))


NOOP = Router({}, fallback=Workflow("noop", (Step("noop", _noop),)))
#: one step with a timeline entry, as most real workflows end (the step, its timeline row and
#: the subject's state commit with the completion)
RECORD = Router({}, fallback=Workflow("record", (Step("record", _record),)))
WORKFLOWS = {"noop": NOOP, "record": RECORD}


def _worker_process(url: str, keys: str, concurrency: int, workflow: str = "noop") -> None:
    """One worker process: the no-op (or ``record``) workflow until SIGTERM."""

    configure_logging("warning", json=True)

    async def main() -> None:
        store: Any = open_store(url, parse_key_spec(keys), auto_migrate=False)
        await store.open()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            router = WORKFLOWS[workflow]
            await Worker(store, router, lambda _s: RetryPolicy(), concurrency=concurrency).run(stop)
        finally:
            await store.close()

    asyncio.run(main())


async def _preload(url: str, keys: str, n: int, subjects: int) -> None:
    store: Any = open_store(url, parse_key_spec(keys), auto_migrate=False)
    await store.open()
    now = datetime.now(UTC)
    try:
        for start in range(0, n, 500):
            batch = []
            for i in range(start, min(n, start + 500)):
                env = Envelope("abridge", "abridge", f"evt_{i}", "encounter.session.completed",
                               f"abridge:session:{i % subjects}", None, now,
                               b'{"data": {"status": "completed"}}', 0, True)
                batch.append(store.accept(env, RequestRecord("abridge", now, "127.0.0.1", 40, 200,
                                                             "accepted")))
            await asyncio.gather(*batch)
    finally:
        await store.close()


def _throughput(url: str, query: Callable[[str], Any], n: int, processes: int,
                concurrency: int, workflow: str = "noop") -> float:
    keys = new_key_spec("bench")
    asyncio.run(_preload(url, keys, n, subjects=max(n // 10, 1)))
    _analyze(url)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_process, args=(url, keys, concurrency, workflow))
             for _ in range(processes)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 600
    while query("SELECT count(*) FROM events WHERE status = 'done'")[0] < n:
        if time.monotonic() > deadline:
            raise SystemExit("the workers did not finish in 10 minutes")
        time.sleep(0.2)
    for p in procs:
        os.kill(p.pid or 0, signal.SIGTERM)
        p.join(timeout=30)
    first, last = query("SELECT min(started_at), max(finished_at) FROM attempts")
    return n / (_ts(last) - _ts(first)).total_seconds()


def _analyze(url: str) -> None:
    """Bring the database to the steady state of a running deployment after the bulk preload:
    PostgreSQL's statistics as autovacuum would gather them (a fresh table's estimates would
    plan the claim for an empty table), SQLite's WAL checkpointed (the preload's debt)."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")


def _ts(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _sqlite_query(path: Path) -> Callable[[str], Any]:
    def query(sql: str) -> Any:
        with sqlite3.connect(path, timeout=30) as conn:
            return conn.execute(sql).fetchone()

    return query


def sqlite_throughput(work: Path, n: int, concurrency: int, workflow: str = "noop") -> float:
    """events/s of one worker process on a fresh SQLite file."""
    path = work / f"tp-{uuid.uuid4().hex[:6]}.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    return _throughput(url, _sqlite_query(path), n, 1, concurrency, workflow)


def pg_throughput(admin_url: str, n: int, processes: int, concurrency: int,
                  workflow: str = "noop") -> float:
    """events/s of ``processes`` worker processes on a fresh PostgreSQL database."""
    return _with_pg_database(
        admin_url, lambda url, query: _throughput(url, query, n, processes, concurrency, workflow)
    )


# -- claim cost against the backlog ------------------------------------------------------------


def claim_cost(url: str, waiting: int, claims: int = 30, batch: int = 16) -> tuple[float, float]:
    """Median ms of a claim of ``batch`` events with ``waiting`` events waiting: end to end
    (with the commit's fsync) and inside the transaction (the statements alone)."""
    keys = new_key_spec("bench")
    asyncio.run(_preload(url, keys, waiting, subjects=waiting))
    _analyze(url)
    inside: list[float] = []
    claim_tx = SqlStore._claim_tx

    def timed(self: SqlStore, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return claim_tx(self, *args)
        finally:
            inside.append((time.perf_counter() - started) * 1000)

    async def measure() -> float:
        store: Any = open_store(url, parse_key_spec(keys), auto_migrate=False)
        await store.open()
        try:
            times = []
            for _ in range(claims):
                started = time.perf_counter()
                got = await store.claim("bench:1:x", batch, 300.0)
                times.append((time.perf_counter() - started) * 1000)
                assert len(got) == batch
            return statistics.median(times)
        finally:
            await store.close()

    SqlStore._claim_tx = timed  # type: ignore[method-assign]
    try:
        return asyncio.run(measure()), statistics.median(inside)
    finally:
        SqlStore._claim_tx = claim_tx  # type: ignore[method-assign]


def sqlite_claim_cost(work: Path, waiting: int) -> tuple[float, float]:
    """:func:`claim_cost` on a fresh SQLite file."""
    url = f"sqlite:///{work / f'claim-{uuid.uuid4().hex[:6]}.db'}"
    migrate.upgrade(url)
    return claim_cost(url, waiting)


def pg_claim_cost(admin_url: str, waiting: int) -> tuple[float, float]:
    """:func:`claim_cost` on a fresh PostgreSQL database."""
    return _with_pg_database(admin_url, lambda url, _query: claim_cost(url, waiting))


def _with_pg_database(admin_url: str, run: Callable[[str, Callable[[str], Any]], T]) -> T:
    name = f"carehook_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        migrate.upgrade(url)

        def query(sql: str) -> Any:
            with psycopg.connect(url) as conn:
                return conn.execute(sql).fetchone()

        return run(url, query)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- latency at a fixed arrival rate ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _signed(secret: str, n: int, run: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({
        "event_id": f"evt_{run}_{n}", "type": "encounter.session.completed",
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": {"session_id": f"ses_{n % 500}", "status": "completed"},
    }, separators=(",", ":")).encode()  # fmt: skip
    ts = str(int(time.time()))
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    headers = {"content-type": "application/json", "x-abridge-signature": sig,
               "x-abridge-timestamp": ts}
    return body, headers


async def _open_loop(url: str, requests: list[tuple[bytes, dict[str, str]]], rate: float) -> int:
    """Send each request at its scheduled time (not when the previous answered)."""
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    failures = 0
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def one(body: bytes, headers: dict[str, str], at: float) -> None:
            nonlocal failures
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            try:
                response = await client.post(url, content=body, headers=headers)
                failures += response.status_code != 200
            except httpx.HTTPError:
                failures += 1

        start = time.monotonic() + 0.5
        await asyncio.gather(*(one(b, h, start + i / rate) for i, (b, h) in enumerate(requests)))
    return failures


def serve_latency(work: Path, rate: float, seconds: float) -> tuple[float, float, int, int]:
    """p50 and p99 receive-to-done (ms), events and failed sends through `carehook serve`."""
    folder = work / f"serve-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    secret = "bench-" + os.urandom(8).hex()
    (folder / "carehook.toml").write_text(
        f'data_dir = "."\nlog_level = "warning"\n[sources.abridge]\nvendor = "abridge"\n'
        f'secrets = ["{secret}"]\n')
    port = _free_port()
    proc = subprocess.Popen([str(BIN / "carehook"), "serve", "--config",
                             str(folder / "carehook.toml"), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/webhooks/abridge"
    try:
        _wait_up(port)
        run = os.urandom(4).hex()
        warm = [_signed(secret, i, "warm" + run) for i in range(200)]
        asyncio.run(_open_loop(url, warm, rate))
        requests = [_signed(secret, i, run) for i in range(int(rate * seconds))]
        failures = asyncio.run(_open_loop(url, requests, rate))
        query = _sqlite_query(folder / "carehook.db")
        total = len(warm) + len(requests)
        while query("SELECT count(*) FROM events WHERE status = 'done'")[0] < total - failures:
            time.sleep(0.2)
        with sqlite3.connect(folder / "carehook.db") as conn:
            rows = conn.execute(
                "SELECT e.received_at, a.finished_at FROM events e JOIN attempts a"
                " ON a.event_pk = e.id AND a.outcome = 'done' WHERE e.event_id LIKE ?",
                (f"evt_{run}_%",)).fetchall()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    latencies = sorted((_ts(f) - _ts(r)).total_seconds() * 1000 for r, f in rows)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return statistics.median(latencies), p99, len(latencies), failures


def _wait_up(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("carehook serve did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20000, help="events per throughput run")
    parser.add_argument("--concurrency", type=int, default=32, help="per worker process")
    parser.add_argument("--rate", type=float, default=500.0, help="arrivals/s for the latency run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="an admin URL of the PostgreSQL server ('' to skip)")
    parser.add_argument("--skip", default="", help="comma-separated: throughput,claim,latency")
    parser.add_argument("--workflow", default="noop", choices=sorted(WORKFLOWS),
                        help="the throughput runs' workflow: one no-op step, or one step with a"
                        " timeline entry (its row and the subject's state commit with it)")
    args = parser.parse_args()
    configure_logging("warning", json=True)
    work = Path(tempfile.mkdtemp(prefix="carehook-bench-worker-"))
    print(f"worker benchmark: {args.events} events, concurrency {args.concurrency} per process, "
          f"workflow {args.workflow}, {os.cpu_count()} cores", flush=True)
    skip = set(args.skip.split(",")) if args.skip else set()
    if "throughput" not in skip:
        _throughputs(work, args)
    if "claim" not in skip:
        _claim_costs(work, args.pg)
    if "latency" not in skip:
        p50, p99, count, failures = serve_latency(work, args.rate, args.seconds)
        print(f"serve (SQLite) at {args.rate:.0f}/s for {args.seconds:.0f} s: {count} events, "
              f"receive-to-done p50 {p50:.1f} ms  p99 {p99:.1f} ms   goal {GOALS['latency']}"
              + (f"   ({failures} sends failed)" if failures else ""), flush=True)


def _throughputs(work: Path, args: argparse.Namespace) -> None:
    sqlite = sqlite_throughput(work, args.events, args.concurrency, args.workflow)
    print(f"SQLite, 1 worker process     {sqlite:>8.0f} events/s   goal {GOALS['sqlite']}",
          flush=True)
    if args.pg:
        one = pg_throughput(args.pg, args.events, 1, args.concurrency, args.workflow)
        print(f"PostgreSQL, 1 worker process {one:>8.0f} events/s   goal {GOALS['pg_one']}",
              flush=True)
        two = pg_throughput(args.pg, args.events, 2, args.concurrency, args.workflow)
        print(f"PostgreSQL, 2 worker procs   {two:>8.0f} events/s   = {two / one:.2f}x   "
              f"goal {GOALS['pg_scaling']}", flush=True)


def _claim_costs(work: Path, pg: str) -> None:
    runs: list[tuple[str, Callable[[int], tuple[float, float]]]] = [
        ("SQLite", lambda n: sqlite_claim_cost(work, n))]
    if pg:
        runs.append(("PostgreSQL", lambda n: pg_claim_cost(pg, n)))
    for name, cost in runs:
        (small, small_in), (large, large_in) = cost(1_000), cost(100_000)
        print(f"{name} claim of 16, end to end: {small:.2f} ms with 1,000 waiting, {large:.2f} ms"
              f" with 100,000 = {large / small:.2f}x; inside the transaction: {small_in:.2f} ms,"
              f" {large_in:.2f} ms = {large_in / small_in:.2f}x   goal {GOALS['claim']}",
              flush=True)

if __name__ == "__main__":
    main()
