"""viewer tokens: a browser reads one job without the owner's key

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "viewer_tokens",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
    )
    op.create_index("ix_viewer_tokens_job_id", "viewer_tokens", ["job_id"], unique=False)
    op.create_index("ix_viewer_tokens_key_id", "viewer_tokens", ["key_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_viewer_tokens_key_id", table_name="viewer_tokens")
    op.drop_index("ix_viewer_tokens_job_id", table_name="viewer_tokens")
    op.drop_table("viewer_tokens")
