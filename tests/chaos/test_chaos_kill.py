"""Chaos: kill -9 of `serve` and `worker` processes at random moments under load, on SQLite (one
serve with its in-process worker) and on PostgreSQL (two serve + two workers). Every acknowledged
event is stored once and done, and the FHIR server (the sandbox, the receiving fake) holds exactly
one DocumentReference per note: no side effect doubled."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from carehook.sandbox.app import Sandbox, build_sandbox
from loopback import free_port, serve_app

from .support_front import (
    CAREHOOK,
    Proc,
    Vendor,
    abridge_source,
    env,
    figures,
    sandbox_toml,
    scale,
    start,
    start_serve,
    wait_until,
    write_config,
)

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
TERMINAL = ("done", "dead", "unhandled")
#: fewer kills than this prove nothing (``_check``); the chaos goes on until it has made them
MIN_KILLS = 2


@pytest.fixture
def sandbox() -> Iterator[tuple[Sandbox, str]]:
    """The sandbox (fake Abridge API + FHIR server) on loopback, in this process."""
    box = build_sandbox()
    with serve_app(box.app) as url:
        yield box, url


async def _chaos(procs: list[Proc], restart: Callable[[int], Awaitable[Proc]],
                 stop: asyncio.Event, rng: random.Random, kills: Counter[str],
                 probe: Callable[[], int]) -> None:  # fmt: skip
    """Until ``stop`` and at least ``MIN_KILLS`` kills: wait a random moment, kill -9 a process,
    restart it (the victims go round in a random order, so every process is killed once before
    any is killed twice). A fast machine can send everything before the second kill; the kills
    still owed then land on the workers' part of the run."""
    victims: list[int] = []
    while not stop.is_set() or kills["serve"] + kills["worker"] < MIN_KILLS:
        pause = rng.uniform(0.3, 2.0)
        if stop.is_set():
            await asyncio.sleep(pause)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
        victims = victims or _round(procs, rng)
        i = victims.pop()
        kills["unfinished_events_at_kills"] += probe()
        procs[i].kill()
        kills[procs[i].args[0]] += 1
        procs[i] = await restart(i)


def _round(procs: list[Proc], rng: random.Random) -> list[int]:
    """One round of victims (popped from the end): every process once, in a random order whose
    kinds alternate (serve, worker, serve ...), so that a short run still kills every kind."""
    kinds: dict[str, list[int]] = {}
    for i in rng.sample(range(len(procs)), len(procs)):
        kinds.setdefault(procs[i].args[0], []).append(i)
    order = [i for group in itertools.zip_longest(*kinds.values()) for i in group if i is not None]
    return order[::-1]


async def _run(vendor: Vendor, count: int, procs: list[Proc],
               restart: Callable[[int], Awaitable[Proc]], seed: int,
               probe: Callable[[], int]) -> Counter[str]:  # fmt: skip
    stop = asyncio.Event()
    kills: Counter[str] = Counter()

    async def send() -> None:
        try:
            await vendor.send_all(count)
        finally:
            stop.set()

    await asyncio.gather(send(), _chaos(procs, restart, stop, random.Random(seed), kills, probe))
    return kills


def _check(name: str, vendor: Vendor, count: int, events: list[tuple[Any, ...]],
           box: Sandbox, kills: Counter[str]) -> None:  # fmt: skip
    """Every acknowledged event stored once and done; one DocumentReference per note."""
    ids = Counter(e[0] for e in events)
    docs = box.fhir.resources("DocumentReference")
    notes = Counter(d["identifier"][0]["value"] for d in docs)
    statuses = Counter(e[1] for e in events)
    figures(name, sent=count, attempts=vendor.attempts, acknowledged=len(vendor.acked),
            stored=len(events), terminal=sum(statuses[s] for s in TERMINAL),
            duplicates=sum(n - 1 for n in ids.values()) + sum(n - 1 for n in notes.values()),
            **{"5xx": vendor.server_errors}, fhir_documents=len(docs), kills=dict(kills),
            statuses=dict(statuses))  # fmt: skip
    assert vendor.refused == []
    assert len(vendor.acked) == count
    assert set(ids) == vendor.acked
    assert set(ids.values()) == {1}
    assert statuses == Counter({"done": count})
    assert len(docs) == count, "a FHIR write was lost or doubled"
    assert set(notes.values()) == {1}, "a FHIR write was doubled"
    assert kills["serve"] + kills["worker"] >= MIN_KILLS, "the chaos killed too little"
    assert kills["unfinished_events_at_kills"], "no kill caught work in flight: it proved nothing"


