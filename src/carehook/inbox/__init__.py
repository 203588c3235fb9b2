"""The inbox: the storage port and its one SQL implementation on SQLite or PostgreSQL.

:func:`open_store` picks the dialect from the URL; the store it returns is not connected yet:
``await store.open()`` (or ``async with store:``) before use, ``await store.close()`` after.

    sqlite:///var/lib/carehook/carehook.db     embedded default, migrates itself on open
    postgresql://carehook@db:5432/carehook      shared; migrates on open only if auto_migrate

There is no in-memory store: a gateway that acknowledges a delivery must have committed it to
disk. Tests use :func:`carehook.testing.temp_store` (SQLite in a temporary directory).
Dialects are imported lazily so that importing the port pulls in no database driver.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from carehook.crypto import KeyRing
from carehook.errors import ConfigError
from carehook.inbox._common import is_postgres, is_sqlite, utcnow
from carehook.inbox.port import InboxStore, Store
from carehook.inbox.store import SqlStore

__all__ = ["InboxStore", "SqlStore", "Store", "open_store"]

MEMORY_REFUSED = (
    "storage URL memory:// is not supported: a gateway that acknowledges deliveries must commit"
    " them to disk; use sqlite:///path/to/carehook.db or postgresql://… (tests:"
    " carehook.testing.temp_store)"
)


def open_store(
    url: str, keyring: KeyRing, *, auto_migrate: bool | None = None,
    clock: Callable[[], datetime] = utcnow, **options: float,
) -> SqlStore:  # fmt: skip
    """The (unopened) inbox for ``url``; ``options`` tune the dialect (timeouts, sizes).

    ``auto_migrate=None`` means the default: migrate SQLite on open, never PostgreSQL (a shared
    database is upgraded on purpose, with ``carehook db upgrade``). When migrations are off,
    ``open()`` raises ConfigError if the schema is behind.
    """
    if is_sqlite(url):
        from carehook.inbox._sqlite import SqliteDialect

        migrate_sqlite = True if auto_migrate is None else auto_migrate
        sqlite = SqliteDialect(url, auto_migrate=migrate_sqlite, **options)  # type: ignore[arg-type]
        return SqlStore(sqlite, keyring, clock=clock)
    if is_postgres(url):
        from carehook.inbox._postgres import PostgresDialect

        pg = PostgresDialect(url, auto_migrate=bool(auto_migrate), **options)  # type: ignore[arg-type]
        return SqlStore(pg, keyring, clock=clock)
    if url.startswith("memory:"):
        raise ConfigError(MEMORY_REFUSED)
    raise ConfigError("storage URL must start with sqlite:/// or postgresql://")
