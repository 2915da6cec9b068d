"""passages keep their embedding for hybrid search (issue 10)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, not a batch: on SQLite a batch would copy the table and lose the
# triggers that keep its full-text index (migration 0006) in step.
def upgrade() -> None:
    op.add_column("passages", sa.Column("embedding", sa.LargeBinary(), nullable=True))
    op.add_column("passages", sa.Column("embedded_with", sa.String(length=80), nullable=True))


def downgrade() -> None:
    op.drop_column("passages", "embedded_with")
    op.drop_column("passages", "embedding")
