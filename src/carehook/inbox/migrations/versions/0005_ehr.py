"""The FHIR write ledger: ``fhir_writes`` (intent before a create, the server's id after it).

Revision ID: 0005_ehr
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_ehr"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``fhir_writes``."""
    op.create_table(
        "fhir_writes",
        sa.Column("destination", sa.Text, nullable=False),
        sa.Column("resource_type", sa.Text, nullable=False),
        sa.Column("system", sa.Text, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("server_id", sa.Text, nullable=True),
        sa.Column("intent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint(
            "destination", "resource_type", "system", "value", name="pk_fhir_writes"
        ),
    )


def downgrade() -> None:
    """Undo :func:`upgrade`."""
    op.drop_table("fhir_writes")
