"""Hybrid search: words first, then meaning.

Full text finds the passages that share the query's words; embeddings find those that
say the same thing in other words ("how heavy is the lamp" for "the lantern weighs
412 kg"). Each ranking gives its best :data:`CANDIDATES`, and they are fused by
reciprocal rank (each passage scores the sum of ``1 / (RRF_K + rank)`` over the
rankings that have it: the method of Cormack, Clarke and Büttcher, SIGIR 2009, that
Elasticsearch and OpenSearch use, because it needs no tuning of two scores that are
not comparable). A passage that shares more of the query's words still comes first:
the fused score only orders passages that share as many, and those found by meaning
alone come after those found by words. Plain fusion, measured by ``bench/search.py``,
lost 7 points of first hits on questions in the documents' own words to gain 10 on
questions in other words; this order loses 2 and gains 8.

Embeddings less similar to the query than :data:`MIN_COSINE` are no candidates: a
query about nothing the collection says finds nothing, as it does in full text.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from longplay.engines.embeddings import get_embedder
from longplay.framework import JobError
from longplay.framework.library import NewPassage
from longplay.http_time import within
from longplay.settings import Settings, get_settings
from longplay.store import library as queries

log = logging.getLogger(__name__)

CANDIDATES = 50
"""Passages each ranking hands to the fusion."""
RRF_K = 60
"""The rank constant of reciprocal rank fusion (the paper's, and the common default)."""
MIN_COSINE = 0.3
"""all-MiniLM-L6-v2 puts unrelated English sentences at about 0 to 0.2 (chosen for the
local model; another model may spread its cosines otherwise)."""


@dataclass(frozen=True)
class Probe:
    """A query's embedding, and the model that made it."""

    model: str
    vector: np.ndarray


@dataclass(frozen=True)
class Embedded:
    """Passages' embeddings as stored (``float32`` bytes), and the model that made them."""

    model: str
    vectors: list[bytes]


def embedding(settings: Settings | None = None) -> bool:
    """Whether searches are hybrid here (``LONGPLAY_EMBED_ENGINE`` is not ``off``)."""
    return (settings or get_settings()).embed.engine != "off"


def query_vector(query: str, settings: Settings | None = None) -> Probe | None:
    """The query's embedding, or None where embeddings are off.
    Computed before a store session is opened, so no connection waits on the model."""
    embedder = get_embedder(settings)
    if embedder is None or not query.strip():
        return None
    return Probe(embedder.model_id, embedder.embed([query])[0])


QUESTION_WITHIN_S = 5.0
"""Seconds a search waits for its question's embedding: a person waits for the answer,
and past this it is the words' alone (``LONGPLAY_EMBED_TIMEOUT``, a minute, is for
indexing, where a document's passages go in batches)."""
WORDS_ONLY_FOR_S = 30.0
"""Seconds searches go by the words alone, without asking the engine, after it failed
one: a server that hangs would otherwise hold every search for
:data:`QUESTION_WITHIN_S`, and say so in the log each time."""


class _WordsOnly:
    """Until when this process's searches skip the embedding engine, after it failed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = 0.0

    def now(self) -> bool:
        return time.monotonic() < self._until

    def begin(self) -> bool:
        """Skip the engine for :data:`WORDS_ONLY_FOR_S`; True unless a failure of a
        search running beside this one already began it (its line is in the log)."""
        with self._lock:
            began = not self.now()
            self._until = time.monotonic() + WORDS_ONLY_FOR_S
        return began


_WORDS_ONLY = _WordsOnly()


def query_vector_or_words(query: str) -> Probe | None:
    """The query's embedding, as :func:`query_vector`, within :data:`QUESTION_WITHIN_S`;
    None when the engine fails (its server down, refusing or too slow, the model not
    installed), and for :data:`WORDS_ONLY_FOR_S` after that: a search by the words
    alone still finds passages."""
    if _WORDS_ONLY.now():
        return None
    try:
        with within(QUESTION_WITHIN_S):
            return query_vector(query)
    except JobError as exc:
        said = exc.message
        if exc.code == "engine_timeout":
            said = f"it did not embed the question within {QUESTION_WITHIN_S:g} s"
        if _WORDS_ONLY.begin():
            log.warning(
                "searching by words only for %g s, the embedding engine failed: %s",
                WORDS_ONLY_FOR_S,
                said,
            )
        return None


EMBED_CHUNK = 64
"""Passages embedded between two progress reports: a long document's embeddings take
minutes on a CPU, its reading and cutting under a second."""


def passage_vectors(
    passages: Sequence[NewPassage],
    settings: Settings | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Embedded | None:
    """Each passage's embedding (its heading with its text), or None where embeddings
    are off; ``progress`` hears how many of how many are embedded, chunk by chunk."""
    embedder = get_embedder(settings)
    if embedder is None or not passages:
        return None
    texts = [f"{p.heading}\n{p.text}" if p.heading else p.text for p in passages]
    vectors: list[bytes] = []
    for start in range(0, len(texts), EMBED_CHUNK):
        vectors += [row.tobytes() for row in embedder.embed(texts[start : start + EMBED_CHUNK])]
        if progress is not None:
            progress(len(vectors), len(texts))
    return Embedded(embedder.model_id, vectors)


def search(
    session: Session, collection_id: str, query: str, limit: int, probe: Probe | None
) -> list[queries.Found]:
    """The passages that best match ``query``, best first: full-text only without a
    ``probe``, else fused with the passages nearest it."""
    if probe is None:
        return queries.search(session, collection_id, query, limit)
    hits = queries.full_text(session, collection_id, query, CANDIDATES)
    near = nearest(queries.vectors_of(session, collection_id, probe.model), probe.vector)
    matched = {hit.seq: hit.matched for hit in hits}
    # Words matched, plus the fused score (under 2 / 61): the words decide first.
    scored = [(seq, matched.get(seq, 0) + fused) for seq, fused in fuse([list(matched), near])]
    scored.sort(key=lambda item: -item[1])
    return queries.found(session, scored[:limit])


def nearest(stored: Sequence[tuple[int, bytes]], vector: np.ndarray) -> list[int]:
    """The ``seq`` of the stored vectors nearest ``vector`` (at least :data:`MIN_COSINE`),
    nearest first, at most :data:`CANDIDATES`."""
    if not stored:
        return []
    matrix = np.frombuffer(b"".join(blob for _, blob in stored), dtype=np.float32)
    cosines = matrix.reshape(len(stored), -1) @ vector.astype(np.float32)
    best = np.argsort(-cosines, kind="stable")[:CANDIDATES]
    return [stored[i][0] for i in best if cosines[i] >= MIN_COSINE]


def fuse(rankings: Sequence[Sequence[int]]) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of rankings of ``seq``: each with its fused score, best
    first (ties in the order the rankings first name them, full text before vectors)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, seq in enumerate(ranking, start=1):
            scores[seq] = scores.get(seq, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda item: -item[1])
