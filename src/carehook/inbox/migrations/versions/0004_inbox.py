"""The one inbox: claim indexes that keep a claim's cost flat with the backlog, the probe table.

- ``ix_events_due``: the waiting events (``pending``/``retrying``) in order of due time, so a
  claim walks the earliest due events and stops after ``limit`` heads, however many wait or are
  finished (no other index yields that order: the plan does not depend on statistics);
- ``ix_events_running``: the events in flight by subject, so "does another event of this subject
  run under a live lease" is one probe of a small index;
- ``probe``: one row that ``ping`` (``/readyz``) rewrites, so readiness proves a write commits.

Revision ID: 0004_inbox
Revises: 0006_admin (re-chained after 0005_ehr and 0006_admin landed on main)
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_inbox"
down_revision: str | None = "0006_admin"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the types and conditions in carehook.inbox.schema (see 0001).
Timestamp = sa.DateTime(timezone=True)
_WAITING = sa.text("status IN ('pending', 'retrying')")
_RUNNING = sa.text("status = 'processing'")


def upgrade() -> None:
    """Add the two partial indexes and the probe table."""
    op.create_index(
        "ix_events_due", "events", ["next_attempt_at", "id"],
        sqlite_where=_WAITING, postgresql_where=_WAITING,
    )  # fmt: skip
    op.create_index(
        "ix_events_running", "events", ["subject", "lease_expires_at"],
        sqlite_where=_RUNNING, postgresql_where=_RUNNING,
    )  # fmt: skip
    op.create_table(
        "probe",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_probe"),
    )


def downgrade() -> None:
    """Undo :func:`upgrade`."""
    op.drop_table("probe")
    op.drop_index("ix_events_running", "events")
    op.drop_index("ix_events_due", "events")
