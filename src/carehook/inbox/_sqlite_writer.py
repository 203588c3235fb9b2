"""Group commit for SQLite: one writer thread, one connection, one statement per batch.

Callers on the event loop put ``(kind, params, params, future, loop)`` on a queue and await the
future. The writer takes the first item, drains whatever else is queued (up to ``cap``), writes
it all with ONE ``INSERT`` in autocommit mode, so one transaction and one fsync for the whole
batch, then resolves the futures with one ``call_soon_threadsafe`` per loop. The queue hand-off
is the only thread hop on the request path.

Why one statement: Python's sqlite3 releases the GIL around every statement step and must take
it back afterwards; under load the event loop holds the GIL and each take-back waits (often
milliseconds). ``BEGIN; SELECT; INSERT; INSERT; COMMIT`` is five waits per batch, one statement
is one. The statement inserts the batch's rows into a TEMP view whose INSTEAD OF trigger writes
each row's event (``ON CONFLICT DO NOTHING``), its request-log row (outcome ``duplicate`` when
the event insert changed nothing, read with ``changes()``) and audit rows. Which events were
new is read off ``total_changes``; only when some were not does a second query say which.

A statement either commits whole or not at all, so a failed batch leaves nothing behind. When
the failure is transient (locked, I/O, disk full) every caller gets
:class:`StorageUnavailable`; when it is not, the batch is replayed one operation at a time, so
one bad row cannot fail its neighbours.

The worker's writes (claim, record a step, complete ...) are ``CALL`` operations: a function
run on the writer's connection. The calls drained with a batch run after its group-committed
rows, up to ``call_cap`` of them together in ONE ``BEGIN IMMEDIATE`` transaction (one fsync for
all of them), and the queue is drained of ingest before each such transaction (ingest first:
an acknowledgement never waits behind a backlog of worker writes); each call's
result or error goes to its own caller. A call may raise one of our errors (``LeaseLost``) only
*before* it writes anything, so the others can still commit; a driver error rolls the whole
transaction back and the calls are retried one transaction each, to isolate the bad one.
Claims are serialised by construction: one thread, one transaction at a time.

Other processes may write the same file: a ``carehook worker`` beside ``serve --no-worker``,
or a CLI command (replay, resolve, purge). SQLite serialises them with its own lock, but a
writer that finds that lock taken sleeps in its busy handler, 1, 2, 5, 10 ... 100 ms between
tries, so an acknowledgement waited tens to hundreds of milliseconds behind another process's
transaction (measured, ``serve --no-worker`` plus ``carehook worker``: ack p99 about 570 ms
flat out, 336 and 459 ms paced at 3,904/s; README, "A worker in a second process on SQLite").
Given a ``lock_path``, every write transaction first takes an exclusive
``flock`` on that file (``<database>-lock``), which the kernel hands to the next waiter the
moment it is released; SQLite's busy handler is then only a fallback for writers that do not
take it (the ``sqlite3`` shell). ``flock`` locks belong to the open file description, so the
POSIX locks SQLite holds on the database file itself are untouched. ``fcntl.flock`` lets go of
the GIL around the call, which costs the writer two more waits for the event loop per batch
(measured: (a') 10,804 and 9,782 req/s before, 9,516 and 8,501 with it); so the uncontended
case calls libc's ``flock`` with ``LOCK_NB`` through ``ctypes.PyDLL``, which keeps the GIL, and
only a lock held by another process is waited for with ``fcntl.flock``, the GIL let go. One
process alone pays two uncontended system calls per transaction.

Given ``watch=(seconds, callback)``, the writer also notices other processes' commits: every
``seconds``, between transactions (waking for it when idle), it reads ``PRAGMA data_version``,
which on its own connection changes only when another connection committed, and calls
``callback`` (from this thread) when it changed. ``carehook worker`` wakes on it.
"""

# S608 is off for this module: its SQL is built from constant fragments and placeholder counts
# only; every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import fcntl
import functools
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from carehook.errors import CarehookError, StorageError, StorageUnavailable
from carehook.inbox.port import OUTCOME_DUPLICATE

