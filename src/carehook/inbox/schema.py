"""The inbox schema as SQLAlchemy Core tables: the one description of what the migrations build.

SQLAlchemy is used for the schema and the migrations only; the one store speaks SQL through the
drivers on the request path. ``tests/contract/test_schema.py`` proves that migrating an empty
database yields exactly these tables, on SQLite and on PostgreSQL.

Timestamps are timezone-aware UTC. PostgreSQL stores them as ``timestamptz``. SQLite has no
date type, so there the columns hold fixed-width ISO-8601 text in UTC,
``YYYY-MM-DDTHH:MM:SS.ffffff+00:00`` (see :func:`carehook.inbox._sql.to_text`): fixed width makes
text order equal time order, so ``ORDER BY`` and ``next_attempt_at <= ?`` work on the text.
"""

from __future__ import annotations

import sqlalchemy as sa

#: deterministic constraint names, so a later migration can name what it alters on both dialects
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# A 64-bit id on PostgreSQL (BIGSERIAL); on SQLite only a plain INTEGER PRIMARY KEY becomes the
# rowid alias that autoincrements, hence the variant.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def _id() -> sa.Column[int]:
    return sa.Column("id", BigId, primary_key=True, autoincrement=True)


def _event_fk(*, nullable: bool, ondelete: str = "CASCADE") -> sa.Column[int]:
    return sa.Column(
        "event_pk", BigId, sa.ForeignKey("events.id", ondelete=ondelete), nullable=nullable
    )


#: the statuses that hold back later events of a subject (carehook.inbox.work)
ACTIVE_STATUSES = ("pending", "processing", "retrying")
_ACTIVE = sa.text("status IN ('pending', 'processing', 'retrying')")
_WAITING = sa.text("status IN ('pending', 'retrying')")
_RUNNING = sa.text("status = 'processing'")


