"""``ctx.library``: the framework's :class:`~longplay.framework.library.Catalog` over
the store, scoped to one owner (another owner's collection is not found)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session

from longplay.framework.errors import JobError
from longplay.framework.library import CollectionNotFound, NewPassage, Passage
from longplay.jobs import retrieval
from longplay.store import library as queries
from longplay.store.db import session_scope
from longplay.store.models import Collection, Document, DocumentStatus, new_id, utcnow
from longplay.store.models import Passage as PassageRow


class StoreLibrary:
    """The collections of one owner, read and written in short store sessions."""

    def __init__(self, owner_id: str) -> None:
        self.owner_id = owner_id

    def search(self, collection_id: str, query: str, limit: int = 10) -> list[Passage]:
        probe = retrieval.query_vector(query)
        with session_scope() as session:
            self._collection(session, collection_id)
            return [
                as_passage(found.passage, found.document_name, found.score)
                for found in retrieval.search(session, collection_id, query, limit, probe)
            ]

    def passages(self, collection_id: str) -> list[Passage]:
        with session_scope() as session:
            self._collection(session, collection_id)
            return [
                as_passage(row, name) for row, name in queries.passages_of(session, collection_id)
            ]

    def keep_passages(
        self,
        document_id: str,
        passages: Sequence[NewPassage],
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        embedded = retrieval.passage_vectors(passages, progress=progress)
        with session_scope() as session:
            document = self._document(session, document_id)
            if document is None:
                return 0
            queries.replace_passages(
                session,
                document.id,
                [
                    PassageRow(
                        id=new_id("psg"),
                        collection_id=document.collection_id,
                        document_id=document.id,
                        position=position,
                        heading=p.heading,
                        text=p.text,
                        start=p.start,
                        end=p.end,
                        embedding=None if embedded is None else embedded.vectors[position],
                        embedded_with=None if embedded is None else embedded.model,
                    )
                    for position, p in enumerate(passages)
                ],
            )
            document.status = DocumentStatus.INDEXED.value
            document.passage_count = len(passages)
            document.error = None
            document.indexed_at = utcnow()
            return len(passages)

    def document_failed(self, document_id: str, error: JobError) -> None:
        with session_scope() as session:
            document = self._document(session, document_id)
            if document is None:
                return
            queries.replace_passages(session, document.id, [])
            document.status = DocumentStatus.FAILED.value
            document.passage_count = 0
            document.error = {"code": error.code, "message": error.message}

    def _collection(self, session: Session, collection_id: str) -> Collection:
        collection = queries.collection_of(session, self.owner_id, collection_id)
        if collection is None:
            raise CollectionNotFound(f"no collection {collection_id} (it may have been deleted)")
        return collection

    def _document(self, session: Session, document_id: str) -> Document | None:
        """The owner's document, None once it (or its collection) was removed."""
        document = session.get(Document, document_id)
        if (
            document is None
            or queries.collection_of(session, self.owner_id, document.collection_id) is None
        ):
            return None
        return document


def as_passage(row: PassageRow, document_name: str, score: float = 0.0) -> Passage:
    """A stored passage as steps and the API see it."""
    return Passage(
        id=row.id,
        collection_id=row.collection_id,
        document_id=row.document_id,
        document_name=document_name,
        position=row.position,
        text=row.text,
        heading=row.heading,
        start=row.start,
        end=row.end,
        score=score,
    )
