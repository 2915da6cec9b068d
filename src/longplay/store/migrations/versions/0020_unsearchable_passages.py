"""an index of the passages stored without their searchable text

An ``index`` job of a longplay older than 0018 (a worker left running in a rolling
upgrade) stores passages without ``search_text``: the full-text index, over that
column, never finds them. Retention's cleanup makes them searchable
(``store.library.make_searchable``), and this partial index lets it find them without
reading every passage.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_passages_unsearchable",
        "passages",
        ["seq"],
        sqlite_where=sa.text("search_text IS NULL"),
        postgresql_where=sa.text("search_text IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_passages_unsearchable", table_name="passages")
