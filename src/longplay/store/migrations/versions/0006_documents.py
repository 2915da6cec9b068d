"""collections, documents and their passages, with a full-text index (issue 10)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

The full-text index differs by database, the tables do not:

- SQLite: an FTS5 table ``passages_fts`` over the passages' heading and text (Porter
  stemming, like PostgreSQL's ``english``), with ``passages`` as its external content
  and ``passages.seq`` as its row id; triggers keep it in step with the table.
- PostgreSQL: a generated ``search_vector`` tsvector column (heading weighted above
  text) with a GIN index.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

SQLITE_FTS = (
    "CREATE VIRTUAL TABLE passages_fts USING fts5("
    "heading, text, content='passages', content_rowid='seq', tokenize='porter unicode61')",
    "CREATE TRIGGER passages_fts_insert AFTER INSERT ON passages BEGIN "
    "INSERT INTO passages_fts(rowid, heading, text) VALUES (new.seq, new.heading, new.text); "
    "END",
    "CREATE TRIGGER passages_fts_delete AFTER DELETE ON passages BEGIN "
    "INSERT INTO passages_fts(passages_fts, rowid, heading, text) "
    "VALUES ('delete', old.seq, old.heading, old.text); "
    "END",
    "CREATE TRIGGER passages_fts_update AFTER UPDATE ON passages BEGIN "
    "INSERT INTO passages_fts(passages_fts, rowid, heading, text) "
    "VALUES ('delete', old.seq, old.heading, old.text); "
    "INSERT INTO passages_fts(rowid, heading, text) VALUES (new.seq, new.heading, new.text); "
    "END",
)
POSTGRES_FTS = (
    "ALTER TABLE passages ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
    "setweight(to_tsvector('english', coalesce(heading, '')), 'B') || "
    "setweight(to_tsvector('english', text), 'D')) STORED",
    "CREATE INDEX ix_passages_search_vector ON passages USING gin (search_vector)",
)


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["owners.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_collections_owner_created", "collections", ["owner_id", "created_at", "id"])
    op.create_table(
        "documents",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("collection_id", sa.String(length=40), nullable=False),
        sa.Column("seq", SEQ, nullable=False),
        sa.Column("artifact_id", sa.String(length=40), nullable=True),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("media_type", sa.String(length=127), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("passage_count", sa.Integer(), nullable=False),
        sa.Column("error", JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["collection_id"], ["collections.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["artifact_id"], ["artifacts.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_documents_collection_seq", "documents", ["collection_id", "seq"])
    op.create_table(
        "passages",
        sa.Column("seq", SEQ, nullable=False, autoincrement=True),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("collection_id", sa.String(length=40), nullable=False),
        sa.Column("document_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("heading", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("start", sa.Float(), nullable=True),
        sa.Column("end", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["collection_id"], ["collections.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_passages_collection_id", "passages", ["collection_id"])
    op.create_index("ix_passages_document_position", "passages", ["document_id", "position"])
    statements = SQLITE_FTS if op.get_bind().dialect.name == "sqlite" else POSTGRES_FTS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("passages_fts_update", "passages_fts_delete", "passages_fts_insert"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS passages_fts")
    op.drop_table("passages")
    op.drop_table("documents")
    op.drop_table("collections")
