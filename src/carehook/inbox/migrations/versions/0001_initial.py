"""Initial inbox schema: every table, so later revisions add less.

Revision ID: 0001
Revises:
Create Date: 2026-05-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the types in carehook.inbox.schema: a migration must not change when the
# schema module does.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def _id() -> sa.Column[int]:
    return sa.Column("id", BigId, primary_key=True, autoincrement=True)


def _event_fk(table: str, *, nullable: bool) -> sa.Column[int]:
    return sa.Column(
        "event_pk",
        BigId,
        sa.ForeignKey("events.id", ondelete="CASCADE", name=f"fk_{table}_event_pk_events"),
        nullable=nullable,
    )


def upgrade() -> None:
    """Create every inbox table."""
    op.create_table(
        "requests",
        _id(),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.Column("remote_addr", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("cause", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column("event_id", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_requests"),
    )
    op.create_index("ix_requests_received_at", "requests", ["received_at"])
    op.create_index("ix_requests_source_id", "requests", ["source", "id"])

    op.create_table(
        "events",
        _id(),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("vendor", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("occurred_at", Timestamp, nullable=True),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=True),
        sa.Column("payload_purged_at", Timestamp, nullable=True),
        sa.Column("secret_index", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", Timestamp, nullable=True),
        sa.Column("lease_owner", sa.Text, nullable=True),
        sa.Column("lease_expires_at", Timestamp, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("source", "event_id", name="uq_events_source_event_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_status_next_attempt_at", "events", ["status", "next_attempt_at"])
    op.create_index("ix_events_subject_id", "events", ["subject", "id"])
    op.create_index("ix_events_received_at", "events", ["received_at"])

    op.create_table(
        "steps",
        _id(),
        _event_fk("steps", nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("finished_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_steps"),
        sa.UniqueConstraint("event_pk", "name", name="uq_steps_event_pk_name"),
    )

    op.create_table(
        "attempts",
        _id(),
        _event_fk("attempts", nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.Column("error_class", sa.Text, nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("next_attempt_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_attempts"),
    )
    op.create_index("ix_attempts_event_pk", "attempts", ["event_pk"])

    op.create_table(
        "subjects",
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("subject", name="pk_subjects"),
    )

    op.create_table(
        "reviews",
        _id(),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        _event_fk("reviews", nullable=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("dedup_key", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("resolved_at", Timestamp, nullable=True),
        sa.Column("resolved_by", sa.Text, nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_reviews"),
    )
    op.create_index("ix_reviews_status_created_at", "reviews", ["status", "created_at"])
    op.create_index("ix_reviews_kind_dedup_key", "reviews", ["kind", "dedup_key"])

    op.create_table(
        "audit",
        _id(),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("event_pk", BigId, nullable=True),
        sa.Column("detail", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.PrimaryKeyConstraint("id", name="pk_audit"),
    )
    op.create_index("ix_audit_event_pk", "audit", ["event_pk"])


def downgrade() -> None:
    """Drop every inbox table (children first)."""
    for table in ("audit", "reviews", "subjects", "attempts", "steps", "events", "requests"):
        op.drop_table(table)
