"""SQLite's side of the one inbox: one file, one writer thread with group commit, reader threads.

Writes go through :class:`~carehook.inbox._sqlite_writer.GroupCommitWriter`: one thread, one
connection, one transaction and one fsync per batch of concurrent calls. A worker write (claim,
step, complete ...) is a function run on that connection (``write``), so claims are serialised
by construction, without any locking of ours. Ingest (``ingest``) keeps the writer's raw-driver
path: one ``INSERT`` into a TEMP view per batch, whose trigger writes events and request-log
rows. It is kept because it is faster than running the shared statements per operation: one
statement per batch is one GIL hand-off instead of several per row (the writer's docs explain
the measurement; ``bench/ingest.py`` measures the ingest path). The writer commits ingest before
worker writes, so acknowledgements never wait behind claims.

Reads run on a small thread pool, each thread with its own read-only connection: WAL lets them
read while the writer commits.

Checkpoints are taken out of the commits. SQLite's automatic checkpoint runs in the committing
connection once the WAL passes 1,000 pages, so every so often one batch's acknowledgements
would wait for the whole WAL to be copied into the database file and that file fsynced. The
writer's connection has ``wal_autocheckpoint = 0``; a checkpoint thread with its own connection
runs ``PRAGMA wal_checkpoint(PASSIVE)`` every ``checkpoint_seconds`` while there were commits:
the bulk of the copying and the fsync, while the writer goes on committing (PASSIVE blocks
neither writers nor readers). That alone never lets the WAL
restart under a steady load: by the time it is done, new frames were appended, and SQLite only
restarts a WAL that is wholly checkpointed (measured: 3.5 GB of WAL after two minutes at 2,000
events/s). So once the WAL holds ``checkpoint_bytes``, the thread asks the writer for the tail
(``request_checkpoint``): a PASSIVE
checkpoint on the writer's connection between two batches, copying only what was appended
meanwhile; the next write restarts the WAL, and ``journal_size_limit`` truncates a WAL that grew
large. The file stays near ``checkpoint_bytes``.

Other processes on the same file (``carehook worker``, CLI commands) write through their own
writer; every writer takes the file lock ``<database>-lock`` around each transaction, so
another process's commit is waited for without the busy handler's sleeps (the writer's docs).
A worker process of its own (``carehook worker``: ``watch_seconds`` given) hears of their
commits from its writer, which reads ``PRAGMA data_version`` on its connection every
``watch_seconds`` (20 ms), between transactions: on that connection it changes only when another
connection committed, and a change raises the work signal. So an event stored by ``serve
--no-worker``, or a replay made with the CLI, is claimed within a tick, not at the worker's next
poll. ``serve``'s own worker does not watch (its ingress wakes it, and a writer waking 50 times a
second is a cost beside the hot path), so a CLI replay waits for its ``poll_seconds``.

Durability: WAL with ``synchronous=FULL``; the database file (and
so its -wal and -shm files) is mode 0600. Timestamps are fixed-width ISO-8601 UTC text (see
:mod:`carehook.inbox.schema`); :class:`_Tx` converts datetimes on the way in.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import structlog

from carehook.errors import ConfigError, StorageUnavailable
from carehook.inbox import _common as c
from carehook.inbox import migrate
from carehook.inbox._signal import WorkSignal
from carehook.inbox._sqlite_writer import ACCEPT, CALL, LOG_REQUEST, GroupCommitWriter, translate

T = TypeVar("T")
_log = structlog.get_logger(component="carehook.inbox")

#: the named partial indexes a claim must use: without statistics the planner would take the
#: status index and sort, which grows with the backlog
HINTS: Final = {
    "active": "INDEXED BY ix_events_active_subject_id",
    "due": "INDEXED BY ix_events_due",
    "running": "INDEXED BY ix_events_running",
    "by_id": "NOT INDEXED",  # the claim's UPDATE of listed ids: rowid lookups only
}


def _db(params: Sequence[Any]) -> list[Any]:
    return [c.to_text(p) if isinstance(p, datetime) else p for p in params]


class _Tx:
    """The shared statements' view of a sqlite3 connection (datetimes stored as text)."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.conn.execute(sql, _db(params)).fetchall()

    def row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql, _db(params)).fetchone()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, _db(params)).rowcount

    def send(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql, _db(params))

    def many(self, sql: str, seq: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, [_db(p) for p in seq])