def _sqlite_events(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute("SELECT event_id, status FROM events").fetchall()


async def test_kill_9_of_serve_on_sqlite(tmp_path: Path, sandbox: tuple[Sandbox, str]) -> None:
    """SQLite, one serve with its worker, killed -9 at random moments and restarted."""
    box, base = sandbox
    config = _config(tmp_path, None, base)
    port = free_port()
    count = scale(200, 5000)
    vendor = Vendor(abridge_source(config), [f"http://127.0.0.1:{port}/webhooks/abridge"],
                    os.urandom(3).hex())  # fmt: skip
    procs = [await start_serve(tmp_path, config, port, "serve-0")]
    restarts = iter(range(1, 1000))

    async def restart(_: int) -> Proc:
        return await start_serve(tmp_path, config, port, f"serve-{next(restarts)}")

    try:
        db = tmp_path / "carehook.db"
        kills = await _run(vendor, count, procs, restart, seed=13,
                           probe=lambda: _unfinished(_sqlite_events(db)))  # fmt: skip
        await wait_until(lambda: _terminal(_sqlite_events(db)) >= count, "every event terminal",
                         scale(180, 900))  # fmt: skip
    finally:
        for proc in procs:
            proc.stop()
    _check("kill-sqlite", vendor, count, _sqlite_events(db), box, kills)


@pytest.mark.postgres
async def test_kill_9_of_serve_and_workers_on_postgresql(
    tmp_path: Path, sandbox: tuple[Sandbox, str], pg_empty_url: str
) -> None:
    """PostgreSQL, two serve (ingress only) + two workers, any of them killed -9 and restarted."""
    box, base = sandbox
    config = _config(tmp_path, pg_empty_url, base)
    upgrade = await asyncio.to_thread(
        subprocess.run, [CAREHOOK, "db", "upgrade", "--config", str(config)], cwd=tmp_path,
        env=env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr
    ports = [free_port(), free_port()]
    count = scale(200, 5000)
    vendor = Vendor(abridge_source(config),
                    [f"http://127.0.0.1:{p}/webhooks/abridge" for p in ports],
                    os.urandom(3).hex())  # fmt: skip
    serial = iter(range(1000))

    async def launch(i: int) -> Proc:
        n = next(serial)
        if i < 2:
            return await start_serve(tmp_path, config, ports[i], f"serve-{i}-{n}", "--no-worker")
        return start(tmp_path, "worker", "--config", str(config), name=f"worker-{i}-{n}")

    procs = [await launch(i) for i in range(4)]

    def events() -> list[tuple[Any, ...]]:
        with psycopg.connect(pg_empty_url) as conn:
            return conn.execute("SELECT event_id, status FROM events").fetchall()

    try:
        kills = await _run(vendor, count, procs, launch, seed=31,
                           probe=lambda: _unfinished(events()))  # fmt: skip
        await wait_until(lambda: _terminal(events()) >= count, "every event terminal",
                         scale(180, 900))  # fmt: skip
    finally:
        for proc in procs:
            proc.stop()
    _check("kill-postgresql", vendor, count, events(), box, kills)
    assert kills["serve"], kills
    assert kills["worker"], kills


def _unfinished(events: list[tuple[Any, ...]]) -> int:
    return sum(1 for e in events if e[1] not in TERMINAL)


def _terminal(events: list[tuple[Any, ...]]) -> int:
    return sum(1 for e in events if e[1] in TERMINAL)


def _config(folder: Path, storage_url: str | None, base: str) -> Path:
    return write_config(folder, storage_url, sandbox_toml(base))
