"""The PostgreSQL inbox: for more than one process or machine.

Group commit on the event loop: ``accept``/``log_request`` put an operation on an asyncio queue
and await its future; up to ``flushers`` tasks each take what is queued (up to ``batch_cap``),
write it in one transaction on a pooled connection (one ``INSERT … SELECT FROM unnest(…)
ON CONFLICT DO NOTHING RETURNING`` for the events, one for the request-log rows) and resolve
the futures after COMMIT. A batch's events are sorted by key so that two flushers never lock
the unique index in opposite orders (no deadlocks between concurrent batches).

A connection found dead before COMMIT was sent (a restarted server, a killed backend) is
replaced and the batch retried once: nothing of it can have been committed. Every other driver
error becomes :class:`StorageUnavailable` (connection, lock timeout, disk full) or
:class:`StorageError`. ``open()`` migrates only when asked (``auto_migrate``); otherwise it
refuses a database whose schema is behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import conninfo as pq_conninfo
from psycopg_pool import AsyncConnectionPool

from carehook.crypto import KeyRing, payload_aad
from carehook.envelope import Envelope, RequestRecord
from carehook.errors import ConfigError, StorageError, StorageUnavailable
from carehook.inbox import _common as c
from carehook.inbox import migrate
from carehook.inbox._base import StoreBase
from carehook.inbox._postgres_work import NOTIFY, PostgresWork
from carehook.inbox._reads_sql import PostgresReads  # the operator reads (admin surface)
from carehook.inbox._signal import WorkSignal
from carehook.inbox.port import (
    ACTION_PAYLOAD_VIEW,
    OUTCOME_DUPLICATE,
    AuditRow,
    EventFilter,
    EventRow,
    RequestRow,
)

_ACCEPT: Final = 0
_LOG_REQUEST: Final = 1

_INSERT_EVENTS: Final = """
INSERT INTO events (source, vendor, event_id, type, subject, occurred_at, received_at, payload,
                    secret_index, status, attempts, next_attempt_at)
SELECT u.source, u.vendor, u.event_id, u.etype, u.subject, u.occurred_at, u.received_at,
       u.payload, u.secret_index, u.status, 0, u.next_attempt_at
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[],
            %s::timestamptz[], %s::bytea[], %s::int4[], %s::text[], %s::timestamptz[])
  AS u(source, vendor, event_id, etype, subject, occurred_at, received_at, payload,
       secret_index, status, next_attempt_at)
ON CONFLICT (source, event_id) DO NOTHING
RETURNING source, event_id, status = 'pending'
"""
_INSERT_REQUESTS: Final = """
INSERT INTO requests (source, received_at, remote_addr, size, status, outcome, cause, event_id)
SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::text[], %s::int4[], %s::int4[],
                     %s::text[], %s::text[], %s::text[])
"""
# the same, telling the workers (at COMMIT) that the batch stored an event to run
_INSERT_REQUESTS_NOTIFY: Final = f"WITH r AS ({_INSERT_REQUESTS}) SELECT {NOTIFY}"
_INSERT_AUDIT: Final = (
    "INSERT INTO audit (at, actor, action, event_pk, detail) VALUES (%s, %s, %s, %s, %s)"
)
# S608: only constant fragments are ever joined into SQL here; every value is a bound parameter
_SELECT_EVENT: Final = f"SELECT {c.EVENT_COLUMNS} FROM events WHERE id = %s"  # noqa: S608
_SELECT_PAYLOAD: Final = "SELECT source, event_id, payload FROM events WHERE id = %s"
_SELECT_AUDIT: Final = f"SELECT {c.AUDIT_COLUMNS} FROM audit ORDER BY id DESC LIMIT %s"  # noqa: S608
#: position of ``outcome`` in a request-log row
_OUTCOME: Final = 5


@dataclass(slots=True)
class _Op:
    """One queued write."""

    kind: int
    event: tuple[Any, ...] | None
    request: tuple[Any, ...]
    future: asyncio.Future[Any]


def translate(exc: BaseException) -> StorageError:
    """Our error for a driver (or unexpected) exception; the caller raises it ``from exc``."""
    sqlstate = getattr(exc, "sqlstate", None)
    what = f"postgres: {type(exc).__name__}" + (f" ({sqlstate})" if sqlstate else "")
    # OperationalError covers lost connections, pool timeouts, lock timeouts, disk full,
    # serialization failures and deadlocks: all worth a retry by the sender
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | OSError):
        return StorageUnavailable(what)
    return StorageError(what)


@contextlib.contextmanager
def wrap_exceptions() -> Iterator[None]:
    """Translate driver errors raised in the block into ours."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc) from exc


