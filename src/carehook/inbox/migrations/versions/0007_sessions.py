"""Dashboard sessions ended at logout.

A session cookie is signed and carries its own expiry, so deleting it in the browser left any
copy of it valid until then. Logout now writes the session's id here with that expiry; the
dashboard refuses a cookie found here, and the purge removes the row once the cookie would have
expired anyway.

Revision ID: 0007_sessions
Revises: 0004_inbox
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_sessions"
down_revision: str | None = "0004_inbox"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``admin_sessions_ended``."""
    op.create_table(
        "admin_sessions_ended",
        sa.Column("session", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session", name="pk_admin_sessions_ended"),
    )


def downgrade() -> None:
    """Undo :func:`upgrade`."""
    op.drop_table("admin_sessions_ended")
