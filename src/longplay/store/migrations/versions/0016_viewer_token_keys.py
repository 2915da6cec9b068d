"""viewer tokens name the key that made them, in databases 0013 made without it

Revision 0013 was changed after it shipped: a database it had already made has
``viewer_tokens`` without ``key_id`` and is marked 0013 all the same, so every read by
a token failed. Such a database gets the column now. Its tokens are deleted, as no key
can be named for them: a viewer asks the owner for a new link.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("viewer_tokens")}
    if "key_id" in columns:
        return
    op.execute("DELETE FROM viewer_tokens")
    with op.batch_alter_table("viewer_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_id", sa.String(length=40), nullable=False))
        batch_op.create_foreign_key(
            "viewer_tokens_key_id_fkey", "api_keys", ["key_id"], ["id"], ondelete="CASCADE"
        )
        batch_op.create_index("ix_viewer_tokens_key_id", ["key_id"], unique=False)


def downgrade() -> None:
    """Nothing: the column is 0013's, whichever revision added it here."""