ACCEPT: Final = 0
LOG_REQUEST: Final = 1
AUDIT: Final = 2
#: run ``a[0](connection)`` in the writer thread, inside the calls' transaction
CALL: Final = 3

MAX_ROWS: Final = 512  # x 26 parameters per row stays under SQLite's 32766

_EVENT_COLS: Final = (
    "source, vendor, event_id, type, subject, occurred_at, received_at, payload, secret_index,"
    " status, next_attempt_at"
)
_REQUEST_COLS: Final = "source, received_at, remote_addr, size, status, outcome, cause, event_id"
_AUDIT_COLS: Final = "at, actor, action, event_pk, detail"
_EVENT_WIDTH: Final = 11
_REQUEST_WIDTH: Final = 8
_AUDIT_WIDTH: Final = 5
_NO_EVENT: Final = (None,) * _EVENT_WIDTH
_NO_REQUEST: Final = (None,) * _REQUEST_WIDTH
_NO_AUDIT: Final = (None,) * _AUDIT_WIDTH
_ROW_WIDTH: Final = 2 + _EVENT_WIDTH + _REQUEST_WIDTH + _AUDIT_WIDTH


def _new(prefix: str, cols: str) -> str:
    return ", ".join(f"NEW.{prefix}{c.strip()}" for c in cols.split(","))


def _aliases(prefix: str, cols: str) -> str:
    return ", ".join(f"NULL AS {prefix}{c.strip()}" for c in cols.split(","))


#: per-connection TEMP objects the writer creates: a row of the view is one queued operation
SETUP_SQL: Final = (
    "CREATE TEMP VIEW carehook_write AS SELECT NULL AS kind, NULL AS candidate, "
    f"{_aliases('e_', _EVENT_COLS)}, {_aliases('r_', _REQUEST_COLS)}, "
    f"{_aliases('a_', _AUDIT_COLS)}",
    "CREATE TEMP TRIGGER carehook_write INSTEAD OF INSERT ON carehook_write BEGIN "
    # the first delivery of a key in this batch ("candidate") may be new
    f"INSERT INTO events ({_EVENT_COLS}, attempts) SELECT {_new('e_', _EVENT_COLS)}, 0"
    " WHERE NEW.candidate ON CONFLICT (source, event_id) DO NOTHING; "
    # changes() is what the INSERT just above did: 0 means the event was already there
    f"INSERT INTO requests ({_REQUEST_COLS}) SELECT NEW.r_source, NEW.r_received_at,"
    " NEW.r_remote_addr, NEW.r_size, NEW.r_status,"
    f" CASE WHEN NEW.kind = {ACCEPT} AND NOT (NEW.candidate AND changes() = 1)"
    f" THEN '{OUTCOME_DUPLICATE}' ELSE NEW.r_outcome END, NEW.r_cause, NEW.r_event_id"
    f" WHERE NEW.kind IN ({ACCEPT}, {LOG_REQUEST}); "
    f"INSERT INTO audit ({_AUDIT_COLS}) SELECT {_new('a_', _AUDIT_COLS)}"
    f" WHERE NEW.kind = {AUDIT}; "
    "END",
)


