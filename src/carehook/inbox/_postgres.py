"""PostgreSQL's side of the one inbox: for more than one process or machine.

The shared statements (``?`` placeholders, rewritten to psycopg's ``%s`` once per statement)
run on a small pool of our own: threads, each borrowing a connection for one transaction
(``write``/``read``). Our own because an outage must be answered at once and the return of the
database noticed at once: a borrow that finds no idle connection connects on the spot (refused
at once while the server is down), a connection found dead before COMMIT was sent is dropped
with every idle one (they died with it) and the transaction retried once on a fresh one, and a
borrow waits at most ``timeout`` for a free slot. Nothing backs off: the first request after
the restart reconnects.

What truly differs from SQLite: a claim locks its candidates ``FOR UPDATE SKIP LOCKED`` and
takes a transaction-scoped advisory lock per subject (``locked``): the row lock keeps two
claims off one event; the advisory lock serialises the claims of one subject, and the claim's
UPDATE re-checks the head-of-subject rule with a fresh snapshot taken after the lock was
granted (PostgreSQL makes a transaction visible before it releases its locks), so two events
of one subject never run at once even when a replay or a late insert changes the head between
two claims' snapshots. New work is announced with ``pg_notify`` at COMMIT (``wake``) and heard
on a LISTEN connection (``wait_for_work``). Ingest is group-committed on the event loop: up to
``flushers`` tasks each write what is queued as ONE statement in autocommit (:data:`_INGEST`:
``unnest`` inserts of events and request-log rows and the NOTIFY in one round trip; events
sorted by key so concurrent batches lock the unique index in one order), each on an async
connection of its own, on the event loop: no pool thread, so no GIL hand-off per batch.
Worker writes are group-committed the same way (``write``: up to 64 calls per transaction, as
in SQLite's writer), so a worker pays a fraction of a COMMIT per event, and each such
transaction runs in pipeline mode: a statement whose result nobody reads (``tx.send``) goes out
with the next one that is read, so a completion costs three round trips, not six.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

import psycopg
from psycopg import conninfo as pq_conninfo

from carehook.errors import (
    CarehookError,
    ConfigError,
    StorageError,
    StorageUnavailable,
    UnstorableValue,
)
from carehook.inbox import _common as c
from carehook.inbox import migrate
from carehook.inbox._signal import WorkSignal
from carehook.inbox.port import OUTCOME_DUPLICATE

T = TypeVar("T")

#: the LISTEN/NOTIFY channel of "there may be work"
CHANNEL: Final = "carehook_work"
#: first key of our advisory locks ("care"), the second is the subject's hash
_LOCK_SPACE: Final = 0x63617265
_OUTCOME: Final = 5  # position of ``outcome`` in a request-log row
_EVENT_COLUMNS: Final = 11  # columns of an event row
#: worker calls sharing one transaction. Large on purpose: the calls run in threads, and more
#: threads running statements side by side only queue for the GIL (measured: 8 per
#: transaction is slower than 64)
_CALL_CAP: Final = 64

#: one batch of ingest in ONE statement, run in autocommit: one round trip where BEGIN, two
#: INSERTs, a NOTIFY and COMMIT took five. The events go in first (``ev``); each request-log
#: row of a batch's first delivery of a key says ``duplicate`` when its event was already
#: stored (not RETURNING from ``ev``); ``wake`` notifies the workers once (at COMMIT) when an
#: event waits to run.
_INGEST: Final = f"""
WITH ev AS (
  INSERT INTO events (source, vendor, event_id, type, subject, occurred_at, received_at, payload,
                      secret_index, status, attempts, next_attempt_at)
  SELECT u.source, u.vendor, u.event_id, u.etype, u.subject, u.occurred_at, u.received_at,
         u.payload, u.secret_index, u.status, 0, u.next_attempt_at
  FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::timestamptz[],
              ?::timestamptz[], ?::bytea[], ?::int4[], ?::text[], ?::timestamptz[])
    AS u(source, vendor, event_id, etype, subject, occurred_at, received_at, payload,
         secret_index, status, next_attempt_at)
  ON CONFLICT (source, event_id) DO NOTHING
  RETURNING source, event_id, status = 'pending' AS pending
), rq AS (
  INSERT INTO requests (source, received_at, remote_addr, size, status, outcome, cause, event_id)
  SELECT r.source, r.received_at, r.remote_addr, r.size, r.status,
         CASE WHEN r.first AND NOT EXISTS (SELECT 1 FROM ev WHERE ev.source = r.source
                                           AND ev.event_id = r.event_id)
              THEN '{OUTCOME_DUPLICATE}' ELSE r.outcome END,
         r.cause, r.event_id
  FROM unnest(?::text[], ?::timestamptz[], ?::text[], ?::int4[], ?::int4[], ?::text[],
              ?::text[], ?::text[], ?::bool[])
    AS r(source, received_at, remote_addr, size, status, outcome, cause, event_id, first)
), wake AS (
  SELECT pg_notify('{CHANNEL}', '') FROM ev WHERE ev.pending LIMIT 1
)
SELECT ev.source, ev.event_id, (SELECT count(*) FROM wake) FROM ev
"""  # noqa: S608 (two constants, no value)


@functools.cache
def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


#: :data:`_INGEST` for psycopg, its arrays sent in binary (``%b``). In text format psycopg
#: quotes and escapes every element in Python, each payload as hex: measured 59 to 74 µs of
#: client CPU per event in batches of 32, against 11 to 16 µs in binary (and half the wall
#: time per batch), which made the array dumper the top frame of ``serve`` on PostgreSQL.
_INGEST_BINARY: Final = _pg(_INGEST).replace("%s", "%b")


class _Tx:
    """The shared statements' view of a psycopg connection and one transaction's state;
    ``notify``: send one NOTIFY before COMMIT (however many calls of the transaction asked).

    In a worker transaction the connection is in pipeline mode (``pipeline``): a statement is
    sent without waiting for its answer, and the answers are read when a caller needs one
    (``rows``, ``row``, ``run``'s count) or at COMMIT. So the statements whose results nobody
    reads (``send``) cost no round trip of their own.
    """

    __slots__ = ("committing", "conn", "cur", "notify", "pipeline")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        #: one cursor for the whole transaction: a new one per statement (``conn.execute``)
        #: cost about 20 µs of CPU each in a loop of one statement (47 against 67 µs a
        #: statement; in pipeline mode 25 against 48 µs); a worker draining Abridge events
        #: used 2 to 3 % less CPU per event, within the runs' noise
        self.cur = conn.cursor()
        self.notify = False
        #: in pipeline mode (a worker transaction)
        self.pipeline: psycopg.Pipeline | None = None
        #: COMMIT is on its way: a lost connection may have committed, so no retry
        self.committing = False

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.cur.execute(_pg(sql), params).fetchall()

    def row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.cur.execute(_pg(sql), params).fetchone()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.cur.execute(_pg(sql), params)
        if self.pipeline is not None:
            self.pipeline.sync()  # the count is known once the answer is in
        return self.cur.rowcount

    def send(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.cur.execute(_pg(sql), params)

    def many(self, sql: str, seq: Sequence[Sequence[Any]]) -> None:
        self.cur.executemany(_pg(sql), seq)


def translate(exc: BaseException) -> CarehookError:
    """Our error for a driver (or unexpected) exception; the caller raises it ``from exc``."""
    if isinstance(exc, UnicodeEncodeError):
        return UnstorableValue("a text field is not valid UTF-8 (a lone surrogate)")
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, psycopg.DataError) or sqlstate.startswith("22"):
        return UnstorableValue(f"a value the database refuses ({sqlstate or 'data error'})")
    what = f"postgres: {type(exc).__name__}" + (f" ({sqlstate})" if sqlstate else "")
    # OperationalError covers lost connections, lock timeouts, disk full, serialization
    # failures and deadlocks: all worth a retry by the sender
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | OSError):
        return StorageUnavailable(what)
    return StorageError(what)


@dataclass(slots=True)
class _Op:
    """One queued ingest write."""

    event: tuple[Any, ...] | None
    request: tuple[Any, ...]
    future: asyncio.Future[Any]


class PostgresDialect:
    """How the one inbox runs on PostgreSQL."""

    name: Final = "postgres"
    hints: Final = {"active": "", "due": "", "running": "", "by_id": ""}
    greatest: Final = "GREATEST"
    share: Final = " FOR SHARE"  # a fenced step holds the event's row until COMMIT
    ts = staticmethod(c.as_utc)

    def __init__(
        self, url: str, *, auto_migrate: bool = False, max_size: int = 10, flushers: int = 4,
        batch_cap: int = 512, timeout: float = 1.0, lock_timeout: float = 5.0,
        call_flushers: int = 4,
    ) -> None:  # fmt: skip
        self.url = url
        self._conninfo = _conninfo(c.libpq_url(url), lock_timeout)
        self._auto_migrate = auto_migrate
        self._size = max(max_size, flushers + call_flushers + 2)
        self._call_flushers = call_flushers
        self._flushers = flushers
        self._batch_cap = batch_cap
        self._timeout = timeout
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self._size)
        self._threads: ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[_Op] | None = None
        self._calls: asyncio.Queue[tuple[Callable[[Any], Any], asyncio.Future[Any]]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._signal: WorkSignal | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening: asyncio.Event | None = None
        #: committed group-commit transactions since open (instrumentation)
        self.commits = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self, signal: WorkSignal) -> None:
        """Migrate (if asked) or check the schema, connect, start the flushers."""
        if self._threads is not None:
            return
        if self._auto_migrate:
            await asyncio.to_thread(migrate.upgrade, self.url)
        elif not await asyncio.to_thread(migrate.is_current, self.url):
            raise ConfigError("database schema is not current: run `carehook db upgrade`")
        self._signal = signal
        self._threads = ThreadPoolExecutor(self._size, thread_name_prefix="carehook-pg")
        self._queue = asyncio.Queue()
        self._calls = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._flusher(), name=f"carehook-pg-flusher-{i}")
            for i in range(self._flushers)
        ] + [
            asyncio.create_task(self._call_flusher(), name=f"carehook-pg-calls-{i}")
            for i in range(self._call_flushers)
        ]
        try:
            await self.read(lambda tx: tx.row("SELECT 1"))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Commit what is queued, stop the flushers and the listener, disconnect."""
        queue, calls, tasks, threads = self._queue, self._calls, self._tasks, self._threads
        self._closing = True  # refuse new writes; those already queued still commit
        try:
            await self._stop_listener()
            if queue is not None:
                await queue.join()
            if calls is not None:
                await calls.join()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if threads is not None:
                await asyncio.to_thread(threads.shutdown, True)
            with self._lock:
                idle, self._idle = self._idle, []
            for conn in idle:
                conn.close()
        finally:
            self._threads, self._queue, self._calls, self._tasks = None, None, None, []
            self._closing = False

    # -- running statements ------------------------------------------------------------------

    async def read(self, fn: Callable[[Any], T], *, pipelined: bool = False) -> T:
        """Run ``fn(tx)`` in a transaction of its own on a pooled connection (``pipelined``:
        in pipeline mode, as the worker's calls are)."""
        threads = self._threads
        if threads is None:
            raise StorageUnavailable("the PostgreSQL inbox is not open")
        run = functools.partial(self._run, fn, pipelined=pipelined)
        return await asyncio.get_running_loop().run_in_executor(threads, run)

    async def write(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(tx)`` in the next calls' transaction (group commit, as on SQLite: ``fn``
        raises our errors only before it writes; a driver error retries each call alone)."""
        calls = self._calls
        if calls is None:
            raise StorageUnavailable("the PostgreSQL inbox is not open")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        calls.put_nowait((fn, fut))
        result: T = await fut
        return result

    async def _call_flusher(self) -> None:
        assert self._calls is not None
        calls = self._calls
        while True:
            batch = [await calls.get()]
            while len(batch) < _CALL_CAP and not calls.empty():
                batch.append(calls.get_nowait())
            try:
                await self._run_calls(batch)
            finally:
                for _ in batch:
                    calls.task_done()

    async def _run_calls(
        self, batch: list[tuple[Callable[[Any], Any], asyncio.Future[Any]]]
    ) -> None:
        try:
            calls = functools.partial(_each, [fn for fn, _ in batch])
            outcomes = await self.read(calls, pipelined=True)
        except Exception as exc:  # every future must resolve, whatever went wrong
            if isinstance(exc, StorageUnavailable) or len(batch) == 1:
                for _fn, fut in batch:
                    if not fut.done():
                        fut.set_exception(type(exc)(*exc.args))
            else:
                for op in batch:  # isolate the one bad call from its neighbours
                    await self._run_calls([op])
            return
        for (_fn, fut), (value, error) in zip(batch, outcomes, strict=True):
            if fut.done():
                continue
            if error is None:
                fut.set_result(value)
            else:
                fut.set_exception(error)

    def _run(self, fn: Callable[[Any], T], *, pipelined: bool = False) -> T:
        if not self._slots.acquire(timeout=self._timeout):
            raise StorageUnavailable("postgres: no free connection in time")
        try:
            for retry in (False, True):
                conn = self._borrow()
                tx = _Tx(conn)
                try:
                    result = _transaction(tx, fn, pipelined)
                except BaseException as exc:
                    self._give_back(conn)
                    if isinstance(exc, CarehookError):
                        raise
                    dead = isinstance(exc, psycopg.OperationalError) and conn.broken
                    if dead and not tx.committing and not retry:
                        self._drop_idle()  # they died with it; COMMIT was never sent: retry
                        continue
                    raise translate(exc) from exc
                self._give_back(conn)
                return result
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._slots.release()

    def _borrow(self) -> psycopg.Connection[Any]:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            return psycopg.connect(self._conninfo)
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        if not conn.broken and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()  # a no-op after COMMIT; ends a failed transaction
                with self._lock:
                    self._idle.append(conn)
                return
        with contextlib.suppress(psycopg.Error):
            conn.close()

    def _drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    # -- ingest (group commit) ---------------------------------------------------------------

    async def ingest(self, event: tuple[Any, ...] | None, request: tuple[Any, ...]) -> Any:
        """Write an event (or None) and its request-log row in the next group commit; for an
        event, whether it was new."""
        queue = self._queue
        if queue is None or self._closing:
            raise StorageUnavailable("the PostgreSQL inbox is not open")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Op(event, request, fut))
        return await fut

    async def _flusher(self) -> None:
        """Take everything queued (up to the cap) and commit it as one statement, forever, on
        a connection of this task's own, on the event loop (no pool thread: no GIL hand-off)."""
        assert self._queue is not None
        queue = self._queue
        own = _Own()
        try:
            while True:
                batch = [await queue.get()]
                while len(batch) < self._batch_cap and not queue.empty():
                    batch.append(queue.get_nowait())
                try:
                    await self._commit(batch, own)
                finally:
                    for _ in batch:
                        queue.task_done()
        finally:
            if own.conn is not None:
                with contextlib.suppress(psycopg.Error):
                    await own.conn.close()

    async def _commit(self, batch: list[_Op], own: _Own) -> None:
        try:
            results = await self._ingest(batch, own)
        except Exception as exc:  # every future must resolve, whatever went wrong
            if isinstance(exc, StorageUnavailable) or len(batch) == 1:
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(type(exc)(*exc.args))
            else:
                for op in batch:  # isolate the one bad operation from its neighbours
                    await self._commit([op], own)
            return
        self.commits += 1
        for op, result in zip(batch, results, strict=True):
            if not op.future.done():  # a cancelled caller's row is committed all the same
                op.future.set_result(result)

    async def _ingest(self, batch: list[_Op], own: _Own) -> list[Any]:
        """Run :data:`_INGEST` for ``batch`` in autocommit on ``own``'s connection (connected
        on the spot: refused at once while the server is down). A connection found dead is
        replaced and the statement sent once more: in autocommit the lost one may have
        committed, and then its retry stores nothing new (ON CONFLICT) and answers duplicate,
        the request-log rows twice."""
        params, keys = _ingest_params(batch)
        for retry in (False, True):
            conn = own.conn
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = own.conn = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True
                    )
                cur = await conn.execute(_INGEST_BINARY, params)
                inserted = {(r[0], r[1]) for r in await cur.fetchall()}
            except (psycopg.Error, OSError) as exc:
                dead = conn is not None and conn.broken
                if dead and not retry:
                    own.conn = None
                    continue
                raise translate(exc) from exc
            return _ingest_results(keys, inserted)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- what differs from SQLite ------------------------------------------------------------

    @staticmethod
    def locked(sql: str) -> str:
        """A claim's candidate query (``id, subject`` rows) with its row and subject locks."""
        return (
            f"WITH cand AS MATERIALIZED ({sql} FOR UPDATE OF e SKIP LOCKED) SELECT id, subject"  # noqa: S608
            f" FROM cand WHERE pg_try_advisory_xact_lock({_LOCK_SPACE}, hashtext(subject))"
            " ORDER BY id"
        )

    @staticmethod
    def wake(tx: Any) -> None:
        """Tell every listening process (at COMMIT, once per transaction) of possible work."""
        tx.notify = True

    async def wait_for_work(self, signal: WorkSignal, timeout: float) -> None:  # noqa: ASYNC109
        """Return on a NOTIFY on :data:`CHANNEL` (from any process), or after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        listening = self._start_listener()
        if not listening.is_set():  # the first wait: do not miss what comes before LISTEN
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listening.wait(), timeout)
        await signal.wait(deadline - loop.time())

    def _start_listener(self) -> asyncio.Event:
        if self._listening is None:
            self._listening = asyncio.Event()
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="carehook-pg-listen")
        return self._listening

    async def _listen(self) -> None:
        """Hold a LISTEN connection; turn its notifications into the in-process signal;
        reconnect after a failure at most 0.5 s later (the waits poll meanwhile)."""
        assert self._listening is not None
        assert self._signal is not None
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    self._signal.notify()  # whatever was sent while nobody listened
                    async for _note in conn.notifies():
                        self._signal.notify()
            except (psycopg.Error, OSError):
                pass
            await asyncio.sleep(0.5)

    async def _stop_listener(self) -> None:
        task, self._listener, self._listening = self._listener, None, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


_NOTIFY: Final = f"SELECT pg_notify('{CHANNEL}', '')"


def _transaction(tx: _Tx, fn: Callable[[Any], T], pipelined: bool) -> T:
    """``fn(tx)``, the NOTIFY it asked for, COMMIT; ``tx.committing`` once COMMIT is on its way.

    ``pipelined``: with the connection in pipeline mode (see :class:`_Tx`). A failure inside
    is raised only after pipeline mode has ended: psycopg logs, as a warning quoting the
    server's message (which may quote a value), an error ending pipeline mode while another
    one is on its way out of the block, so no error ever leaves the block.
    """
    conn = tx.conn
    failure: BaseException | None = None
    result: Any = None
    try:
        with conn.pipeline() if pipelined else contextlib.nullcontext() as tx.pipeline:
            try:
                result = fn(tx)
                if tx.notify:
                    tx.send(_NOTIFY)
                tx.committing = True
                conn.commit()
            except BaseException as exc:  # raised below, once pipeline mode has ended
                failure = exc
    except psycopg.Error as exc:  # ending pipeline mode failed: the same failure, or a later
        failure = failure or exc
    if failure is not None:
        raise failure
    return cast(T, result)


def _each(fns: list[Callable[[Any], Any]], tx: _Tx) -> list[tuple[Any, BaseException | None]]:
    """Run each call in the one transaction; our errors (raised before writing) are its own."""
    out: list[tuple[Any, BaseException | None]] = []
    for fn in fns:
        try:
            out.append((fn(tx), None))
        except CarehookError as exc:
            out.append((None, exc))
    return out


def _ingest_params(batch: list[_Op]) -> tuple[list[Any], list[tuple[str, str] | None]]:
    """:data:`_INGEST`'s parameters for ``batch`` (the first delivery of each key is a
    candidate; a later one of the same batch is a duplicate already), and each operation's key."""
    rows: dict[tuple[str, str], tuple[Any, ...]] = {}
    requests: list[tuple[Any, ...]] = []
    keys: list[tuple[str, str] | None] = []
    for op in batch:
        req, event = op.request, op.event
        if event is None:
            requests.append((*req, False))
            keys.append(None)
            continue
        key = (event[0], event[2])
        keys.append(key)
        if key in rows:  # a later delivery of a key in this batch: the first one wins
            requests.append((*req[:_OUTCOME], OUTCOME_DUPLICATE, *req[_OUTCOME + 1 :], False))
        else:
            rows[key] = event
            requests.append((*req, True))
    ordered = [rows[key] for key in sorted(rows)]  # one lock order for every flusher
    events = _columns(ordered) if ordered else [[] for _ in range(_EVENT_COLUMNS)]
    return [*events, *_columns(requests)], keys


