"""The inbox: the storage port and its SQLite and PostgreSQL adapters.

:func:`open_store` picks the adapter from the URL; the store it returns is not connected yet:
``await store.open()`` (or ``async with store:``) before use, ``await store.close()`` after.

    sqlite:///var/lib/carehook/carehook.db     embedded default, migrates itself on open
    postgresql://carehook@db:5432/carehook      shared; migrates on open only if auto_migrate
    memory://                                   the in-memory fake (tests, demos)

Adapters are imported lazily so that importing the port pulls in no database driver.
"""

from __future__ import annotations

from carehook.crypto import KeyRing
from carehook.errors import ConfigError
from carehook.inbox._common import is_postgres, is_sqlite
from carehook.inbox.port import InboxStore

__all__ = ["InboxStore", "open_store"]


def open_store(url: str, keyring: KeyRing, *, auto_migrate: bool | None = None) -> InboxStore:
    """The (unopened) inbox adapter for ``url``.

    ``auto_migrate=None`` means the adapter's default: migrate SQLite on open, never PostgreSQL
    (a shared database is upgraded on purpose, with ``carehook db upgrade``). When migrations are
    off, ``open()`` raises ConfigError if the schema is behind.
    """
    if is_sqlite(url):
        from carehook.inbox.sqlite import SqliteInbox

        return SqliteInbox(
            url, keyring, auto_migrate=True if auto_migrate is None else auto_migrate
        )
    if is_postgres(url):
        from carehook.inbox.postgres import PostgresInbox

        return PostgresInbox(url, keyring, auto_migrate=bool(auto_migrate))
    if url.startswith("memory:"):
        from carehook.testing import InMemoryInbox

        return InMemoryInbox(keyring)
    raise ConfigError("storage URL must start with sqlite:///, postgresql:// or memory://")