class PostgresInbox(PostgresWork, PostgresReads, StoreBase):
    """The inbox in PostgreSQL, with group commit over a connection pool.

    The worker's half lives in :mod:`carehook.inbox._postgres_work`.
    """

    def __init__(
        self,
        url: str,
        keyring: KeyRing,
        *,
        auto_migrate: bool = False,
        min_size: int = 2,
        max_size: int = 10,
        flushers: int = 4,
        batch_cap: int = 512,
        timeout: float = 5.0,
        lock_timeout: float = 5.0,
        clock: Callable[[], datetime] = c.utcnow,
    ) -> None:
        self.url = url
        self._conninfo = _conninfo(c.libpq_url(url), timeout, lock_timeout)
        self._keyring = keyring
        self._auto_migrate = auto_migrate
        self._sizes = (min_size, max(max_size, flushers + 1))
        self._flushers = flushers
        self._batch_cap = batch_cap
        self._timeout = timeout
        self._clock = clock
        self._pool: AsyncConnectionPool | None = None
        self._queue: asyncio.Queue[_Op] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._signal = WorkSignal()
        self._listener: asyncio.Task[None] | None = None
        self._listening: asyncio.Event | None = None
        #: committed group-commit transactions since open (instrumentation)
        self.commits = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Migrate (if asked) or check the schema, open the pool, start the flushers."""
        if self._pool is not None:
            return
        if self._auto_migrate:
            await asyncio.to_thread(migrate.upgrade, self.url)
        elif not await asyncio.to_thread(migrate.is_current, self.url):
            raise ConfigError("database schema is not current: run `carehook db upgrade`")
        pool = AsyncConnectionPool(
            self._conninfo,
            min_size=self._sizes[0],
            max_size=self._sizes[1],
            open=False,
            timeout=self._timeout,
            name="carehook-inbox",
        )
        try:
            with wrap_exceptions():
                await pool.open(wait=True, timeout=self._timeout)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self._queue = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._flusher(), name=f"carehook-pg-flusher-{i}")
            for i in range(self._flushers)
        ]

    async def close(self) -> None:
        """Commit what is queued, stop the flushers, close the pool."""
        queue, tasks, pool = self._queue, self._tasks, self._pool
        self._closing = True  # refuse new writes; those already queued still commit
        try:
            await self._stop_listener()
            if queue is not None:
                await queue.join()  # every queued write was committed (or failed) and answered
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if pool is not None:
                await pool.close()
        finally:
            self._pool, self._queue, self._tasks = None, None, []
            self._closing = False

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the database answers."""
        with wrap_exceptions():
            async with self._live_pool().connection() as conn:
                await conn.execute("SELECT 1")

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection in one transaction (committed on success), errors translated."""
        with wrap_exceptions():
            async with self._live_pool().connection() as conn:
                yield conn

    def _live_pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise StorageUnavailable("the PostgreSQL inbox is not open")
        return self._pool

    # -- writes (group-committed) ------------------------------------------------------------

    async def accept(self, envelope: Envelope, request: RequestRecord) -> bool:
        """Store the event and its request-log row in the next group commit."""
        e = envelope
        received = c.as_utc(e.received_at)
        event = (
            e.source,
            e.vendor,
            e.event_id,
            e.type,
            e.subject,
            None if e.occurred_at is None else c.as_utc(e.occurred_at),
            received,
            self._keyring.encrypt(e.payload, payload_aad(e.source, e.event_id)),
            e.secret_index,
            c.initial_status(e.handled),
            received if e.handled else None,  # a handled event is due at once
        )
        new: bool = await self._submit(_ACCEPT, event, _request_row(request, e.event_id))
        return new

    async def log_request(self, record: RequestRecord) -> None:
        """Append a request-log row in the next group commit."""
        await self._submit(_LOG_REQUEST, None, _request_row(record, None))

    async def _submit(self, kind: int, event: tuple[Any, ...] | None, req: tuple[Any, ...]) -> Any:
        queue = self._queue
        if queue is None or self._closing:
            raise StorageUnavailable("the PostgreSQL inbox is not open")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Op(kind, event, req, fut))
        return await fut

    async def _flusher(self) -> None:
        """Take everything queued (up to the cap) and commit it as one transaction, forever."""
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < self._batch_cap and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    queue.task_done()

    async def _commit(self, batch: list[_Op]) -> None:
        try:
            results = await self._write_retrying(batch)
        except Exception as exc:  # every future must resolve, whatever went wrong
            error = translate(exc)
            if isinstance(error, StorageUnavailable) or len(batch) == 1:
                for op in batch:
                    _fail(op.future, type(error)(*error.args), exc)
            else:
                for op in batch:  # isolate the one bad operation from its neighbours
                    await self._commit([op])
            return
        self.commits += 1
        for op, result in zip(batch, results, strict=True):
            if not op.future.done():  # a cancelled caller's row is committed all the same
                op.future.set_result(result)

    async def _write_retrying(self, batch: list[_Op]) -> list[Any]:
        tx = _Tx()
        try:
            return await self._write(batch, tx)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            if tx.conn is None or not tx.conn.broken or tx.committing:
                raise  # not a dead connection, or COMMIT may have landed: let the sender retry
        # the server rolled the open transaction back when the connection died: retry once,
        # after dropping every other dead idle connection the pool may still hold
        await self._live_pool().check()
        return await self._write(batch, _Tx())

    async def _write(self, batch: list[_Op], tx: _Tx) -> list[Any]:
        async with self._live_pool().connection() as conn:
            tx.conn = conn
            inserted, wake = await self._insert_events(conn, batch)
            seen: set[tuple[str, str]] = set()
            results: list[Any] = []
            requests: list[tuple[Any, ...]] = []
            for op in batch:
                req = op.request
                if op.event is not None:
                    key = (op.event[0], op.event[2])
                    new = key in inserted and key not in seen  # the first of a batch wins
                    seen.add(key)
                    results.append(new)
                    if not new:
                        req = (*req[:_OUTCOME], OUTCOME_DUPLICATE, *req[_OUTCOME + 1 :])
                else:
                    results.append(None)
                requests.append(req)
            columns = [list(col) for col in zip(*requests, strict=True)]
            await conn.execute(_INSERT_REQUESTS_NOTIFY if wake else _INSERT_REQUESTS, columns)
            tx.committing = True
            await conn.commit()
        return results

    @staticmethod
    async def _insert_events(
        conn: psycopg.AsyncConnection[Any], batch: list[_Op]
    ) -> tuple[set[tuple[str, str]], bool]:
        """Insert the batch's events (first of each key only); the keys that were new, and
        whether one of them is to run (handled)."""
        rows: dict[tuple[str, str], tuple[Any, ...]] = {}
        for op in batch:
            if op.event is not None:
                rows.setdefault((op.event[0], op.event[2]), op.event)
        if not rows:
            return set(), False
        ordered = [rows[key] for key in sorted(rows)]  # one lock order for every flusher
        cur = await conn.execute(_INSERT_EVENTS, [list(col) for col in zip(*ordered, strict=True)])
        returned = await cur.fetchall()
        return {(source, event_id) for source, event_id, _ in returned}, any(
            pending for _, _, pending in returned
        )

    # -- reads -------------------------------------------------------------------------------

    async def _fetch(self, sql: str, params: tuple[Any, ...] | list[Any]) -> list[tuple[Any, ...]]:
        with wrap_exceptions():
            async with self._live_pool().connection() as conn:
                cur = await conn.execute(sql, params)
                return await cur.fetchall()

    async def list_events(self, flt: EventFilter) -> list[EventRow]:
        """Events matching ``flt``, newest first."""
        where, params = c.event_filter_sql(flt.source, flt.status, flt.type, "%s")
        sql = f"SELECT {c.EVENT_COLUMNS} FROM events{where} ORDER BY id DESC LIMIT %s"  # noqa: S608
        rows = await self._fetch(sql, [*params, flt.limit])
        return [c.event_row(r, c.as_utc) for r in rows]

    async def get_event(self, event_pk: int) -> EventRow | None:
        """One event's metadata, or None."""
        rows = await self._fetch(_SELECT_EVENT, (event_pk,))
        return c.event_row(rows[0], c.as_utc) if rows else None

    async def read_payload(self, event_pk: int, actor: str) -> bytes | None:
        """Decrypt one payload after committing its audit row; None once purged or unknown."""
        rows = await self._fetch(_SELECT_PAYLOAD, (event_pk,))
        if not rows or rows[0][2] is None:
            return None
        source, event_id, blob = rows[0]
        plaintext = self._keyring.decrypt(bytes(blob), payload_aad(source, event_id))
        with wrap_exceptions():
            async with self._live_pool().connection() as conn:
                audit = (self._clock(), actor, ACTION_PAYLOAD_VIEW, event_pk, "")
                await conn.execute(_INSERT_AUDIT, audit)
        return plaintext

    async def list_requests(self, limit: int = 100, source: str | None = None) -> list[RequestRow]:
        """Request-log rows, newest first."""
        where = " WHERE source = %s" if source is not None else ""
        params: tuple[Any, ...] = (source, limit) if source is not None else (limit,)
        sql = f"SELECT {c.REQUEST_COLUMNS} FROM requests{where} ORDER BY id DESC LIMIT %s"  # noqa: S608
        return [c.request_row(r, c.as_utc) for r in await self._fetch(sql, params)]

    async def list_audit(self, limit: int = 100) -> list[AuditRow]:
        """Audit rows, newest first."""
        return [c.audit_row(r, c.as_utc) for r in await self._fetch(_SELECT_AUDIT, (limit,))]


