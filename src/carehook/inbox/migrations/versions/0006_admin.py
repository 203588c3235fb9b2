"""The operator surface: a partial index of rejected requests by time.

The dashboard and ``carehook sources ls`` count rejections by cause over 24 h; the partial
index holds rejected rows only, so accepted requests (the hot path) pay nothing for it.

Revision ID: 0006_admin
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_admin"
down_revision: str | None = "0005_ehr"
branch_labels: str | None = None
depends_on: str | None = None

_REJECTED = sa.text("outcome = 'rejected'")


def upgrade() -> None:
    """Add ``ix_requests_rejected_received_at``."""
    op.create_index("ix_requests_rejected_received_at", "requests", ["received_at"],
                    sqlite_where=_REJECTED, postgresql_where=_REJECTED)  # fmt: skip


def downgrade() -> None:
    """Undo :func:`upgrade`."""
    op.drop_index("ix_requests_rejected_received_at", table_name="requests")
