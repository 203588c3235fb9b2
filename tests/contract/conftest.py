"""Builders and per-adapter probes for the inbox contract suite.

The probes are the only place the suite knows which adapter it runs on: how to make the store
unable to commit (``outage``) and how to read what it wrote to disk (``raw_storage``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import psycopg
import pytest

from carehook.crypto import KeyRing
from carehook.envelope import Envelope, RequestRecord
from carehook.inbox import open_store
from carehook.inbox._sqlite import SqliteDialect
from carehook.inbox.port import Store
from carehook.inbox.store import SqlStore
from carehook.testing import FakeClock

NOW = datetime(2026, 5, 10, 9, 30, 15, 123456, tzinfo=UTC)
_serial = count(1)

MakeEnvelope = Callable[..., Envelope]
MakeRecord = Callable[..., RequestRecord]


@pytest.fixture
def make_envelope() -> MakeEnvelope:
    """A builder of valid envelopes; every call gets a new event id unless one is given."""

    def make(**overrides: Any) -> Envelope:
        n = next(_serial)
        fields: dict[str, Any] = {
            "source": "abridge-prod",
            "vendor": "abridge",
            "event_id": f"evt_{n:06d}",
            "type": "encounter.session.completed",
            "subject": f"abridge:session:s{n}",
            "occurred_at": NOW - timedelta(seconds=3),
            # a microsecond apart: the clock below is a minute after NOW, and the whole session's
            # envelopes must stay before it (a millisecond apart, 60,000 of them did not)
            "received_at": NOW + timedelta(microseconds=n),
            "payload": b'{"session_id": "s%d", "patient": "Jane Doe"}' % n,
            "secret_index": 0,
            "handled": True,
        }
        fields.update(overrides)
        return Envelope(**fields)

    return make


@pytest.fixture
def make_record() -> MakeRecord:
    """A builder of request-log records, by default the one ingress writes for ``envelope``."""

    def make(envelope: Envelope | None = None, **overrides: Any) -> RequestRecord:
        record = RequestRecord(
            source=envelope.source if envelope else "abridge-prod",
            received_at=envelope.received_at if envelope else NOW,
            remote_addr="203.0.113.7",
            size=len(envelope.payload) if envelope else 0,
            status=200,
            outcome="accepted",
            event_id=envelope.event_id if envelope else None,
        )
        return replace(record, **overrides)

    return make


def _outage(store: Store) -> AbstractAsyncContextManager[None]:
    """Make ``store`` unable to commit for the duration of the block."""
    assert isinstance(store, SqlStore)
    if isinstance(store.dialect, SqliteDialect):
        return _sqlite_outage(store.dialect.path)
    return _postgres_outage(store.url)


@asynccontextmanager
async def _sqlite_outage(path: Path) -> AsyncIterator[None]:
    # another writer holds the database's write lock longer than the store's busy_timeout
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


@asynccontextmanager
async def _postgres_outage(url: str) -> AsyncIterator[None]:
    # another session holds the tables longer than the store's lock_timeout
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await conn.execute("LOCK TABLE events, requests, audit, probe IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            await conn.rollback()


async def _raw_storage(store: Store) -> bytes:
    """Every byte the store keeps of its payloads, as an attacker with the disk would see it."""
    assert isinstance(store, SqlStore)
    if isinstance(store.dialect, SqliteDialect):
        path = store.dialect.path
        files = [path, Path(f"{path}-wal")]
        return b"".join(p.read_bytes() for p in files if p.exists())
    async with await psycopg.AsyncConnection.connect(store.url) as conn:
        cur = await conn.execute("SELECT payload FROM events")
        return b"".join(bytes(row[0]) for row in await cur.fetchall() if row[0] is not None)


def _refuse_timeline_rows(store: Store, subject: str, message: str) -> None:
    """A trigger makes the database refuse a timeline row of ``subject`` with ``message``."""
    assert isinstance(store, SqlStore)
    if isinstance(store.dialect, SqliteDialect):
        with closing(sqlite3.connect(store.dialect.path)) as conn:
            conn.execute(
                f"CREATE TRIGGER refuse BEFORE INSERT ON timeline WHEN NEW.subject = '{subject}'"
                f" BEGIN SELECT RAISE(ABORT, '{message} {subject}'); END"
            )
            conn.commit()
        return
    with psycopg.connect(store.url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF NEW.subject = '{subject}' THEN RAISE EXCEPTION '{message} %', NEW.subject;"
            " END IF; RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON timeline FOR EACH ROW EXECUTE FUNCTION refuse()"
        )


@pytest.fixture
def refuse_timeline_rows() -> Callable[[Store, str, str], None]:
    """``refuse_timeline_rows(store, subject, message)``: from now on the database refuses a
    timeline row of ``subject``, with an error quoting ``message``."""
    return _refuse_timeline_rows


@pytest.fixture
def outage() -> Callable[[Store], AbstractAsyncContextManager[None]]:
    """``async with outage(store):`` the store cannot commit (a lock held past its timeout)."""
    return _outage


@pytest.fixture
def raw_storage() -> Callable[[Store], Awaitable[bytes]]:
    """``await raw_storage(store)``: the stored payload bytes as they lie on disk."""
    return _raw_storage


# --- the work half ---------------------------------------------------------------------------

#: as in tests/conftest.py: short lock waits, so a held lock shows up quickly
TEST_LOCK_WAIT = 0.2


#: the contract suites' clock: the fake clock of :mod:`carehook.testing`
Clock = FakeClock


@pytest.fixture
def clock() -> Clock:
    """A clock one minute after the builders' receipt times (so new events are due)."""
    return Clock(NOW + timedelta(minutes=1))


def _work_store(
    kind: str, request: pytest.FixtureRequest, keyring: KeyRing, clock: Clock, sqlite_url: str
) -> Any:
    if kind == "sqlite":
        return open_store(sqlite_url, keyring, busy_timeout=TEST_LOCK_WAIT, clock=clock)
    url = request.getfixturevalue("pg_url")
    return open_store(url, keyring, lock_timeout=TEST_LOCK_WAIT, timeout=2.0, clock=clock)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def work_store(
    request: pytest.FixtureRequest, keyring: KeyRing, clock: Clock, sqlite_url: str
) -> AsyncIterator[Any]:
    """An opened store on each database (SQLite, PostgreSQL) reading time from ``clock``."""
    store = _work_store(request.param, request, keyring, clock, sqlite_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def racing_stores(
    request: pytest.FixtureRequest, keyring: KeyRing, sqlite_url: str
) -> AsyncIterator[list[Any]]:
    """Four handles on one store for four racing workers, on the real clock.

    PostgreSQL: four separately opened stores (four pools) on one database, as four worker
    processes would be. SQLite: one store shared, as a SQLite deployment has one writer per
    file.
    """
    stores: list[Any]
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        stores = [open_store(url, keyring, timeout=5.0) for _ in range(4)]
    else:
        stores = [open_store(sqlite_url, keyring)] * 4
    for s in dict.fromkeys(stores):
        await s.open()
    try:
        yield stores
    finally:
        for s in dict.fromkeys(stores):
            await s.close()