def _values(width: int, rows: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return ", ".join([row] * rows)


@functools.cache
def write_sql(rows: int) -> str:
    """The one statement that writes up to ``rows`` operations (NULL rows are padding)."""
    return (
        f"INSERT INTO carehook_write SELECT * FROM (VALUES {_values(_ROW_WIDTH, rows)})"
        " WHERE column1 IS NOT NULL"
    )


@functools.cache
def ours_not_stored_sql(rows: int) -> str:
    """Of the (index, source, event_id, ciphertext) rows given, those whose event is not ours.

    A ciphertext has a fresh random nonce, so the stored payload equals ours exactly when this
    batch inserted the row.
    """
    # CROSS JOIN pins the VALUES as the outer loop, so each pair is an index search
    return (
        f"SELECT v.column1 FROM (VALUES {_values(4, rows)}) AS v CROSS JOIN events AS e"
        " ON e.source = v.column2 AND e.event_id = v.column3 WHERE e.payload IS NOT v.column4"
    )


def _padded(rows: list[tuple[Any, ...]], width: int) -> tuple[list[Any], int]:
    """The rows flattened into parameters, padded with NULL rows to a power-of-two count.

    Padding keeps the number of distinct statements small (they stay prepared in the
    connection's statement cache).
    """
    size = 1 << (len(rows) - 1).bit_length()
    params = [value for row in rows for value in row]
    params.extend([None] * (width * (size - len(rows))))
    return params, size


# Primary result codes that mean "cannot commit now, try later" (sqlite3.h): BUSY, LOCKED,
# NOMEM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL. Anything else is a bug or a broken schema.
_TRANSIENT_CODES: Final = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
# fallback for a driver that does not expose the code
_TRANSIENT_WORDS: Final = ("locked", "busy", "disk i/o", "disk is full", "readonly", "read-only")

#: libc's flock(2), called with the GIL held (PyDLL): for calls that never block
_flock_nb = ctypes.PyDLL(None, use_errno=True).flock
_flock_nb.argtypes = (ctypes.c_int, ctypes.c_int)
_flock_nb.restype = ctypes.c_int

_STOP: Final = object()
#: queued by the checkpoint thread: run a PASSIVE checkpoint on the writer's connection next
_CHECKPOINT: Final = object()

Op = tuple[int, tuple[Any, ...], tuple[Any, ...], "asyncio.Future[Any]", asyncio.AbstractEventLoop]
_Settled = list[tuple["asyncio.Future[Any]", Any, BaseException | None]]


def translate(exc: BaseException) -> StorageError:
    """Our error for a sqlite3 (or unexpected) exception; the caller raises it ``from exc``."""
    if not isinstance(exc, sqlite3.Error):
        return StorageError(f"sqlite writer failed: {type(exc).__name__}")
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        transient = code & 0xFF in _TRANSIENT_CODES
    else:
        transient = isinstance(exc, sqlite3.OperationalError) and any(
            word in str(exc).lower() for word in _TRANSIENT_WORDS
        )
    cls = StorageUnavailable if transient else StorageError
    # the result code's name, never the driver's message: a trigger's or an extension's
    # message may quote a value (PostgreSQL's translate keeps only the SQLSTATE, likewise)
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    return cls(f"sqlite: {name}")


class GroupCommitWriter:
    """The one thread that writes to a SQLite inbox, committing queued writes in batches."""

    def __init__(
        self, conn: sqlite3.Connection, *, cap: int = MAX_ROWS, call_cap: int = 32,
        lock_path: Path | None = None, watch: tuple[float, Callable[[], None]] | None = None,
    ) -> None:  # fmt: skip
        self._conn = conn
        #: (seconds, callback): look for other processes' commits that often (module docs)
        self._watch = watch
        self._version: int | None = None
        self._next_look = 0.0
        #: the cross-process write lock's file (module docs); None: this process alone writes
        self._lock_fd = (
            None if lock_path is None
            else os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        )  # fmt: skip
        for stmt in SETUP_SQL:
            conn.execute(stmt)
        self._cur = conn.cursor()
        self._cap = max(1, min(cap, MAX_ROWS))
        self._call_cap = max(1, call_cap)
        self._calls: collections.deque[Op] = collections.deque()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="carehook-sqlite-writer")
        self._stopping = False
        self._running = False
        #: committed transactions so far (tests prove that concurrent calls share commits)
        self.commits = 0
        #: checkpoints the writer ran between batches (``request_checkpoint``)
        self.checkpoints = 0

    def start(self) -> None:
        """Start the writer thread."""
        self._running = True
        self._thread.start()

    def alive(self) -> bool:
        """True while the writer accepts work (a flag, not Thread.is_alive: this is hot)."""
        return self._running and not self._stopping

    def submit(self, kind: int, a: tuple[Any, ...], b: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue one write; the future resolves once the transaction holding it committed."""
        if self._stopping:
            raise StorageUnavailable("the SQLite inbox is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.put((kind, a, b, fut, loop))
        return fut

    def request_checkpoint(self) -> None:
        """Ask for a PASSIVE checkpoint on the writer's own connection, between two batches
        (any thread). While it runs nothing is appended to the WAL, so it can finish the
        checkpoint thread's work and the next write restarts the WAL from its beginning."""
        if not self._stopping:
            self._queue.put(_CHECKPOINT)

    def stop(self) -> None:
        """Commit what is queued, then end the thread and close the connection (blocking)."""
        self._stopping = True
        self._queue.put(_STOP)
        self._thread.join()

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self._watch is not None:
                self._look_for_others()
            while self._take_and_commit():
                if self._watch is not None:
                    self._look_for_others()
        finally:
            self._running = False
            self._fail_leftovers()
            self._conn.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the cross-process write lock (if any) for one transaction."""
        fd = self._lock_fd
        if fd is None:
            yield
            return
        if _flock_nb(fd, fcntl.LOCK_EX | fcntl.LOCK_NB) != 0:
            # held by another process (or an error, which this call raises): wait, GIL let go
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if _flock_nb(fd, fcntl.LOCK_UN) != 0:
                fcntl.flock(fd, fcntl.LOCK_UN)  # raises the error

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` under the write lock; rolled back (still
        under the lock) if anything in it raises."""
        conn = self._conn
        with self._exclusive():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    def _take_and_commit(self) -> bool:
        """Commit everything queued for ingest, then at most ``call_cap`` worker calls in one
        transaction; False once told to stop.

        Ingest has priority: the queue is drained before every transaction of calls, so an
        acknowledgement waits behind at most one such transaction, never behind a backlog of
        claims and completions.
        """
        batch: list[Op] = []
        go_on = True
        checkpoint = False
        item: Any = self._wait() if not self._calls else self._next_nowait()
        while item is not None:
            if item is _STOP:
                go_on = False
                break
            if item is _CHECKPOINT:
                checkpoint = True
            elif item[0] == CALL:
                self._calls.append(item)
            else:
                batch.append(item)
                if len(batch) >= self._cap:
                    self._commit(batch)
                    batch = []
            item = self._next_nowait()
        if batch:
            self._commit(batch)
        if checkpoint:
            self._checkpoint()
        while self._calls:
            n = min(len(self._calls), self._call_cap)
            self._run_calls([self._calls.popleft() for _ in range(n)])
            if go_on:
                break  # look at the queue again first; at stop, finish every call
        return go_on

    def _checkpoint(self) -> None:
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:  # the checkpoint thread asks again on its next tick
            return
        self.checkpoints += 1

    def _wait(self) -> Any:
        """The next queued item; None if a look for other processes' commits is due first."""
        if self._watch is None:
            return self._queue.get()
        try:
            return self._queue.get(timeout=max(0.0, self._next_look - time.monotonic()))
        except queue.Empty:
            return None

    def _look_for_others(self) -> None:
        """Call the watch's callback if another connection committed since the last look."""
        assert self._watch is not None
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + self._watch[0]
        try:
            version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:  # the next look asks again; the worker still polls
            return
        if self._version is not None and version != self._version:
            self._watch[1]()
        self._version = version

    def _next_nowait(self) -> Any:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def _run_calls(self, calls: list[Op]) -> None:
        """Run the calls in one transaction; each caller gets its own result or error."""
        conn = self._conn
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            with self._transaction():
                for op in calls:
                    try:
                        outcomes.append((op[1][0](conn), None))
                    except CarehookError as exc:  # raised before the call wrote anything
                        outcomes.append((None, exc))
        except BaseException as exc:  # every future must resolve, whatever went wrong
            error = translate(exc)
            if isinstance(error, StorageUnavailable) or len(calls) == 1:
                _settle(calls, None, error, exc)
            else:
                for op in calls:  # isolate the one bad call from its neighbours
                    self._run_calls([op])
            return
        self.commits += 1
        _settle_each(calls, outcomes)

    def _commit(self, batch: list[Op]) -> None:
        try:
            results = self._apply(batch)
        except BaseException as exc:  # every future must resolve, whatever went wrong
            error = translate(exc)
            if isinstance(error, StorageUnavailable) or len(batch) == 1:
                _settle(batch, None, error, exc)
            else:
                for op in batch:  # isolate the one bad operation from its neighbours
                    self._commit([op])
            return
        self.commits += 1
        _settle(batch, results, None, None)

    def _apply(self, batch: list[Op]) -> list[Any]:
        """Write the batch in one autocommit statement; one result per operation."""
        rows: list[tuple[Any, ...]] = []
        candidates: dict[tuple[str, str], int] = {}  # key -> index of its first delivery
        for i, (kind, a, b, _fut, _loop) in enumerate(batch):
            if kind == ACCEPT:
                first = candidates.setdefault((a[0], a[2]), i) == i
                rows.append((kind, first, *a, *b, *_NO_AUDIT))
            elif kind == LOG_REQUEST:
                rows.append((kind, False, *_NO_EVENT, *b, *_NO_AUDIT))
            else:
                rows.append((kind, False, *_NO_EVENT, *_NO_REQUEST, *a))
        params, size = _padded(rows, _ROW_WIDTH)
        before = self._conn.total_changes
        with self._exclusive():
            self._cur.execute(write_sql(size), params)
        # every row writes a request-log or an audit row; every new event one more row
        events_new = self._conn.total_changes - before - len(batch)
        new = set(candidates.values())
        if events_new != len(candidates):
            new -= self._not_ours(batch, list(new))
        return [
            (i in new) if kind == ACCEPT else None
            for i, (kind, _a, _b, _fut, _loop) in enumerate(batch)
        ]

    def _not_ours(self, batch: list[Op], indexes: list[int]) -> set[int]:
        """Which of these first deliveries found their event already stored (rare)."""
        keys = [(i, batch[i][1][0], batch[i][1][2], batch[i][1][7]) for i in indexes]
        params, size = _padded(keys, 4)
        return {row[0] for row in self._cur.execute(ours_not_stored_sql(size), params)}

    def _fail_leftovers(self) -> None:
        """Fail whatever raced onto the queue after the stop marker."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP and item is not _CHECKPOINT:
                _settle([item], None, StorageUnavailable("the SQLite inbox is closed"), None)


def _settle(
    batch: list[Op],
    results: list[Any] | None,
    error: StorageError | None,
    cause: BaseException | None,
) -> None:
    """Resolve the batch's futures on their loops: one wake-up per loop, not per future."""
    by_loop: dict[asyncio.AbstractEventLoop, _Settled] = {}
    for i, (_kind, _a, _b, fut, loop) in enumerate(batch):
        exc: BaseException | None = None
        if error is not None:
            # one exception object per caller: each raises it with its own traceback
            exc = type(error)(*error.args)
            exc.__cause__ = cause
        by_loop.setdefault(loop, []).append((fut, None if results is None else results[i], exc))
    for loop, settled in by_loop.items():
        # a closed loop has nobody left awaiting these futures
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, settled)


def _settle_each(batch: list[Op], outcomes: list[tuple[Any, BaseException | None]]) -> None:
    """Resolve each future with its own result or error, one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, _Settled] = {}
    for (_kind, _a, _b, fut, loop), (value, exc) in zip(batch, outcomes, strict=True):
        by_loop.setdefault(loop, []).append((fut, value, exc))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, settled)


def _resolve(settled: _Settled) -> None:
    for fut, value, exc in settled:
        if fut.done():  # the caller was cancelled; its row is committed all the same
            continue
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)
