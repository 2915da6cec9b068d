"""gone artifacts: what retention removed answers 410 Gone, with why

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gone_artifacts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner_id", sa.String(length=40), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("reason", sa.String(length=8), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["owners.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_gone_artifacts_owner_id", "gone_artifacts", ["owner_id"], unique=False)
    op.create_index("ix_gone_artifacts_removed_at", "gone_artifacts", ["removed_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_gone_artifacts_removed_at", table_name="gone_artifacts")
    op.drop_index("ix_gone_artifacts_owner_id", table_name="gone_artifacts")
    op.drop_table("gone_artifacts")
