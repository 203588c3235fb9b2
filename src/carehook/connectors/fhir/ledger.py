"""The FHIR write ledger: what carehook is creating, or has created, in each EHR.

A create that cannot rest on the server's conditional create (Epic, Oracle Health) records its
intent (destination, resource type, identifier) durably *before* the POST and the server's id
*after* it (:class:`~carehook.connectors.fhir.writer.IdempotentEhr` does both). A retry after a
crash between the two finds the intent, searches by identifier, and creates only when nothing
matches; a retry after the id was recorded reads the resource by id (no search index needed).

One implementation over both databases: SQLAlchemy Core on the storage URL, the table
``fhir_writes`` of :mod:`carehook.inbox.schema` (migration ``0005_ehr``). Calls run in a thread
(``asyncio.to_thread``): a ledger write happens once per created resource, far off the hot path.
``memory://`` storage gets a private in-memory SQLite database. Timestamps are stored in UTC.
Database errors become :class:`~carehook.errors.RetryableError`: the step is tried again later,
and nothing is POSTed without its intent on record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
import sqlalchemy.exc

from carehook.errors import RetryableError
from carehook.inbox.schema import fhir_writes

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WriteKey:
    """One resource carehook creates: where, which type, which identifier."""

    destination: str
    resource_type: str
    system: str
    value: str


@dataclass(frozen=True, slots=True)
class WriteEntry:
    """What the ledger knows: when the create was intended, and the server's id once known."""

    intent_at: datetime
    server_id: str | None = None


class WriteLedger(Protocol):
    """The port :class:`~carehook.connectors.fhir.writer.IdempotentEhr` writes through."""

    async def get(self, key: WriteKey) -> WriteEntry | None:
        """The entry of ``key``, if any."""
        ...

    async def intend(self, key: WriteKey, now: datetime) -> None:
        """Record (durably) that ``key`` is about to be created; forgets any earlier id."""
        ...

    async def written(self, key: WriteKey, server_id: str, now: datetime) -> None:
        """Record the server's id of ``key``."""
        ...

    async def forget(self, key: WriteKey) -> None:
        """Drop the intent of ``key`` (its POST was answered with a refusal: nothing exists)."""
        ...


def _engine_url(url: str) -> str:
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("memory://"):
        return "sqlite://"
    return url


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class SqlWriteLedger:
    """The ledger in the carehook database (SQLite or PostgreSQL)."""

    def __init__(self, storage_url: str) -> None:
        url = _engine_url(storage_url)
        if url == "sqlite://":
            self._engine = sa.create_engine(url, poolclass=sa.StaticPool,
                                            connect_args={"check_same_thread": False})  # fmt: skip
            fhir_writes.create(self._engine, checkfirst=True)
        elif url.startswith("sqlite"):
            self._engine = sa.create_engine(url, pool_size=1, max_overflow=2,
                                            connect_args={"timeout": 10})  # fmt: skip
        else:
            self._engine = sa.create_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True)

    def close(self) -> None:
        """Release the connections."""
        self._engine.dispose()

    async def get(self, key: WriteKey) -> WriteEntry | None:
        """The entry of ``key``, if any."""
        return await self._run(self._get, key)

    async def intend(self, key: WriteKey, now: datetime) -> None:
        """Record that ``key`` is about to be created (committed before this returns)."""
        await self._run(self._upsert, key, {"intent_at": _utc(now), "server_id": None,
                                            "written_at": None})  # fmt: skip

    async def written(self, key: WriteKey, server_id: str, now: datetime) -> None:
        """Record the server's id of ``key``."""
        await self._run(self._upsert, key, {"server_id": server_id, "written_at": _utc(now)},
                        now)  # fmt: skip

    async def forget(self, key: WriteKey) -> None:
        """Drop the entry of ``key``."""
        await self._run(self._delete, key)

    # -- in a thread ---------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise RetryableError(f"fhir write ledger: {type(exc).__name__}") from exc

    @staticmethod
    def _where(key: WriteKey) -> sa.ColumnElement[bool]:
        c = fhir_writes.c
        return sa.and_(c.destination == key.destination, c.resource_type == key.resource_type,
                       c.system == key.system, c.value == key.value)  # fmt: skip

    def _get(self, key: WriteKey) -> WriteEntry | None:
        query = sa.select(fhir_writes.c.intent_at, fhir_writes.c.server_id).where(self._where(key))
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else WriteEntry(_utc(row.intent_at), row.server_id)

    def _upsert(
        self, key: WriteKey, values: dict[str, object], now: datetime | None = None
    ) -> None:
        """UPDATE, else INSERT, in one transaction: portable SQL only. (Two racing INSERTs of
        one key cannot happen in practice, events of one subject never run at once; if they
        did, the loser's IntegrityError is retried as a step failure.)"""
        with self._engine.begin() as conn:
            if conn.execute(sa.update(fhir_writes).where(self._where(key))
                            .values(**values)).rowcount:  # fmt: skip
                return
            row = {"destination": key.destination, "resource_type": key.resource_type,
                   "system": key.system, "value": key.value, **values}  # fmt: skip
            row.setdefault("intent_at", _utc(now or datetime.now(UTC)))
            conn.execute(sa.insert(fhir_writes).values(**row))

    def _delete(self, key: WriteKey) -> None:
        with self._engine.begin() as conn:
            conn.execute(sa.delete(fhir_writes).where(self._where(key)))
