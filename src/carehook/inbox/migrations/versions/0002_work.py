"""The worker's tables: subject timeline, attempt number and outcome, the active-events index.

Also makes reviews outlive their event (``ON DELETE SET NULL``): purge deletes events past the
dedup window, and the review queue's history must not go with them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-11
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the types in carehook.inbox.schema (see 0001).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)
_ACTIVE = sa.text("status IN ('pending', 'processing', 'retrying')")
_REVIEWS_FK = "fk_reviews_event_pk_events"


def upgrade() -> None:
    """Add the timeline, the attempt columns and the active index; relax the reviews FK."""
    op.create_table(
        "timeline",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("event_pk", BigId, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column("at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_timeline"),
    )
    op.create_index("ix_timeline_subject_id", "timeline", ["subject", "id"])

    with op.batch_alter_table("attempts") as batch:
        batch.add_column(
            sa.Column("number", sa.Integer, nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(
            sa.Column("outcome", sa.Text, nullable=False, server_default=sa.text("'running'"))
        )

    op.create_index(
        "ix_events_active_subject_id",
        "events",
        ["subject", "id"],
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )

    with op.batch_alter_table("reviews") as batch:
        batch.drop_constraint(_REVIEWS_FK, type_="foreignkey")
        batch.create_foreign_key(_REVIEWS_FK, "events", ["event_pk"], ["id"], ondelete="SET NULL")


def downgrade() -> None:
    """Undo :func:`upgrade`."""
    with op.batch_alter_table("reviews") as batch:
        batch.drop_constraint(_REVIEWS_FK, type_="foreignkey")
        batch.create_foreign_key(_REVIEWS_FK, "events", ["event_pk"], ["id"], ondelete="CASCADE")
    op.drop_index("ix_events_active_subject_id", table_name="events")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("outcome")
        batch.drop_column("number")
    op.drop_index("ix_timeline_subject_id", table_name="timeline")
    op.drop_table("timeline")
