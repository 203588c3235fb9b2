"""The workflows' data: encrypted per-subject working data, review severity and summary.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``subjects.data``, ``reviews.severity`` and ``reviews.summary``."""
    with op.batch_alter_table("subjects") as batch:
        batch.add_column(sa.Column("data", sa.LargeBinary, nullable=True))
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(
            sa.Column("severity", sa.Text, nullable=False, server_default=sa.text("'normal'"))
        )
        batch.add_column(
            sa.Column("summary", sa.Text, nullable=False, server_default=sa.text("''"))
        )


def downgrade() -> None:
    """Undo :func:`upgrade`."""
    with op.batch_alter_table("reviews") as batch:
        batch.drop_column("summary")
        batch.drop_column("severity")
    with op.batch_alter_table("subjects") as batch:
        batch.drop_column("data")
