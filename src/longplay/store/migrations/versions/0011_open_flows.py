"""an index of the flows not ended yet, for beat's sweep

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

OPEN = sa.text("finished_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_flows_open",
        "flows",
        ["created_at", "id"],
        unique=False,
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )


def downgrade() -> None:
    op.drop_index("ix_flows_open", table_name="flows")
