"""What only one adapter promises: files and pragmas, migrations on open, failure handling."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from carehook.crypto import KeyRing
from carehook.envelope import Envelope, RequestRecord
from carehook.errors import ConfigError, StorageError, StorageUnavailable
from carehook.inbox import migrate, open_store
from carehook.inbox._postgres import PostgresDialect
from carehook.inbox._sqlite import SqliteDialect
from carehook.inbox.port import EventFilter

MakeEnvelope = Callable[..., Envelope]
MakeRecord = Callable[..., RequestRecord]


# --- open_store --------------------------------------------------------------------------------


def test_open_store_picks_the_dialect_by_url(keyring: KeyRing, sqlite_url: str) -> None:
    """sqlite:///, postgresql:// (and postgres://) name their dialects of the one store."""
    assert isinstance(open_store(sqlite_url, keyring).dialect, SqliteDialect)
    assert isinstance(open_store("postgresql://u@h:5432/d", keyring).dialect, PostgresDialect)
    assert isinstance(open_store("postgres://u@h/d", keyring).dialect, PostgresDialect)


def test_open_store_refuses_memory(keyring: KeyRing) -> None:
    """memory:// is refused with a message saying why (acknowledged means on disk)."""
    with pytest.raises(ConfigError, match="must commit them to disk"):
        open_store("memory://", keyring)


@pytest.mark.parametrize("url", ["mysql://u@h/d", "sqlite://", "sqlite:///:memory:", ""])
def test_open_store_refuses_other_urls(keyring: KeyRing, url: str) -> None:
    """A URL no adapter can serve is a configuration error, not a crash later."""
    with pytest.raises(ConfigError):
        open_store(url, keyring)


# --- SQLite ------------------------------------------------------------------------------------


