"""artifact names as long as their owners gave them (up to 1 KiB)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite does not enforce a VARCHAR's length: only PostgreSQL needs the change.
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("artifacts", "name", type_=sa.String(1024))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE artifacts SET name = left(name, 255)")
        op.alter_column("artifacts", "name", type_=sa.String(255))
