"""Small helpers of the inbox: storage URLs, UTC timestamps, row mapping, the SQL fragments
built from filters (``?`` placeholders: :mod:`carehook.inbox._postgres` rewrites them), and
the one rule of what text the store accepts."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from carehook.crypto import KeyRing, subject_aad
from carehook.errors import ConfigError
from carehook.inbox.port import AuditRow, EventRow, RequestRow
from carehook.inbox.work import (
    AttemptRow,
    ReplayFilter,
    ReviewRow,
    StepRow,
    TimelineRow,
)

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
    # Open-and-close only a file that does not exist yet: closing any descriptor of a database
    # file drops every POSIX lock this process's SQLite connections hold on it (a known SQLite
    # corruption pattern), so an existing file is only chmod-ed.
    if not path.exists():
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


def from_text(value: str | datetime) -> datetime:
    """Parse :func:`to_text`'s form back into an aware UTC datetime."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


# The column lists the row mappers below expect, used on both databases.
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
    return AuditRow(id=r[0], at=from_db(r[1]), actor=r[2], action=r[3], event_pk=r[4], detail=r[5])


def initial_status(handled: bool) -> str:
    """The status of a newly accepted event."""
    return "pending" if handled else "unhandled"


def event_filter_sql(
    source: str | None, status: str | None, type_: str | None, placeholder: str = "?"
) -> tuple[str, list[Any]]:
    """The WHERE clause (possibly empty) and its parameters for an EventFilter."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("source", source), ("status", status), ("type", type_)):
        if value is not None:
            clauses.append(f"{column} = {placeholder}")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


# --- the work half ---------------------------------------------------------------------------

#: statuses whose events are finished with: their payload may be purged, their key expire
FINISHED_STATUSES = ("done", "dead", "unhandled")
#: statuses a replay leaves alone (running, never run, or nothing to run)
NOT_REPLAYABLE = ("processing", "unhandled", "pending")

STEP_COLUMNS = "name, outcome, coalesce(result, ''), finished_at"
ATTEMPT_COLUMNS = (
    "number, started_at, finished_at, outcome, error_class, error_message, next_attempt_at"
)
TIMELINE_COLUMNS = "id, subject, event_pk, type, state, detail, at"
#: what claim() reads back from each event it took
CLAIM_COLUMNS = (
    "id, source, vendor, event_id, type, subject, attempts, received_at, payload, occurred_at"
)


def step_row(r: Sequence[Any], from_db: Any) -> StepRow:
    """A StepRow from a row of :data:`STEP_COLUMNS`."""
    return StepRow(name=r[0], outcome=r[1], detail=r[2], finished_at=from_db(r[3]))


def attempt_row(r: Sequence[Any], from_db: Any) -> AttemptRow:
    """An AttemptRow from a row of :data:`ATTEMPT_COLUMNS`."""
    return AttemptRow(
        number=r[0],
        started_at=from_db(r[1]),
        finished_at=None if r[2] is None else from_db(r[2]),
        outcome=r[3],
        error_class=r[4],
        error_message=r[5],
        next_attempt_at=None if r[6] is None else from_db(r[6]),
    )


def timeline_row(r: Sequence[Any], from_db: Any) -> TimelineRow:
    """A TimelineRow from a row of :data:`TIMELINE_COLUMNS`."""
    return TimelineRow(
        id=r[0], subject=r[1], event_pk=r[2], type=r[3], state=r[4], detail=r[5], at=from_db(r[6])
    )


def dead_owner(owner: str | None, host: str, alive_pids: Sequence[int]) -> bool:
    """True when ``owner`` (``"<host>:<pid>:<random>"``) runs on ``host`` under a dead pid."""
    if owner is None:
        return False
    parts = owner.rsplit(":", 2)
    return len(parts) == 3 and parts[0] == host and parts[1] not in {str(p) for p in alive_pids}


def replay_filter_sql(flt: ReplayFilter, placeholder: str = "?") -> tuple[str, list[Any]]:
    """The WHERE clause (never empty) and its parameters choosing the events a replay takes."""
    not_replayable = ", ".join(f"'{s}'" for s in NOT_REPLAYABLE)
    clauses = [f"status NOT IN ({not_replayable})"]
    params: list[Any] = []
    if flt.event_pks:
        clauses.append(f"id IN ({', '.join([placeholder] * len(flt.event_pks))})")
        params.extend(flt.event_pks)
    for column, value in (("source", flt.source), ("type", flt.type), ("status", flt.status)):
        if value is not None:
            clauses.append(f"{column} = {placeholder}")
            params.append(value)
    if flt.since is not None:
        clauses.append(f"received_at >= {placeholder}")
        params.append(as_utc(flt.since))
    return " WHERE " + " AND ".join(clauses), params


def purge_payloads_sql(
    now: datetime, retention_days: Mapping[str, int], default_days: int, placeholder: str = "?"
) -> tuple[str, list[Any]]:
    """The condition (and parameters) on ``source, received_at`` of a payload past retention.

    The first term, against the latest cutoff of all, lets the received_at index narrow the
    scan; the CASE then applies each source's own cutoff.
    """
    cutoffs = {s: now - timedelta(days=d) for s, d in retention_days.items()}
    default = now - timedelta(days=default_days)
    latest = max([default, *cutoffs.values()])
    if not cutoffs:
        return f"received_at < {placeholder}", [default]
    whens = " ".join(f"WHEN {placeholder} THEN {placeholder}" for _ in cutoffs)
    params: list[Any] = [latest]
    for source, cutoff in cutoffs.items():
        params.extend((source, cutoff))
    params.append(default)
    cond = (
        f"received_at < {placeholder} AND received_at < CASE source {whens} ELSE {placeholder} END"
    )
    return cond, params


# -- workflow data and reviews -------------------------------------------------------------

REVIEW_COLUMNS = (
    "id, source, subject, event_pk, kind, severity, summary, dedup_key, status, created_at,"
    " resolved_at, resolved_by, note"
)


def review_row(r: Sequence[Any], from_db: Any) -> ReviewRow:
    """A ReviewRow from a row of :data:`REVIEW_COLUMNS`."""
    return ReviewRow(
        id=r[0], source=r[1], subject=r[2], event_pk=r[3], kind=r[4], severity=r[5],
        summary=r[6], dedup_key=r[7], status=r[8], created_at=from_db(r[9]),
        resolved_at=None if r[10] is None else from_db(r[10]), resolved_by=r[11], note=r[12],
    )  # fmt: skip


def seal_data(keyring: KeyRing, subject: str, data: Mapping[str, object]) -> bytes:
    """A subject's working data as stored: JSON, encrypted, bound to the subject."""
    text = json.dumps(data, separators=(",", ":"), sort_keys=True, default=str)
    return keyring.encrypt(text.encode(), subject_aad(subject))


def open_data(keyring: KeyRing, subject: str, blob: bytes | None) -> dict[str, object]:
    """The working data :func:`seal_data` stored (``{}`` for none)."""
    if blob is None:
        return {}
    value = json.loads(keyring.decrypt(bytes(blob), subject_aad(subject)))
    return value if isinstance(value, dict) else {}


# -- what text the store accepts -------------------------------------------------------------


def unstorable(*texts: str | None) -> str | None:
    """Why one of ``texts`` cannot be stored, or None.

    One rule for both databases (PostgreSQL refuses NUL in text; neither driver can encode a
    lone surrogate), checked before the driver sees the value, so SQLite refuses what
    PostgreSQL refuses and the refusal is a :class:`carehook.errors.UnstorableValue`.
    """
    for text in texts:
        if text is None:
            continue
        if "\x00" in text:
            return "a text field holds a NUL character"
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError:
                return "a text field is not valid UTF-8 (a lone surrogate)"
    return None


def storable(text: str) -> str:
    """``text`` with what the store refuses escaped (for request-log rows, which must be
    written whatever the request held)."""
    if unstorable(text) is None:
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()