async def test_sqlite_file_is_private_wal_and_migrated(
    keyring: KeyRing, sqlite_url: str, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """open() creates the directory and a 0600 file in WAL mode at the newest schema."""
    async with open_store(sqlite_url, keyring) as inbox:
        env = make_envelope()
        await inbox.accept(env, make_record(env))
        for path in (inbox.dialect.path, Path(f"{inbox.dialect.path}-wal")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        conn = sqlite3.connect(inbox.dialect.path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
    assert migrate.is_current(sqlite_url)


async def test_sqlite_without_auto_migrate_refuses_an_old_schema(
    keyring: KeyRing, sqlite_url: str
) -> None:
    """With auto_migrate off, open() on an unmigrated file asks for `carehook db upgrade`."""
    inbox = open_store(sqlite_url, keyring, auto_migrate=False)
    with pytest.raises(ConfigError, match="db upgrade"):
        await inbox.open()
    migrate.upgrade(sqlite_url)
    async with open_store(sqlite_url, keyring, auto_migrate=False) as inbox:
        await inbox.ping()


async def test_sqlite_events_survive_reopening(
    keyring: KeyRing, sqlite_url: str, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """What accept acknowledged is there after close and reopen (and still a duplicate)."""
    env = make_envelope()
    async with open_store(sqlite_url, keyring) as inbox:
        assert await inbox.accept(env, make_record(env))
    async with open_store(sqlite_url, keyring) as inbox:
        assert await inbox.accept(env, make_record(env)) is False
        (row,) = await inbox.list_events(EventFilter())
        assert await inbox.read_payload(row.id, actor="t") == env.payload


async def test_sqlite_closed_store_refuses_writes(
    keyring: KeyRing, sqlite_url: str, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """After close() a write is StorageUnavailable, never a hang."""
    inbox = open_store(sqlite_url, keyring)
    await inbox.open()
    await inbox.close()
    env = make_envelope()
    with pytest.raises(StorageUnavailable):
        await inbox.accept(env, make_record(env))
    with pytest.raises(StorageUnavailable):
        await inbox.ping()


async def test_sqlite_bad_row_fails_alone_and_leaves_nothing_half_written(
    keyring: KeyRing, sqlite_url: str, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """A row the database refuses fails its own call only; its event row is rolled back too."""
    async with open_store(sqlite_url, keyring, busy_timeout=5) as inbox:
        conn = sqlite3.connect(inbox.dialect.path, isolation_level=None)
        # the request-log insert fails *after* its event row went in, inside the same batch
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON requests WHEN NEW.remote_addr = 'bad'"
            " BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
        )
        envs = [make_envelope() for _ in range(6)]
        records = [
            make_record(e, remote_addr="bad" if i == 3 else "ok") for i, e in enumerate(envs)
        ]
        # hold the write lock until every call is queued, so that they share one batch
        conn.execute("BEGIN IMMEDIATE")
        calls = [
            asyncio.ensure_future(inbox.accept(e, r)) for e, r in zip(envs, records, strict=True)
        ]
        await asyncio.sleep(0.1)
        conn.execute("ROLLBACK")
        results = await asyncio.gather(*calls, return_exceptions=True)
        conn.close()

        assert type(results[3]) is StorageError
        assert [r for i, r in enumerate(results) if i != 3] == [True] * 5
        stored = {r.event_id for r in await inbox.list_events(EventFilter())}
        assert stored == {e.event_id for i, e in enumerate(envs) if i != 3}
        assert len(await inbox.list_requests()) == 5


async def test_sqlite_commits_are_shared_under_load(
    keyring: KeyRing, sqlite_url: str, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """Calls queued while the writer is busy are committed together in one transaction."""
    async with open_store(sqlite_url, keyring, busy_timeout=5) as inbox:
        conn = sqlite3.connect(inbox.dialect.path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")  # the writer blocks on its first batch meanwhile
        envs = [make_envelope() for _ in range(50)]
        calls = [asyncio.ensure_future(inbox.accept(e, make_record(e))) for e in envs]
        await asyncio.sleep(0.1)
        conn.execute("ROLLBACK")
        conn.close()
        assert await asyncio.gather(*calls) == [True] * 50
        # the writer took what was queued when it woke (at least the first call), and everything
        # that queued behind it while it waited for the lock went into the next transaction
        assert inbox.commits <= 2


async def test_sqlite_checkpoints_run_beside_the_writer_and_keep_the_wal_small(
    keyring: KeyRing, sqlite_url: str, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """The writer never checkpoints inside a commit (its automatic checkpoint is off); the
    checkpoint thread does the copying and the writer the tail, so the WAL restarts instead of
    growing with every batch (about 8 MB of WAL here without checkpoints)."""
    options: dict[str, Any] = {"checkpoint_seconds": 0.02, "checkpoint_bytes": 256 << 10}
    async with open_store(sqlite_url, keyring, **options) as inbox:
        writer = inbox.dialect._writer
        assert writer is not None
        autocheckpoint = await inbox.dialect.write(
            lambda tx: tx.row("PRAGMA wal_autocheckpoint")[0]
        )
        assert autocheckpoint == 0
        wal = Path(f"{inbox.dialect.path}-wal")
        sizes = []
        for _ in range(12):  # 12 x 300 events of ~2 KB
            envs = [make_envelope(payload=os.urandom(1500)) for _ in range(300)]
            await asyncio.gather(*(inbox.accept(e, make_record(e)) for e in envs))
            tails = writer.checkpoints
            for _ in range(250):
                if writer.checkpoints > tails:
                    break
                await asyncio.sleep(0.02)
            sizes.append(os.path.getsize(wal))  # noqa: ASYNC240 (a stat, in a test)
        assert inbox.dialect.checkpoints >= 12
        assert writer.checkpoints >= 12
        assert len(await inbox.list_events(EventFilter(limit=5000))) == 3600
    assert max(sizes) < 3 << 20, f"the WAL kept growing: {sizes}"


async def test_sqlite_wal_restarts_under_a_steady_write_load(
    keyring: KeyRing, sqlite_url: str, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """Writes without a pause: a checkpoint beside the writer never finds the WAL wholly
    copied, so without the writer's tail the WAL only grows (it did: 3.5 GB in two minutes)."""
    options: dict[str, Any] = {"checkpoint_seconds": 0.02, "checkpoint_bytes": 256 << 10}
    async with open_store(sqlite_url, keyring, **options) as inbox:
        wal = Path(f"{inbox.dialect.path}-wal")
        loop = asyncio.get_running_loop()
        until = loop.time() + 3
        largest = written = 0
        while loop.time() < until:
            envs = [make_envelope(payload=os.urandom(1500)) for _ in range(64)]
            await asyncio.gather(*(inbox.accept(e, make_record(e)) for e in envs))
            written += 64
            largest = max(largest, os.path.getsize(wal))  # noqa: ASYNC240 (a stat, in a test)
    assert written * 1500 > 8 * largest, f"{written} events, the WAL grew to {largest} bytes"


# --- PostgreSQL --------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_postgres_open_refuses_an_unmigrated_database(
    keyring: KeyRing, pg_empty_url: str
) -> None:
    """By default PostgreSQL is never migrated silently: open() names the command to run."""
    with pytest.raises(ConfigError, match="carehook db upgrade"):
        await open_store(pg_empty_url, keyring).open()
    async with open_store(pg_empty_url, keyring, auto_migrate=True) as inbox:
        await inbox.ping()
    assert migrate.is_current(pg_empty_url)


@pytest.mark.postgres
async def test_postgres_unreachable_server_is_unavailable(keyring: KeyRing) -> None:
    """A server that refuses connections makes open() raise StorageUnavailable."""
    inbox = open_store("postgresql://postgres@127.0.0.1:1/nowhere", keyring, timeout=1)
    with pytest.raises(StorageUnavailable):
        await inbox.open()


@pytest.mark.postgres
async def test_postgres_killed_connections_are_replaced(
    keyring: KeyRing, pg_url: str, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """After every pooled backend is terminated, the next accept still commits."""
    async with open_store(pg_url, keyring) as inbox:
        first = make_envelope()
        assert await inbox.accept(first, make_record(first))
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
            cur = await admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            (killed,) = await cur.fetchone() or (0,)
        assert killed >= 1
        env = make_envelope()
        assert await inbox.accept(env, make_record(env)) is True
        assert await inbox.accept(env, make_record(env)) is False
        assert len(await inbox.list_events(EventFilter())) == 2


@pytest.mark.postgres
async def test_postgres_ingest_wakes_other_processes_only_for_new_handled_events(
    keyring: KeyRing, pg_url: str, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """The one-statement ingest NOTIFYs at COMMIT: a worker in another process wakes for a new
    handled event, not for a duplicate, an unhandled event or a bare request-log row."""
    async with open_store(pg_url, keyring) as ingress, open_store(pg_url, keyring) as worker:
        await worker.wait_for_work(0.05)  # listening from here on
        await worker.wait_for_work(0.05)
        env = make_envelope()
        assert await ingress.accept(env, make_record(env))
        waiter = asyncio.create_task(worker.wait_for_work(30))
        await asyncio.wait_for(waiter, 5)  # woken, long before its 30 s
        quiet = make_envelope(handled=False)
        assert await ingress.accept(quiet, make_record(quiet))
        assert not await ingress.accept(env, make_record(env))  # a duplicate
        await ingress.log_request(make_record(env, status=401, outcome="rejected"))
        started = asyncio.get_running_loop().time()
        await worker.wait_for_work(0.5)
        assert asyncio.get_running_loop().time() - started >= 0.45  # nothing woke it


@pytest.mark.postgres
async def test_postgres_two_processes_never_double_store_nor_deadlock(
    keyring: KeyRing, pg_url: str, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """Two stores on one database (two ingress processes) see each event as new exactly once.

    They get the same events in opposite orders. A third session first holds the middle key,
    so both INSERTs are in flight and meet there: inserting in call order would deadlock;
    every batch locking its keys in one global order must not.
    """
    n = 200
    envs = [make_envelope() for _ in range(n)]
    middle = envs[n // 2]
    opts: dict[str, Any] = {"flushers": 1, "batch_cap": n}
    async with (
        open_store(pg_url, keyring, **opts) as a,
        open_store(pg_url, keyring, **opts) as b,
        await psycopg.AsyncConnection.connect(pg_url) as blocker,
    ):
        await blocker.execute(
            "INSERT INTO events (source, vendor, event_id, type, subject, received_at,"
            " secret_index, status) VALUES (%s, 'v', %s, 't', 's', now(), 0, 'pending')",
            (middle.source, middle.event_id),
        )
        calls = asyncio.gather(
            *(a.accept(e, make_record(e)) for e in envs),
            *(b.accept(e, make_record(e)) for e in reversed(envs)),
        )
        await asyncio.sleep(0.3)  # both batches are now waiting on the middle key
        await blocker.rollback()
        results = await calls
        assert results.count(True) == n
        assert len(await a.list_events(EventFilter(limit=2 * n))) == n
        assert len(await a.list_requests(limit=4 * n)) == 2 * n


async def test_sqlite_writers_of_two_processes_take_turns_on_the_file_lock(
    keyring: KeyRing, sqlite_url: str, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """Every write transaction holds the 0600 file ``<database>-lock`` (``flock``), so a
    writer waits for another process's transaction in the kernel, woken when it ends, not in
    SQLite's sleeping busy handler: while the lock is held elsewhere neither an ack nor a
    worker write commits, and both do once it is let go. Two stores on one file (two processes'
    writers) interleave their writes without losing one."""
    async with (open_store(sqlite_url, keyring, busy_timeout=5) as a,
                open_store(sqlite_url, keyring, busy_timeout=5) as b):  # fmt: skip
        lock = Path(f"{a.dialect.path}-lock")
        assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another process's transaction, as it were
            env = make_envelope()
            ack = asyncio.ensure_future(a.accept(env, make_record(env)))
            call = asyncio.ensure_future(b.dialect.write(lambda tx: tx.row("SELECT 1")))
            await asyncio.sleep(0.3)
            assert not ack.done()
            assert not call.done()
            fcntl.flock(fd, fcntl.LOCK_UN)
            assert await ack is True
            assert tuple(await call) == (1,)
        finally:
            os.close(fd)
        envs = [make_envelope() for _ in range(200)]
        results = await asyncio.gather(
            *((a if i % 2 else b).accept(e, make_record(e)) for i, e in enumerate(envs))
        )
        assert results == [True] * 200
        assert len(await a.list_events(EventFilter(limit=500))) == 201
        assert await b.accept(envs[0], make_record(envs[0])) is False


async def test_sqlite_a_worker_hears_of_another_processes_commit_before_its_poll(
    keyring: KeyRing, sqlite_url: str, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """A worker's store learns of an event another process stored (``serve --no-worker``
    beside ``carehook worker``) from the file's ``data_version``: its wait returns long before
    the poll timeout, and the event is claimable; with nothing committed it keeps waiting."""
    async with (open_store(sqlite_url, keyring) as ingress,
                open_store(sqlite_url, keyring, watch_seconds=0.02) as worker):  # fmt: skip
        assert await worker.claim("w", 1, 30) == []
        await worker.wait_for_work(0.05)  # the first wait starts the watcher
        waiting = asyncio.ensure_future(worker.wait_for_work(60))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        env = make_envelope()
        assert await ingress.accept(env, make_record(env))
        await asyncio.wait_for(waiting, 10)
        (claim,) = await worker.claim("w", 1, 30)
        assert claim.event_id == env.event_id


async def test_sqlite_ingest_commits_before_queued_worker_writes(
    keyring: KeyRing, sqlite_url: str, make_envelope: MakeEnvelope, make_record: MakeRecord
) -> None:
    """An ack never waits behind a backlog of worker writes: queued ingest goes first."""
    async with open_store(sqlite_url, keyring, busy_timeout=5) as inbox:
        conn = sqlite3.connect(inbox.dialect.path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")  # the writer blocks on its first call meanwhile
        order: list[str] = []

        async def call(n: int) -> None:
            await inbox.dialect.write(lambda tx: tx.row("SELECT 1"))
            order.append(f"call{n}")

        async def ack() -> None:
            env = make_envelope()
            assert await inbox.accept(env, make_record(env))
            order.append("ack")

        calls = [asyncio.ensure_future(call(n)) for n in range(200)]
        await asyncio.sleep(0.05)
        acked = asyncio.ensure_future(ack())
        await asyncio.sleep(0.05)
        conn.execute("ROLLBACK")
        conn.close()
        await asyncio.gather(*calls, acked)
        # at most the call the writer was blocked on and one transaction of calls come first
        assert order.index("ack") <= 1 + 32


@pytest.mark.postgres
async def test_postgres_a_worker_transaction_that_fails_in_pipeline_mode_logs_nothing(
    keyring: KeyRing, pg_url: str, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Worker writes run in pipeline mode: a statement sent without reading its answer fails
    on the server while the call raises for another reason. Ending pipeline mode then meets
    the server's error, whose message quotes the value; psycopg would log it as a warning if
    that happened while the call's exception was on its way out. The caller gets a
    StorageError naming neither, and nothing is logged; the connection is usable after."""
    canary = "canary-4d1c07"

    def bad(tx: Any) -> None:
        tx.send("INSERT INTO probe (id, at) VALUES (1, ?)", [canary])  # not a timestamp
        raise RuntimeError("a bug after the statement went out")

    async with open_store(pg_url, keyring) as inbox:
        with caplog.at_level(logging.DEBUG):
            with pytest.raises(StorageError) as refused:
                await inbox.dialect.write(bad)
            assert await inbox.dialect.write(lambda tx: tx.row("SELECT 2")) == (2,)
    assert canary not in str(refused.value)
    out, err = capfd.readouterr()
    assert canary not in caplog.text + out + err
