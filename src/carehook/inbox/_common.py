"""Small helpers the inbox adapters share: storage URLs, UTC timestamps, row mapping."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from carehook.errors import ConfigError
from carehook.inbox.port import AuditRow, EventRow, RequestRow

_PG_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


def utcnow() -> datetime:
    """The default clock of the stores."""
    return datetime.now(UTC)


def is_postgres(url: str) -> bool:
    """True for a PostgreSQL storage URL."""
    return url.startswith(_PG_SCHEMES)


def is_sqlite(url: str) -> bool:
    """True for a SQLite storage URL."""
    return url.startswith("sqlite:")


def sqlalchemy_url(url: str) -> str:
    """The URL SQLAlchemy needs: PostgreSQL through psycopg 3, SQLite as given."""
    if is_postgres(url):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if is_sqlite(url):
        return url
    raise ConfigError("storage URL must start with sqlite:/// or postgresql://")


def libpq_url(url: str) -> str:
    """The URL libpq (psycopg) understands: no SQLAlchemy driver suffix."""
    if not is_postgres(url):
        raise ConfigError("not a postgresql:// URL")
    return "postgresql://" + url.split("://", 1)[1]


def sqlite_path(url_or_path: str | os.PathLike[str]) -> Path:
    """The database file named by ``sqlite:///relative``, ``sqlite:////absolute`` or a path."""
    text = os.fspath(url_or_path)
    if not text.startswith("sqlite:"):
        return Path(text)
    if not text.startswith("sqlite:///") or text in ("sqlite:///", "sqlite:///:memory:"):
        # the writer thread and the readers need one shared file, never a private memory db
        raise ConfigError("a SQLite storage URL must name a file: sqlite:///path/to/carehook.db")
    return Path(text[len("sqlite:///") :].split("?", 1)[0])


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{path}"


def ensure_private_file(path: Path) -> None:
    """Create ``path`` (and its directory) readable by its owner only: it holds PHI metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    # SQLite creates its -wal and -shm files with the database file's mode, so this covers them
    os.chmod(path, 0o600)


def as_utc(dt: datetime) -> datetime:
    """``dt`` in UTC; a naive datetime is taken to be UTC already."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt if dt.tzinfo is UTC else dt.astimezone(UTC)


def to_text(dt: datetime) -> str:
    """The fixed-width text form of a timestamp on SQLite (text order is time order)."""
    return as_utc(dt).isoformat(timespec="microseconds")


def opt_text(dt: datetime | None) -> str | None:
    """:func:`to_text`, passing None through."""
    return None if dt is None else to_text(dt)


def from_text(value: str) -> datetime:
    """Parse :func:`to_text`'s form back into an aware UTC datetime."""
    return datetime.fromisoformat(value)


def opt_from_text(value: str | None) -> datetime | None:
    """:func:`from_text`, passing None through."""
    return None if value is None else datetime.fromisoformat(value)


def utc_or_none(value: datetime | None) -> datetime | None:
    """``value`` converted to UTC (PostgreSQL hands back the session's time zone)."""
    return None if value is None else as_utc(value)


# The column lists the row mappers below expect, shared by both SQL adapters.
EVENT_COLUMNS = (
    "id, source, vendor, event_id, type, subject, status, attempts, received_at, occurred_at,"
    " secret_index, next_attempt_at, payload IS NULL"
)
REQUEST_COLUMNS = "id, source, received_at, remote_addr, size, status, outcome, cause, event_id"
AUDIT_COLUMNS = "id, at, actor, action, event_pk, detail"


def event_row(r: Sequence[Any], from_db: Any) -> EventRow:
    """An EventRow from a row of :data:`EVENT_COLUMNS`; ``from_db`` converts timestamps."""
    return EventRow(
        id=r[0],
        source=r[1],
        vendor=r[2],
        event_id=r[3],
        type=r[4],
        subject=r[5],
        status=r[6],
        attempts=r[7],
        received_at=from_db(r[8]),
        occurred_at=None if r[9] is None else from_db(r[9]),
        secret_index=r[10],
        next_attempt_at=None if r[11] is None else from_db(r[11]),
        payload_purged=bool(r[12]),
    )


def request_row(r: Sequence[Any], from_db: Any) -> RequestRow:
    """A RequestRow from a row of :data:`REQUEST_COLUMNS`."""
    return RequestRow(
        id=r[0],
        source=r[1],
        received_at=from_db(r[2]),
        remote_addr=r[3],
        size=r[4],
        status=r[5],
        outcome=r[6],
        cause=r[7],
        event_id=r[8],
    )


def audit_row(r: Sequence[Any], from_db: Any) -> AuditRow:
    """An AuditRow from a row of :data:`AUDIT_COLUMNS`."""
    return AuditRow(id=r[0], at=from_db(r[1]), actor=r[2], action=r[3], event_id=r[4], detail=r[5])


def initial_status(handled: bool) -> str:
    """The status of a newly accepted event."""
    return "pending" if handled else "unhandled"


def event_filter_sql(
    source: str | None, status: str | None, type_: str | None, placeholder: str
) -> tuple[str, list[Any]]:
    """The WHERE clause (possibly empty) and its parameters for an EventFilter."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("source", source), ("status", status), ("type", type_)):
        if value is not None:
            clauses.append(f"{column} = {placeholder}")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
