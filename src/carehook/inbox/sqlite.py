"""The SQLite inbox: the embedded default, one file under the data directory, one machine.

Writes go through :class:`~carehook.inbox._sqlite_writer.GroupCommitWriter` (one thread, one
connection, one transaction and one fsync per batch of concurrent calls). Reads run on a small
thread pool, each thread with its own read-only connection: WAL lets them read while the writer
commits.

The worker's half (:class:`carehook.inbox.work.WorkStore`) is in
:mod:`carehook.inbox._sqlite_work`: its writes run in the same writer thread, so claims are
serialised there.

Durability: WAL with ``synchronous=FULL``, so a returned ``accept`` survives power loss. The
database file (and so its -wal and -shm files) is mode 0600. Timestamps are stored as
fixed-width ISO-8601 UTC text (see :mod:`carehook.inbox.schema`).
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from carehook.crypto import KeyRing, payload_aad
from carehook.envelope import Envelope, RequestRecord
from carehook.errors import ConfigError, StorageUnavailable
from carehook.inbox import _common as c
from carehook.inbox import migrate
from carehook.inbox._base import StoreBase
from carehook.inbox._reads_sql import SqliteReads  # the operator reads (admin surface)
from carehook.inbox._signal import WorkSignal
from carehook.inbox._sqlite_work import SqliteWork
from carehook.inbox._sqlite_writer import (
    ACCEPT,
    AUDIT,
    CALL,
    LOG_REQUEST,
    GroupCommitWriter,
    translate,
)
from carehook.inbox.port import (
    ACTION_PAYLOAD_VIEW,
    AuditRow,
    EventFilter,
    EventRow,
    RequestRow,
)

T = TypeVar("T")

# S608: only constant fragments are ever joined into SQL here; every value is a bound parameter
_SELECT_EVENT = f"SELECT {c.EVENT_COLUMNS} FROM events WHERE id = ?"  # noqa: S608
_SELECT_PAYLOAD = "SELECT source, event_id, payload FROM events WHERE id = ?"
_SELECT_AUDIT = f"SELECT {c.AUDIT_COLUMNS} FROM audit ORDER BY id DESC LIMIT ?"  # noqa: S608


class SqliteInbox(SqliteWork, SqliteReads, StoreBase):
    """The inbox in one SQLite file, with group commit."""

    def __init__(
        self,
        url_or_path: str | os.PathLike[str],
        keyring: KeyRing,
        *,
        auto_migrate: bool = True,
        busy_timeout: float = 5.0,
        batch_cap: int = 512,
        readers: int = 2,
        clock: Callable[[], datetime] = c.utcnow,
    ) -> None:
        self.path: Path = c.sqlite_path(url_or_path)
        self.url = c.sqlite_url(self.path)
        self._keyring = keyring
        self._auto_migrate = auto_migrate
        self._busy_timeout = busy_timeout
        self._batch_cap = batch_cap
        self._readers = readers
        self._clock = clock
        self._writer: GroupCommitWriter | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._read_lock = threading.Lock()
        self._signal = WorkSignal()

    @property
    def commits(self) -> int:
        """Transactions committed by the writer since open (instrumentation)."""
        return 0 if self._writer is None else self._writer.commits

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the file (0600), migrate or check the schema, start the writer."""
        if self._writer is not None:
            return
        self._writer = await asyncio.to_thread(self._prepare)
        self._writer.start()
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix="carehook-sqlite-read")

    def _prepare(self) -> GroupCommitWriter:
        try:
            c.ensure_private_file(self.path)
            self._set_wal()
            if self._auto_migrate:
                migrate.upgrade(self.url)
            elif not migrate.is_current(self.url):
                raise ConfigError("database schema is not current: run `carehook db upgrade`")
            # connect after migrating: the writer's TEMP trigger is compiled against the schema
            # this connection sees first
            return GroupCommitWriter(self._connect(), cap=self._batch_cap)
        except OSError as exc:
            raise StorageUnavailable(f"cannot create the SQLite file: {exc.strerror}") from exc
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def _set_wal(self) -> None:
        # WAL is a property of the file: set it before anyone else (the migration) writes
        conn = self._connect()
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        finally:
            conn.close()
        if mode != "wal":
            raise ConfigError(f"SQLite refused WAL mode (got {mode!r})")

    def _connect(self, *, read_only: bool = False) -> sqlite3.Connection:
        # isolation_level=None: autocommit, each writer statement is its own transaction;
        # check_same_thread=False: a connection is made on one thread and used (only) on another
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA synchronous = FULL")  # an ack must survive power loss
        conn.execute("PRAGMA foreign_keys = ON")
        if read_only:
            conn.execute("PRAGMA query_only = ON")
        return conn

    async def close(self) -> None:
        """Commit what is queued, stop the writer, close every connection."""
        writer, pool = self._writer, self._pool
        self._writer = self._pool = None
        if writer is not None:
            await asyncio.to_thread(writer.stop)
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True)
        with self._read_lock:
            for conn in self._read_conns:
                conn.close()
            self._read_conns.clear()
        self._local = threading.local()

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the writer runs and the file answers."""
        self._live_writer()
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    # -- writes (group-committed) ------------------------------------------------------------

    async def accept(self, envelope: Envelope, request: RequestRecord) -> bool:
        """Store the event and its request-log row in the next group commit."""
        e = envelope
        received = c.to_text(e.received_at)
        event = (
            e.source,
            e.vendor,
            e.event_id,
            e.type,
            e.subject,
            c.opt_text(e.occurred_at),
            received,
            self._keyring.encrypt(e.payload, payload_aad(e.source, e.event_id)),
            e.secret_index,
            c.initial_status(e.handled),
            received if e.handled else None,  # a handled event is due at once
        )
        # the ingress stamps both with the same instant: format it once
        same = request.received_at == e.received_at
        req = _request_params(request, e.event_id, received if same else None)
        new: bool = await self._live_writer().submit(ACCEPT, event, req)
        if new and e.handled:
            self._signal.notify()
        return new

    async def log_request(self, record: RequestRecord) -> None:
        """Append a request-log row in the next group commit."""
        await self._live_writer().submit(LOG_REQUEST, (), _request_params(record, None, None))

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the writer thread, in the next calls' transaction (see the writer)."""
        result: T = await self._live_writer().submit(CALL, (fn,), ())
        return result

    def _live_writer(self) -> GroupCommitWriter:
        writer = self._writer
        if writer is None or not writer.alive():
            raise StorageUnavailable("the SQLite inbox is not open")
        return writer

    # -- reads -------------------------------------------------------------------------------

    async def list_events(self, flt: EventFilter) -> list[EventRow]:
        """Events matching ``flt``, newest first."""
        where, params = c.event_filter_sql(flt.source, flt.status, flt.type, "?")
        sql = f"SELECT {c.EVENT_COLUMNS} FROM events{where} ORDER BY id DESC LIMIT ?"  # noqa: S608
        rows = await self._read(lambda conn: conn.execute(sql, (*params, flt.limit)).fetchall())
        return [c.event_row(r, c.from_text) for r in rows]

    async def get_event(self, event_pk: int) -> EventRow | None:
        """One event's metadata, or None."""
        row = await self._read(lambda conn: conn.execute(_SELECT_EVENT, (event_pk,)).fetchone())
        return None if row is None else c.event_row(row, c.from_text)

    async def read_payload(self, event_pk: int, actor: str) -> bytes | None:
        """Decrypt one payload after committing its audit row; None once purged or unknown."""
        row = await self._read(lambda conn: conn.execute(_SELECT_PAYLOAD, (event_pk,)).fetchone())
        if row is None or row[2] is None:
            return None
        source, event_id, blob = row
        plaintext = self._keyring.decrypt(blob, payload_aad(source, event_id))
        audit = (c.to_text(self._clock()), actor, ACTION_PAYLOAD_VIEW, event_pk, "")
        await self._live_writer().submit(AUDIT, audit, ())
        return plaintext

    async def list_requests(self, limit: int = 100, source: str | None = None) -> list[RequestRow]:
        """Request-log rows, newest first."""
        where = " WHERE source = ?" if source is not None else ""
        params: tuple[Any, ...] = (source, limit) if source is not None else (limit,)
        sql = f"SELECT {c.REQUEST_COLUMNS} FROM requests{where} ORDER BY id DESC LIMIT ?"  # noqa: S608
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [c.request_row(r, c.from_text) for r in rows]

    async def list_audit(self, limit: int = 100) -> list[AuditRow]:
        """Audit rows, newest first."""
        rows = await self._read(lambda conn: conn.execute(_SELECT_AUDIT, (limit,)).fetchall())
        return [c.audit_row(r, c.from_text) for r in rows]

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        pool = self._pool
        if pool is None:
            raise StorageUnavailable("the SQLite inbox is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, functools.partial(self._run_read, fn))

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """On a reader thread: run ``fn`` on this thread's connection, errors translated."""
        try:
            conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._connect(read_only=True)
                self._local.conn = conn
                with self._read_lock:
                    self._read_conns.append(conn)
            return fn(conn)
        except sqlite3.Error as exc:
            raise translate(exc) from exc


def _request_params(
    r: RequestRecord, default_event_id: str | None, received_text: str | None
) -> tuple[Any, ...]:
    event_id = r.event_id if r.event_id is not None else default_event_id
    received = received_text if received_text is not None else c.to_text(r.received_at)
    return (r.source, received, r.remote_addr, r.size, r.status, r.outcome, r.cause, event_id)
