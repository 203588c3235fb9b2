"""Crash and scale, as in production: real `carehook serve` / `carehook worker` processes.

A vendor-like sender delivers signed events over HTTP with bounded concurrency and retries on
connection errors and 5xx until it gets a 200, exactly as Abridge would. The database is then
read directly. "No step ran twice" is counted through the one step every event runs
(``subject.record``): its timeline row commits in the same transaction as its step record, so
one timeline row per event means the step took effect exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from carehook.envelope import SignedRequest
from carehook.settings import load_settings
from carehook.sources import Source, build_source
from carehook.vendors import builtin_vendors

from .support import CAREHOOK, free_port

SECRET = "abridge-e2e-secret"
pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CAREHOOK_")}



def write_config(folder: Path, storage_url: str | None = None, log_level: str = "info") -> Path:
    """A config with one Abridge source; the worker tuned for a short test."""
    lines = ['data_dir = "."', f'log_level = "{log_level}"']
    if storage_url:
        lines += ["[storage]", f'url = "{storage_url}"']
    lines += ["[worker]", "concurrency = 8", "shutdown_grace_seconds = 5", "poll_seconds = 0.5",
              "[sources.abridge]", 'vendor = "abridge"', f'secrets = ["{SECRET}"]']
    path = folder / "carehook.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Proc:
    """A carehook process with its output in a file (a full pipe would stall it)."""

    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> bool:
        """SIGTERM, wait; True when the worker inside stopped gracefully (uvicorn re-raises
        SIGTERM after its shutdown, so serve's exit code is -15 either way: read the log)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        self.popen.wait(timeout=30)
        return '"worker.stopped"' in self.log.read_text()

    def kill(self) -> None:
        """kill -9."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=30)


def start(folder: Path, *args: str, name: str) -> Proc:
    """Start ``carehook <args>`` in ``folder``, its output going to ``<name>.log``."""
    log = folder / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen([CAREHOOK, *args], cwd=folder, env=_env(), stdout=out,
                                 stderr=subprocess.STDOUT)
    return Proc(popen, log)


async def start_serve(folder: Path, config: Path, port: int, name: str) -> Proc:
    """`carehook serve` on ``port``, once /healthz answers."""
    proc = start(folder, "serve", "--config", str(config), "--port", str(port), name=name)
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not start: {proc.log.read_text()[-2000:]}")
            await asyncio.sleep(0.1)


@dataclass
class Sender:
    """A vendor: signs each event, retries until a 200, remembers what was acknowledged."""

    source: Source
    urls: list[str]
    acked: set[str] = field(default_factory=set)
    #: set once this many events are acknowledged
    milestone: int = 0
    reached: asyncio.Event = field(default_factory=asyncio.Event)

    def delivery(self, n: int, subject: int) -> tuple[str, bytes, dict[str, str]]:
        """Event ``n`` of session ``subject``: its id, body and signed headers."""
        event_id = f"evt_e2e_{n:06d}"
        body = json.dumps({
            "event_id": event_id, "type": "encounter.session.completed",
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": {"session_id": f"ses_{subject:04d}", "status": "completed"},
        }).encode()  # fmt: skip
        headers = {"content-type": "application/json"}
        request = SignedRequest("POST", self.source.public_path, "", headers, body)
        headers.update(self.source.scheme.sign(request, self.source.secrets[0], time.time()))
        return event_id, body, headers

    async def send_all(self, count: int, subjects: int, concurrency: int = 32) -> None:
        """Deliver ``count`` events round-robin over ``subjects`` and over the gateways."""
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(count):
            queue.put_nowait(n)
        await asyncio.gather(*(self._lane(queue, subjects) for _ in range(concurrency)))

    async def _lane(self, queue: asyncio.Queue[int], subjects: int) -> None:
        # one client (one keep-alive connection) per lane: httpx's shared pool costs CPU that
        # grows with its size, and this machine has two cores to share with the gateways
        async with httpx.AsyncClient(timeout=10) as client:
            await self._send_from(client, queue, subjects)

    async def _send_from(
        self, client: httpx.AsyncClient, queue: asyncio.Queue[int], subjects: int
    ) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            event_id, body, headers = self.delivery(n, n % subjects)
            url = self.urls[n % len(self.urls)]
            deadline = time.monotonic() + 60
            while event_id not in self.acked:
                assert time.monotonic() < deadline, f"{event_id} was never acknowledged"
                try:
                    response = await client.post(url, content=body, headers=headers)
                except httpx.TransportError:  # the gateway is down: a vendor tries again
                    await asyncio.sleep(0.05)
                    continue
                if response.status_code == 200:
                    self.acked.add(event_id)
                    if len(self.acked) >= self.milestone:
                        self.reached.set()
                elif response.status_code >= 500:
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError(f"{event_id}: {response.status_code} {response.text}")


def sender_for(config: Path, urls: list[str]) -> Sender:
    """A sender signing with the config's Abridge source."""
    settings = load_settings(config)
    return Sender(build_source("abridge", settings.sources["abridge"], builtin_vendors()), urls)


async def wait_until(
    check: Callable[[], bool], what: str, seconds: float = 60, interval: float = 0.2
) -> None:
    """Poll ``check`` (a database read) until it holds."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


# -- (a) kill -9 of serve on SQLite --------------------------------------------------------------


UNFINISHED = "SELECT id FROM events WHERE status IN ('pending', 'processing', 'retrying')"


def _sqlite(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with _sqlite(db) as conn:
        return conn.execute(sql).fetchall()


async def test_kill_9_of_serve_loses_nothing_and_repeats_no_step(tmp_path: Path) -> None:
    """kill -9 of serve mid-delivery (2,000 events, 20 subjects), restart: every acknowledged
    event is stored once and done, each step took effect once, per-subject order held."""
    folder = tmp_path
    config = write_config(folder)
    db = folder / "carehook.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/abridge"
    procs = [await start_serve(folder, config, port, "serve-1")]
    sender = sender_for(config, [url])
    sender.milestone = 700
    unfinished_at_kill: list[int] = []

    async def crash_and_restart() -> None:
        await sender.reached.wait()
        for attempt in range(5):  # kill when work is in flight; if it all finished first, again
            await wait_until(lambda: bool(_rows(db, UNFINISHED)), "work in flight", interval=0.002)
            procs[-1].kill()
            unfinished_at_kill.extend(r[0] for r in _rows(db, UNFINISHED))
            procs.append(await start_serve(folder, config, port, f"serve-{attempt + 2}"))
            if unfinished_at_kill:
                return

    try:
        await asyncio.gather(sender.send_all(2000, 20), crash_and_restart())
        assert len(sender.acked) == 2000

        def all_done() -> bool:
            return _rows(db, "SELECT count(*) FROM events WHERE status = 'done'")[0][0] == 2000

        await wait_until(all_done, "every event to be done")
    finally:
        graceful = procs[-1].stop()
    assert graceful
    assert unfinished_at_kill, "no kill caught work in flight: the test proved nothing"
    _check_exactly_once(_rows(db, "SELECT id, event_id, subject, status FROM events"),
                        _rows(db, "SELECT event_pk, subject FROM timeline ORDER BY id"),
                        sender.acked)


async def test_serve_without_worker_and_a_worker_process_share_one_sqlite_file(
    tmp_path: Path,
) -> None:
    """`serve --no-worker` and `carehook worker` on one SQLite file (the worker on a core of
    its own): every delivery is acknowledged (no 503 from a busy file) and done once, in order
    per subject. The worker polls only every 120 s, so each burst, sent while it was idle, is
    claimed because it heard the other process's commits (the file's data_version), twice."""
    folder = tmp_path
    config = write_config(folder)
    config.write_text(config.read_text().replace("poll_seconds = 0.5", "poll_seconds = 120"))
    db = folder / "carehook.db"
    port = free_port()
    serve = start(folder, "serve", "--config", str(config), "--port", str(port), "--no-worker",
                  name="serve")  # fmt: skip
    procs = [serve]
    try:
        await wait_until(lambda: _listening(port), "serve to listen")
        procs.append(start(folder, "worker", "--config", str(config), name="worker"))
        await wait_until(lambda: '"worker.started"' in procs[1].log.read_text(), "the worker")
        sender = sender_for(config, [f"http://127.0.0.1:{port}/webhooks/abridge"])
        for total in (600, 1200):  # two bursts, the worker idle before each
            await asyncio.sleep(0.5)
            await sender.send_all(total, 20)
            await wait_until(
                lambda n=total: _rows(db, "SELECT count(*) FROM events WHERE status = 'done'")
                == [(n,)], f"{total} events done", seconds=60)  # fmt: skip
    finally:
        graceful = [p.stop() for p in procs]
    assert graceful[1]
    for word in ("webhook.unavailable", "webhook.error", "webhook.rejected"):
        assert word not in serve.log.read_text()
    assert stat.S_IMODE(os.stat(folder / "carehook.db-lock").st_mode) == 0o600
    _check_exactly_once(_rows(db, "SELECT id, event_id, subject, status FROM events"),
                        _rows(db, "SELECT event_pk, subject FROM timeline ORDER BY id"),
                        sender.acked)  # fmt: skip


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _check_exactly_once(
    events: list[tuple[Any, ...]], timeline: list[tuple[Any, ...]], acked: set[str],
    *, ordered: bool = True,
) -> None:
    """Each acknowledged event stored once and done, one timeline row each, in receive order."""
    assert sorted(e[1] for e in events) == sorted(acked)
    assert {e[3] for e in events} == {"done"}
    per_event: dict[int, int] = defaultdict(int)
    for pk, _ in timeline:
        per_event[pk] += 1
    assert set(per_event) == {e[0] for e in events}
    assert set(per_event.values()) == {1}, "a step took effect twice"
    if ordered:
        received: dict[str, list[int]] = defaultdict(list)
        for pk, _, subject, _ in sorted(events):
            received[subject].append(pk)
        recorded: dict[str, list[int]] = defaultdict(list)
        for pk, subject in timeline:
            recorded[subject].append(pk)
        assert recorded == received


# -- (b) two serve + two worker processes on one PostgreSQL database ----------------------------


@pytest.mark.postgres
async def test_two_serve_and_two_workers_on_postgresql_run_each_step_once(
    tmp_path: Path, pg_empty_url: str
) -> None:
    """2 serve + 2 worker processes share PostgreSQL: 5,000 events, all done, no step twice."""
    folder = tmp_path
    config = write_config(folder, pg_empty_url, log_level="debug")
    upgrade = await asyncio.to_thread(
        subprocess.run, [CAREHOOK, "db", "upgrade", "--config", str(config)], cwd=folder,
        env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr
    ports = [free_port(), free_port()]
    workers = [start(folder, "worker", "--config", str(config), name=f"worker-{i}")
               for i in (1, 2)]
    serves = [await start_serve(folder, config, p, f"serve-{i}") for i, p in enumerate(ports)]
    procs = serves + workers
    sender = sender_for(config, [f"http://127.0.0.1:{p}/webhooks/abridge" for p in ports])
    conninfo = pg_empty_url

    def done_count() -> int:
        with psycopg.connect(conninfo) as conn:
            row = conn.execute("SELECT count(*) FROM events WHERE status = 'done'").fetchone()
        return int(row[0]) if row else 0

    try:
        await sender.send_all(5000, 50)
        await wait_until(lambda: done_count() == 5000, "every event to be done")
    finally:
        graceful = [p.stop() for p in procs]
    assert graceful == [True] * 4
    with psycopg.connect(conninfo) as conn:
        events = conn.execute("SELECT id, event_id, subject, status FROM events").fetchall()
        timeline = conn.execute("SELECT event_pk, subject FROM timeline ORDER BY id").fetchall()
    _check_exactly_once(events, timeline, sender.acked, ordered=False)
    busy = [p for p in procs if "worker.event_done" in p.log.read_text()]
    assert len(busy) >= 2, "the work was not shared between processes"