class SqliteDialect:
    """How the one inbox runs on a SQLite file."""

    name: Final = "sqlite"
    hints: Final = HINTS
    greatest: Final = "max"
    share: Final = ""  # the writer serialises every write: no row locks
    ts = staticmethod(c.from_text)

    def __init__(
        self, url_or_path: str | os.PathLike[str], *, auto_migrate: bool = True,
        busy_timeout: float = 5.0, batch_cap: int = 512, readers: int = 2,
        checkpoint_seconds: float = 0.25, checkpoint_bytes: int = 4 << 20,
        watch_seconds: float = 0.0,
    ) -> None:  # fmt: skip
        self.path: Path = c.sqlite_path(url_or_path)
        self.url = c.sqlite_url(self.path)
        self._auto_migrate = auto_migrate
        self._busy_timeout = busy_timeout
        self._batch_cap = batch_cap
        self._readers = readers
        self._writer: GroupCommitWriter | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._read_lock = threading.Lock()
        self._checkpointer: _Checkpointer | None = None
        self._checkpoint_seconds = checkpoint_seconds
        self._checkpoint_bytes = checkpoint_bytes
        self._watch_seconds = watch_seconds
        self._signal: WorkSignal | None = None

    @property
    def checkpoints(self) -> int:
        """Checkpoints the checkpoint thread has run since open (instrumentation)."""
        return 0 if self._checkpointer is None else self._checkpointer.runs

    @property
    def commits(self) -> int:
        """Transactions committed by the writer since open (instrumentation)."""
        return 0 if self._writer is None else self._writer.commits

    async def open(self, signal: WorkSignal) -> None:
        """Create the file (0600), migrate or check the schema, start the writer."""
        if self._writer is not None:
            return
        self._signal = signal
        self._writer = await asyncio.to_thread(self._prepare)
        self._writer.start()
        conn = await asyncio.to_thread(self._connect)
        self._checkpointer = _Checkpointer(
            conn, self._writer, self._checkpoint_seconds, self._checkpoint_bytes
        )
        self._checkpointer.start()
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
            conn = self._connect()
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpoint thread's job
            conn.execute(f"PRAGMA journal_size_limit = {4 * self._checkpoint_bytes}")
            lock = self.path.with_name(self.path.name + "-lock")
            c.ensure_private_file(lock)
            return GroupCommitWriter(
                conn, cap=self._batch_cap, lock_path=lock,
                watch=(self._watch_seconds, self._others_committed) if self._watch_seconds > 0
                else None,
            )  # fmt: skip
        except OSError as exc:
            raise StorageUnavailable(f"cannot create the SQLite file: {exc.strerror}") from exc
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def _others_committed(self) -> None:
        """The writer saw another process's commit (``watch_seconds``): wake the workers."""
        if self._signal is not None:
            self._signal.notify()

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
        # isolation_level=None: autocommit, the writer opens its own transactions;
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
        writer, pool, checkpointer = self._writer, self._pool, self._checkpointer
        self._writer = self._pool = self._checkpointer = None
        if checkpointer is not None:
            await asyncio.to_thread(checkpointer.stop)
        if writer is not None:
            await asyncio.to_thread(writer.stop)
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True)
        with self._read_lock:
            for conn in self._read_conns:
                conn.close()
            self._read_conns.clear()
        self._local = threading.local()

    # -- running statements ------------------------------------------------------------------

    async def ingest(self, event: tuple[Any, ...] | None, request: tuple[Any, ...]) -> Any:
        """Write an event (or None) and its request-log row in the next group commit; for an
        event, whether it was new."""
        if event is None:
            return await self._live_writer().submit(LOG_REQUEST, (), tuple(_db(request)))
        return await self._live_writer().submit(ACCEPT, tuple(_db(event)), tuple(_db(request)))

    async def write(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(tx)`` in the writer thread, in the next calls' transaction."""
        result: T = await self._live_writer().submit(CALL, (lambda conn: fn(_Tx(conn)),), ())
        return result

    async def read(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(tx)`` on a reader thread's connection."""
        pool = self._pool
        if pool is None:
            raise StorageUnavailable("the SQLite inbox is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, functools.partial(self._run_read, fn))

    def _run_read(self, fn: Callable[[Any], T]) -> T:
        try:
            conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._connect(read_only=True)
                self._local.conn = conn
                with self._read_lock:
                    self._read_conns.append(conn)
            return fn(_Tx(conn))
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def _live_writer(self) -> GroupCommitWriter:
        writer = self._writer
        if writer is None or not writer.alive():
            raise StorageUnavailable("the SQLite inbox is not open")
        return writer

    # -- what differs from PostgreSQL --------------------------------------------------------

    @staticmethod
    def locked(sql: str) -> str:
        """A claim's candidate query as run: the writer serialises claims, nothing to lock."""
        return sql

    @staticmethod
    def wake(tx: Any) -> None:
        """Tell other processes of new work: nothing to send (a separate worker watches the
        file's ``data_version``; module docs)."""

    async def wait_for_work(self, signal: WorkSignal, timeout: float) -> None:  # noqa: ASYNC109
        """Return when this process commits new work, another process commits anything (with
        ``watch_seconds``, module docs), or after ``timeout`` seconds."""
        await signal.wait(timeout)


class _Checkpointer:
    """The thread that checkpoints the WAL while the writer keeps committing (module docs)."""

    def __init__(
        self, conn: sqlite3.Connection, writer: GroupCommitWriter, every: float, over: int
    ) -> None:
        self._conn = conn
        self._writer = writer
        self._every = every
        self._over = over
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="carehook-sqlite-checkpoint")
        self.runs = 0

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """End the thread and close its connection (blocking)."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        seen = self._writer.commits
        try:
            page = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
            while not self._stopping.wait(self._every):
                commits = self._writer.commits
                if commits != seen:
                    seen = commits
                    self._checkpoint(page)
        finally:
            self._conn.close()

    def _checkpoint(self, page: int) -> None:
        try:
            _busy, frames, _copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # the next tick tries again; the writer is unaffected
            _log.warning("sqlite.checkpoint_failed", error=translate(exc).args[0])
            return
        self.runs += 1
        if frames * page >= self._over:
            self._writer.request_checkpoint()  # the tail, so that the WAL restarts
