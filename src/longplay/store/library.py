"""Queries over collections, documents and passages, full-text search among them.

Search is one function on both databases; only the match and rank expressions differ:
BM25 over SQLite's FTS5 table ``passages_fts``, ``ts_rank_cd`` over PostgreSQL's
``search_vector`` column (made by migration 0006; since 0018 over each passage's
:func:`searchable` heading and text). A query is cut into words and any of them may
match; a passage that has more of them comes first (a coordination factor, as Lucene's
classic scoring had), then the better ranked. So a question in plain language finds
the passages that share most of its words.

Each passage may also keep its embedding (:func:`vectors_of`); fusing the two rankings
is the jobs layer's (:mod:`longplay.jobs.retrieval`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Float, Integer, Subquery, column, delete, func, select, text, update
from sqlalchemy.orm import Session

from longplay.store.models import Collection, Document, Passage
from longplay.store.stopwords import COMMON_WORDS
from longplay.unspaced import DENSE_SCRIPT

_DENSE_RUNS = re.compile(f"{DENSE_SCRIPT.pattern}+|(?:(?!{DENSE_SCRIPT.pattern}).)+")
"""Runs of Chinese or Japanese, and runs of anything else."""


TYPED_OTHERWISE = {
    "ß": "ss",
    "\N{LATIN CAPITAL LETTER SHARP S}": "SS",
    "\N{CYRILLIC SMALL LETTER IO}": "\N{CYRILLIC SMALL LETTER IE}",
    "\N{CYRILLIC CAPITAL LETTER IO}": "\N{CYRILLIC CAPITAL LETTER IE}",
}
"""Letters folded to the letters they are often typed as (:func:`_folding`)."""


def _folding() -> dict[int, str | None]:
    """What :func:`searchable` changes, character by character: Hebrew points and
    Arabic harakat removed (a pointed word then matches its plain form, which is how
    most text is written), a Latin letter with accents made its plain letter
    (PostgreSQL's ``english`` does not fold ``café`` to ``cafe``; SQLite's tokenizer
    does, and now both do), and the letters that are often typed as others: German
    ``ß`` as ``ss`` (Swiss German never uses it) and Russian ``ё`` without its dots
    (as most Russian text is written). Since migration 0019 for ``ß`` and ``ё``."""
    table: dict[int, str | None] = {ord(old): new for old, new in TYPED_OTHERWISE.items()}
    for low, high in ((0x0591, 0x05C7), (0x0610, 0x061A), (0x064B, 0x065F), (0x0670, 0x0670)):
        for code in range(low, high + 1):
            if unicodedata.category(chr(code)) == "Mn":  # not the maqaf, a hyphen
                table[code] = None
    for code in (*range(0x00C0, 0x0250), *range(0x1E00, 0x1F00)):
        parts = unicodedata.normalize("NFD", chr(code))
        base, marks = parts[0], parts[1:]
        if (
            base.isascii()
            and base.isalpha()
            and marks
            and all("\u0300" <= m < "\u0370" for m in marks)
        ):
            table[code] = base
    return table


_FOLD = _folding()


def searchable(text: str) -> str:
    """``text`` as the full-text index reads it (a passage's heading and text, stored
    beside them, and a query): NFC, folded as :func:`_folding` says, each Chinese
    character or Japanese kana between spaces, so that each is a word of its own (the
    databases' tokenizers would take a whole run between punctuation as one word)."""
    return DENSE_SCRIPT.sub(r" \g<0> ", _folded(text))


def _folded(text: str) -> str:
    """``text`` in NFC, folded as :func:`_folding` says."""
    return unicodedata.normalize("NFC", text).translate(_FOLD)


def _tokens(text: str) -> list[str]:
    """The runs of letters, digits and marks of ``text``: the words SQLite's tokenizer
    (``categories 'L* N* Co M*'``) cuts it into, so a Devanagari vowel sign stays
    inside its word (a regular expression's word would end there)."""
    words: list[str] = []
    run: list[str] = []
    for char in text:
        kind = unicodedata.category(char)
        if kind[0] in "LNM" or kind == "Co":
            run.append(char)
        elif run:
            words.append("".join(run))
            run = []
    if run:
        words.append("".join(run))
    return words


def _pieces(word: str) -> list[str]:
    """A word as the query searches for it: itself, or for a run of Chinese or Japanese
    (which has no spaces between words) each pair of neighbouring characters, searched
    as a phrase (``灯塔`` finds the two side by side; a longer question finds the
    passages that share most of its pairs first)."""
    pieces: list[str] = []
    for run in _DENSE_RUNS.findall(word):
        if not DENSE_SCRIPT.match(run) or len(run) == 1:
            pieces.append(run)
        else:
            pieces.extend(run[i : i + 2] for i in range(len(run) - 1))
    return pieces


MAX_QUERY_WORDS = 32
"""Words of a query searched for; the rest are ignored."""
STOPWORDS: dict[str, frozenset[str]] = {
    language: frozenset(_folded(word) for word in words) for language, words in COMMON_WORDS.items()
}
"""Each language's common words (:mod:`longplay.store.stopwords`) as a query is read:
folded, so that ``été`` is ``ete`` and ``daß`` is ``dass``."""


def collection_of(session: Session, owner_id: str, collection_id: str) -> Collection | None:
    """The owner's collection, or None for an unknown one or another owner's."""
    return session.scalar(
        select(Collection).where(Collection.id == collection_id, Collection.owner_id == owner_id)
    )


def documents_of(session: Session, collection_id: str) -> list[Document]:
    """The collection's documents in the order they were added."""
    return list(
        session.scalars(
            select(Document)
            .where(Document.collection_id == collection_id)
            .order_by(Document.seq, Document.id)
        )
    )


def next_document_seq(session: Session, collection_id: str) -> int:
    """The ``seq`` the next document added to the collection takes."""
    last = session.scalar(
        select(func.max(Document.seq)).where(Document.collection_id == collection_id)
    )
    return (last or 0) + 1


def passage_count(session: Session, collection_id: str) -> int:
    """Passages of the collection's indexed documents."""
    return int(
        session.scalar(
            select(func.count()).select_from(Passage).where(Passage.collection_id == collection_id)
        )
        or 0
    )


@dataclass(frozen=True)
class Found:
    """A passage a search found, with its document's name and its score (higher: better)."""

    passage: Passage
    document_name: str
    score: float


def passages_of(session: Session, collection_id: str) -> list[tuple[Passage, str]]:
    """Every passage of the collection with its document's name: documents in the order
    they were added, passages in document order."""
    rows = session.execute(
        select(Passage, Document.name)
        .join(Document, Document.id == Passage.document_id)
        .where(Passage.collection_id == collection_id)
        .order_by(Document.seq, Document.id, Passage.position)
    )
    return [(row[0], row[1]) for row in rows]


def query_words(query: str) -> list[str]:
    """The words of a query, lower-cased, each once, in order, without the common words
    that every passage has (unless it has no others); nothing else of the query is
    passed to the database's query language. Read as :func:`searchable` reads a
    passage; a Chinese or Japanese word is a pair of characters (:func:`_pieces`).

    The common words left out are those of the language the query has most common
    words of (English on a tie): one language's common word may be another's word of
    content (German ``war``, Dutch ``door``), which a question in that other language
    keeps."""
    seen: dict[str, None] = {}
    for token in _tokens(_folded(query).lower()):
        for word in _pieces(token):
            seen.setdefault(word, None)
    common = max(STOPWORDS.values(), key=lambda words: sum(word in words for word in seen))
    words = [w for w in seen if w not in common] or list(seen)
    return words[:MAX_QUERY_WORDS]


@dataclass(frozen=True)
class Hit:
    """A passage that full-text search found, before it is read."""

    seq: int
    matched: int
    """How many of the query's words it has."""
    score: float
    """:attr:`matched` plus the passage's rank (SQLite) or ``ts_rank_cd`` squeezed into
    [0, 1)."""


def search(session: Session, collection_id: str, query: str, limit: int) -> list[Found]:
    """The collection's passages that best match ``query`` in full text, best first
    (as :func:`full_text` ranks them), read in the same query."""
    hits = _matching(session, collection_id, query)
    if hits is None or limit < 1:
        return []
    rows = session.execute(
        select(Passage, Document.name, hits.c.matched, hits.c.rank)
        .join(hits, hits.c.seq == Passage.seq)
        .join(Document, Document.id == Passage.document_id)
        .order_by(hits.c.matched.desc(), hits.c.rank.desc(), Passage.seq)
        .limit(limit)
    ).all()
    return [Found(row[0], row[1], _score(row[2], row[3])) for row in rows]


def full_text(session: Session, collection_id: str, query: str, limit: int) -> list[Hit]:
    """The passages that best match ``query``, best first: those with more of its words
    first, then by how often and how densely it has them (SQLite) or ``ts_rank_cd``
    (PostgreSQL)."""
    hits = _matching(session, collection_id, query)
    if hits is None or limit < 1:
        return []
    rows = session.execute(
        select(hits.c.seq, hits.c.matched, hits.c.rank)
        .order_by(hits.c.matched.desc(), hits.c.rank.desc(), hits.c.seq)
        .limit(limit)
    ).all()
    return [Hit(row[0], row[1], _score(row[1], row[2])) for row in rows]


def _score(matched: int, rank: float) -> float:
    """The words matched, plus the rank squeezed into [0, 1)."""
    return matched + rank / (1.0 + rank)


_MARKS = "(length({marked}) - length(replace({marked}, char(1), '')))"
"""How many times the query's words occur in a column of the passage (SQLite), from
the column as ``highlight`` gave it, each occurrence marked."""
_K, _B, _TYPICAL = 1.2, 0.75, 1200
"""BM25's saturation and length weighting, against a typical passage's characters
(a constant: the table's average would again tell of other owners' passages)."""


def _matching(session: Session, collection_id: str, query: str) -> Subquery | None:
    """The collection's passages that have any of the query's words, each with its
    ``seq``, ``rank`` and how many words it ``matched``; None for a query with no words."""
    words = query_words(query)
    if not words:
        return None
    each = {f"w{i}": word for i, word in enumerate(words)}
    if session.get_bind().dialect.name == "sqlite":
        # FTS5: each word a quoted string (no operators: a word is letters, digits and
        # marks alone), a phrase where it has several tokens (a pair of Chinese
        # characters). The rank is the passage's own (its words found, the heading's
        # twice, against its length), not bm25(): that counts words over the whole
        # table, every owner's passages, so a score would tell which words other
        # owners' documents hold.
        matches = {name: f'"{_spaced(word)}"' for name, word in each.items()}
        has = " + ".join(
            f"(passages.seq IN (SELECT rowid FROM passages_fts WHERE passages_fts MATCH :{name}))"
            for name in matches
        )
        # Each column highlighted once (a passage without a heading has none there),
        # kept apart so that SQLite does not fold it back into every use.
        found = f"2 * {_MARKS.format(marked='heading')} + {_MARKS.format(marked='body')}"
        ranked = text(
            "WITH marked AS MATERIALIZED ("
            "SELECT passages.seq AS seq, "
            "coalesce(highlight(passages_fts, 0, char(1), ''), '') AS heading, "
            "coalesce(highlight(passages_fts, 1, char(1), ''), '') AS body, "
            f"length(passages.text) AS size, {has} AS matched "
            "FROM passages_fts JOIN passages ON passages.seq = passages_fts.rowid "
            "WHERE passages_fts MATCH :any AND passages.collection_id = :collection), "
            f"counted AS MATERIALIZED (SELECT seq, {found} AS found, size, matched FROM marked) "
            f"SELECT seq, found / (found + {_K} * ({1 - _B} + {_B} * size / {_TYPICAL})) AS rank, "
            "matched FROM counted"
        ).bindparams(any=" OR ".join(matches.values()), collection=collection_id, **matches)
    else:
        # PostgreSQL: each word through the english configuration; the tokens of a
        # word of several (a pair of Chinese characters) next to each other.
        matches = {
            name: "(" + " <-> ".join(f"'{t}'" for t in _spaced(word).split()) + ")"
            for name, word in each.items()
        }
        has = " + ".join(
            f"(search_vector @@ to_tsquery('english', :{name}))::int" for name in matches
        )
        ranked = text(
            f"SELECT seq, ts_rank_cd(search_vector, q) AS rank, {has} AS matched "
            "FROM passages, to_tsquery('english', :any) AS q "
            "WHERE search_vector @@ q AND collection_id = :collection"
        ).bindparams(any=" | ".join(matches.values()), collection=collection_id, **matches)
    return ranked.columns(
        column("seq", Integer), column("rank", Float), column("matched", Integer)
    ).subquery("hits")


def _spaced(word: str) -> str:
    """A word of the query as the index holds it: its tokens between single spaces."""
    return " ".join(searchable(word).split())


def vectors_of(session: Session, collection_id: str, model: str) -> list[tuple[int, bytes]]:
    """The ``seq`` and embedding of each passage of the collection that ``model`` embedded."""
    rows = session.execute(
        select(Passage.seq, Passage.embedding).where(
            Passage.collection_id == collection_id,
            Passage.embedded_with == model,
            Passage.embedding.is_not(None),
        )
    )
    return [(row[0], row[1]) for row in rows if row[1] is not None]


def found(session: Session, scored: Sequence[tuple[int, float]]) -> list[Found]:
    """The passages ``scored`` names by ``seq``, in its order, with their scores."""
    if not scored:
        return []
    rows = session.execute(
        select(Passage, Document.name)
        .join(Document, Document.id == Passage.document_id)
        .where(Passage.seq.in_([seq for seq, _ in scored]))
    ).all()
    by_seq = {row[0].seq: (row[0], row[1]) for row in rows}
    return [Found(by_seq[seq][0], by_seq[seq][1], score) for seq, score in scored if seq in by_seq]


def make_searchable(session: Session, most: int) -> int:
    """Give up to ``most`` passages stored without their searchable heading and text
    their :func:`searchable` ones; how many. An ``index`` job of a longplay from before
    migration 0018 (a worker left running in a rolling upgrade) stores them so, and the
    full-text index, over those columns, never found them."""
    rows = session.execute(
        select(Passage.seq, Passage.heading, Passage.text)
        .where(Passage.search_text.is_(None))
        .order_by(Passage.seq)
        .limit(most)
    ).all()
    values = []
    for seq, heading, body in rows:
        search_heading, search_text = _search_columns(heading, body)
        values.append({"seq": seq, "search_heading": search_heading, "search_text": search_text})
    if values:  # one UPDATE by primary key, sent with every row's values
        session.execute(update(Passage), values)
    return len(rows)


def _search_columns(heading: str | None, body: str) -> tuple[str | None, str]:
    """A passage's ``search_heading`` and ``search_text``, as the index reads them."""
    return None if heading is None else searchable(heading), searchable(body)


def replace_passages(session: Session, document_id: str, passages: Sequence[Passage]) -> None:
    """The document's passages are these from now on (the full-text index follows,
    over their :func:`searchable` heading and text, set here)."""
    session.execute(delete(Passage).where(Passage.document_id == document_id))
    for passage in passages:
        passage.search_heading, passage.search_text = _search_columns(passage.heading, passage.text)
    session.add_all(passages)
