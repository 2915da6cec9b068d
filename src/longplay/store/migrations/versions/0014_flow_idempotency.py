"""a flow's Idempotency-Key, and the digest of the submission that made it

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flows", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("request_digest", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "ux_flows_owner_idempotency_key", ["owner_id", "idempotency_key"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("flows", schema=None) as batch_op:
        batch_op.drop_index("ux_flows_owner_idempotency_key")
        batch_op.drop_column("request_digest")
        batch_op.drop_column("idempotency_key")
