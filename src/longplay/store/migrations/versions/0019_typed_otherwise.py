"""full-text search folds German ß to ss and Russian ё without its dots

A query folds ``Straße`` to ``strasse`` and ``утеплённой`` to ``утепленной`` (so that
``Strasse`` finds ``Straße`` and ``утепленной`` finds ``утеплённой``); the passages
stored before keep their searchable heading and text (0018) as the old folding made
them, so they are folded again here, and those with such a letter written back. Their
index follows on its own: SQLite's triggers and PostgreSQL's generated column. Going
back folds them as before.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

import unicodedata
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

from longplay.store.library import searchable

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

BATCH = 500
"""Passages read and written back at a time."""
NEWLY_FOLDED = (
    "ß",
    "\N{LATIN CAPITAL LETTER SHARP S}",
    "\N{CYRILLIC SMALL LETTER IO}",
    "\N{CYRILLIC CAPITAL LETTER IO}",
)
"""The letters folded since this revision (``store.library.TYPED_OTHERWISE``)."""


def as_before(text: str) -> str:
    """``text`` as 0018's folding made it searchable: the letters it did not fold are
    kept aside, as private-use characters (which no folding touches), while the rest
    is folded."""
    aside = {old: chr(0xF0000 + n) for n, old in enumerate(NEWLY_FOLDED)}
    text = unicodedata.normalize("NFC", text)  # an ``ё`` written as a letter and its dots
    for old, kept in aside.items():
        text = text.replace(old, kept)
    folded = searchable(text)
    for old, kept in aside.items():
        folded = folded.replace(kept, old)
    return folded


def refold(fold: Callable[[str], str]) -> None:
    """Each stored passage's searchable heading and text made again by ``fold``, a batch
    at a time, and written back where they change (few passages have such a letter)."""
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
            sa.select(passages).where(passages.c.seq > last).order_by(passages.c.seq).limit(BATCH)
        ).all()
        if not rows:
            return
        changed = []
        for row in rows:
            heading = None if row.heading is None else fold(row.heading)
            text = fold(row.text)
            if (heading, text) != (row.search_heading, row.search_text):
                changed.append({"at": row.seq, "h": heading, "t": text})
        if changed:
            bind.execute(write, changed)
        last = rows[-1].seq


def upgrade() -> None:
    refold(searchable)


def downgrade() -> None:
    refold(as_before)