@dataclass(slots=True)
class _Tx:
    """How far one write attempt got: decides whether a retry is safe."""

    conn: psycopg.AsyncConnection[Any] | None = None
    committing: bool = False


def _fail(fut: asyncio.Future[Any], exc: BaseException, cause: BaseException) -> None:
    exc.__cause__ = cause
    if not fut.done():
        fut.set_exception(exc)


def _request_row(r: RequestRecord, default_event_id: str | None) -> tuple[Any, ...]:
    event_id = r.event_id if r.event_id is not None else default_event_id
    return (
        r.source,
        c.as_utc(r.received_at),
        r.remote_addr,
        r.size,
        r.status,
        r.outcome,
        r.cause,
        event_id,
    )


def _conninfo(url: str, timeout: float, lock_timeout: float) -> str:
    """The URL plus our session settings, keeping any ``options`` the operator gave."""
    params = pq_conninfo.conninfo_to_dict(url)
    # a request must not hang behind a lock: after lock_timeout it gets a 503 and retries later
    ours = f"-c lock_timeout={int(lock_timeout * 1000)}"
    options = f"{params['options']} {ours}" if params.get("options") else ours
    extra: dict[str, Any] = {"options": options}
    if "connect_timeout" not in params:
        extra["connect_timeout"] = max(2, int(timeout))  # libpq's minimum is 2 s
    return pq_conninfo.make_conninfo(url, **extra)