def _ingest_results(
    keys: list[tuple[str, str] | None], inserted: set[tuple[str, str]]
) -> list[Any]:
    """One result per operation: whether its event was new (None for a bare request-log row)."""
    results: list[Any] = []
    seen: set[tuple[str, str]] = set()
    for key in keys:
        if key is None:
            results.append(None)
            continue
        results.append(key in inserted and key not in seen)
        seen.add(key)
    return results


@dataclass(slots=True)
class _Own:
    """An ingest flusher's own connection (None until the first batch, or after it died)."""

    conn: psycopg.AsyncConnection[Any] | None = None


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(col) for col in zip(*rows, strict=True)]


def _conninfo(url: str, lock_timeout: float) -> str:
    """The URL plus our session settings, keeping any ``options`` the operator gave."""
    params = pq_conninfo.conninfo_to_dict(url)
    # a request must not hang behind a lock: after lock_timeout it gets a 503 and retries later
    ours = f"-c lock_timeout={int(lock_timeout * 1000)} -c timezone=UTC"
    options = f"{params['options']} {ours}" if params.get("options") else ours
    extra: dict[str, Any] = {"options": options}
    if "connect_timeout" not in params:
        extra["connect_timeout"] = 2  # libpq's minimum
    return pq_conninfo.make_conninfo(url, **extra)