requests = sa.Table(
    "requests",
    metadata,
    _id(),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("received_at", Timestamp, nullable=False),
    sa.Column("remote_addr", sa.Text, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("cause", sa.Text, nullable=False, server_default=sa.text("''")),
    sa.Column("event_id", sa.Text, nullable=True),
    sa.Index(None, "received_at"),
    sa.Index(None, "source", "id"),
    # rejected requests only, by time: the operator's rejection counts (migration 0006_admin)
    sa.Index(
        "ix_requests_rejected_received_at",
        "received_at",
        sqlite_where=sa.text("outcome = 'rejected'"),
        postgresql_where=sa.text("outcome = 'rejected'"),
    ),
)

events = sa.Table(
    "events",
    metadata,
    _id(),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("vendor", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("occurred_at", Timestamp, nullable=True),
    sa.Column("received_at", Timestamp, nullable=False),
    # AES-GCM ciphertext (carehook.crypto); NULL once retention purged it
    sa.Column("payload", sa.LargeBinary, nullable=True),
    sa.Column("payload_purged_at", Timestamp, nullable=True),
    sa.Column("secret_index", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("next_attempt_at", Timestamp, nullable=True),
    sa.Column("lease_owner", sa.Text, nullable=True),
    sa.Column("lease_expires_at", Timestamp, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    # the dedup key; it outlives the payload so a late duplicate is still recognised
    sa.UniqueConstraint("source", "event_id"),
    sa.Index(None, "status", "next_attempt_at"),
    sa.Index(None, "subject", "id"),
    sa.Index(None, "received_at"),
    # the unfinished events only, by subject: claim finds each subject's head here, and the
    # head-of-subject probes never wade through a subject's finished history
    sa.Index(
        "ix_events_active_subject_id",
        "subject",
        "id",
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    ),
    # the waiting events in order of due time: a claim walks the earliest due ones and stops
    # after ``limit`` heads, so its cost does not grow with the backlog (0004)
    sa.Index(
        "ix_events_due", "next_attempt_at", "id", sqlite_where=_WAITING, postgresql_where=_WAITING
    ),
    # the events in flight by subject: "another event of this subject runs" is one probe (0004)
    sa.Index(
        "ix_events_running",
        "subject",
        "lease_expires_at",
        sqlite_where=_RUNNING,
        postgresql_where=_RUNNING,
    ),
    # event ids are shown to operators and referenced by audit rows: never reuse one on SQLite
    sqlite_autoincrement=True,
)

steps = sa.Table(
    "steps",
    metadata,
    _id(),
    _event_fk(nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("result", sa.Text, nullable=True),
    sa.Column("finished_at", Timestamp, nullable=False),
    sa.UniqueConstraint("event_pk", "name"),
)

attempts = sa.Table(
    "attempts",
    metadata,
    _id(),
    _event_fk(nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp, nullable=True),
    sa.Column("error_class", sa.Text, nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("next_attempt_at", Timestamp, nullable=True),
    # the event's attempt count when this try began (a replay starts over at 1)
    sa.Column("number", sa.Integer, nullable=False, server_default=sa.text("0")),
    # running, done, retrying, dead, released, expired (carehook.inbox.work.AttemptRow)
    sa.Column("outcome", sa.Text, nullable=False, server_default=sa.text("'running'")),
    sa.Index(None, "event_pk"),
)

subjects = sa.Table(
    "subjects",
    metadata,
    sa.Column("subject", sa.Text, primary_key=True),
    # the subject's current state as text (the state of its latest timeline entry, written
    # with the step that produced it); text is the same on both dialects
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    # the workflows' working data for the subject (consult progress, lock, attendance ...):
    # JSON, AES-GCM encrypted with the subject as associated data; written with a step
    sa.Column("data", sa.LargeBinary, nullable=True),
)

timeline = sa.Table(
    "timeline",
    metadata,
    _id(),
    sa.Column("subject", sa.Text, nullable=False),
    # no foreign key: a subject's history outlives the events that wrote it (purge deletes
    # events past the dedup window; their timeline rows keep the number as a plain reference)
    sa.Column("event_pk", BigId, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=sa.text("''")),
    sa.Column("at", Timestamp, nullable=False),
    sa.Index(None, "subject", "id"),
)

reviews = sa.Table(
    "reviews",
    metadata,
    _id(),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    # SET NULL: a review (and its resolution) outlives its event's purge
    _event_fk(nullable=True, ondelete="SET NULL"),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("dedup_key", sa.Text, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("resolved_at", Timestamp, nullable=True),
    sa.Column("resolved_by", sa.Text, nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("severity", sa.Text, nullable=False, server_default=sa.text("'normal'")),
    # why the item was opened: ids, scores and codes only, never PHI
    sa.Column("summary", sa.Text, nullable=False, server_default=sa.text("''")),
    sa.Index(None, "status", "created_at"),
    sa.Index(None, "kind", "dedup_key"),
)

audit = sa.Table(
    "audit",
    metadata,
    _id(),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    # no foreign key: the audit trail must outlive the rows it speaks of
    sa.Column("event_pk", BigId, nullable=True),
    sa.Column("detail", sa.Text, nullable=False, server_default=sa.text("''")),
    sa.Index(None, "event_pk"),
)

#: dashboard sessions ended before they expired (logout), by their random id: a copy
#: of the cookie is refused until it would have expired, and the purge drops the row then (0007)
admin_sessions_ended = sa.Table(
    "admin_sessions_ended",
    metadata,
    sa.Column("session", sa.Text, primary_key=True),
    sa.Column("expires_at", Timestamp, nullable=False),
)

# one row that ``ping`` rewrites: readiness proves that a write commits (0004)
probe = sa.Table(
    "probe",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", Timestamp, nullable=False),
)

#: the FHIR write ledger (carehook.connectors.fhir.ledger): one row per resource carehook creates
#: in an EHR, keyed by its identifier; the intent is written before the POST, the id after it
fhir_writes = sa.Table(
    "fhir_writes",
    metadata,
    sa.Column("destination", sa.Text, primary_key=True),
    sa.Column("resource_type", sa.Text, primary_key=True),
    sa.Column("system", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, primary_key=True),
    sa.Column("server_id", sa.Text, nullable=True),
    sa.Column("intent_at", Timestamp, nullable=False),
    sa.Column("written_at", Timestamp, nullable=True),
)
