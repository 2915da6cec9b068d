"""full-text search in Chinese, Japanese, Hindi, Arabic and Hebrew

The index read a run of Chinese between punctuation as one word (so a word within it
was never found), cut Hindi words at their vowel signs (so a word matched any other of
the same consonants), and an Arabic or Hebrew word with its vowel points never matched
the same word without. Each passage now keeps its heading and text as the index should
read them (``search_heading``, ``search_text``: ``store.library.searchable``, filled
here for the passages already stored), and the index is over those:

- SQLite: ``passages_fts`` made again over the two columns, with marks (``M*``) inside
  words, and its triggers with it.
- PostgreSQL: ``search_vector`` generated from the two columns.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from longplay.store.library import searchable

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

BATCH = 500
"""Passages read and written back at a time while the new columns are filled."""
MARKS_IN_WORDS = "porter unicode61 categories 'L* N* Co M*'"
"""SQLite's tokenizer: letters, digits, private use and marks make words (marks are
separators by default, which cut a Hindi word at each vowel sign); the default
``remove_diacritics`` still folds ``é`` to ``e``."""
TRIGGERS = ("passages_fts_update", "passages_fts_delete", "passages_fts_insert")


def sqlite_index(heading: str, text: str, tokenizer: str) -> tuple[str, ...]:
    """SQLite's FTS5 table over the columns ``heading`` and ``text`` of ``passages``, the
    triggers that keep it in step, and its rebuild from the table."""
    return (
        "CREATE VIRTUAL TABLE passages_fts USING fts5("
        f"{heading}, {text}, content='passages', content_rowid='seq', "
        f'tokenize="{tokenizer}")',
        "CREATE TRIGGER passages_fts_insert AFTER INSERT ON passages BEGIN "
        f"INSERT INTO passages_fts(rowid, {heading}, {text}) "
        f"VALUES (new.seq, new.{heading}, new.{text}); END",
        "CREATE TRIGGER passages_fts_delete AFTER DELETE ON passages BEGIN "
        f"INSERT INTO passages_fts(passages_fts, rowid, {heading}, {text}) "
        f"VALUES ('delete', old.seq, old.{heading}, old.{text}); END",
        "CREATE TRIGGER passages_fts_update AFTER UPDATE ON passages BEGIN "
        f"INSERT INTO passages_fts(passages_fts, rowid, {heading}, {text}) "
        f"VALUES ('delete', old.seq, old.{heading}, old.{text}); "
        f"INSERT INTO passages_fts(rowid, {heading}, {text}) "
        f"VALUES (new.seq, new.{heading}, new.{text}); END",
        "INSERT INTO passages_fts(passages_fts) VALUES ('rebuild')",
    )


def postgres_index(heading: str, text: str, tokenizer: str) -> tuple[str, ...]:
    """PostgreSQL's generated ``search_vector`` over ``heading`` and ``text``, heading
    weighted above text, and its GIN index (``tokenizer`` is SQLite's)."""
    return (
        "ALTER TABLE passages ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
        f"setweight(to_tsvector('english', coalesce({heading}, '')), 'B') || "
        f"setweight(to_tsvector('english', coalesce({text}, '')), 'D')) STORED",
        "CREATE INDEX ix_passages_search_vector ON passages USING gin (search_vector)",
    )


def drop_index() -> None:
    """The full-text index gone, so that it is not kept in step row by row meanwhile."""
    if op.get_bind().dialect.name == "sqlite":
        for trigger in TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS passages_fts")
    else:
        op.execute("ALTER TABLE passages DROP COLUMN IF EXISTS search_vector")  # and its index


def make_index(heading: str, text: str, tokenizer: str) -> None:
    dialect = op.get_bind().dialect.name
    statements = sqlite_index if dialect == "sqlite" else postgres_index
    for statement in statements(heading, text, tokenizer):
        op.execute(statement)


def fill() -> None:
    """Each stored passage's searchable heading and text, a batch at a time."""
    bind = op.get_bind()
    passages = sa.table(
        "passages",
        sa.column("seq", sa.Integer),
        sa.column("heading", sa.Text),
        sa.column("text", sa.Text),
        sa.column("search_heading", sa.Text),
        sa.column("search_text", sa.Text),
    )
    write = (
        passages.update()
        .where(passages.c.seq == sa.bindparam("at"))
        .values(search_heading=sa.bindparam("h"), search_text=sa.bindparam("t"))
    )
    last = -1
    while True:
        rows = bind.execute(
            sa.select(passages.c.seq, passages.c.heading, passages.c.text)
            .where(passages.c.seq > last)
            .order_by(passages.c.seq)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        bind.execute(
            write,
            [
                {
                    "at": seq,
                    "h": None if heading is None else searchable(heading),
                    "t": searchable(text),
                }
                for seq, heading, text in rows
            ],
        )
        last = rows[-1][0]


def upgrade() -> None:
    drop_index()
    op.add_column("passages", sa.Column("search_heading", sa.Text(), nullable=True))
    op.add_column("passages", sa.Column("search_text", sa.Text(), nullable=True))
    fill()
    make_index("search_heading", "search_text", MARKS_IN_WORDS)


def downgrade() -> None:
    drop_index()
    op.drop_column("passages", "search_text")
    op.drop_column("passages", "search_heading")
    make_index("heading", "text", "porter unicode61")  # as 0006 made it
