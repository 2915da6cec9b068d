"""Collections of documents as a step sees them: passages to search and to cite.

The store keeps collections, documents and their passages; a kind reaches them only
through :class:`Library`, which the jobs layer implements (``ctx.library``), so kinds
stay free of the store. The ``index`` kind also writes through it (:class:`Catalog`).

A kind whose params model has a ``collection`` field gets a submit-time check for
free: another owner's collection or an unknown one is a 404, one with no indexed
passages a 422 (unless the field is marked :data:`FILLS_COLLECTION`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from longplay.framework.errors import JobError, PermanentError


@dataclass(frozen=True)
class Passage:
    """A piece of one document, the unit that search finds and a script cites."""

    id: str
    collection_id: str
    document_id: str
    document_name: str
    position: int
    """Its order within its document, from 0."""
    text: str
    heading: str | None = None
    """The nearest heading above it, where the document has headings."""
    start: float | None = None
    """Seconds into the recording, for passages of a transcript or subtitles."""
    end: float | None = None
    score: float = 0.0
    """How well it matched a search (higher is better); 0 where it was not searched."""


class Library(Protocol):
    """Read access to the collections of the job's owner."""

    def search(self, collection_id: str, query: str, limit: int = 10) -> list[Passage]:
        """The passages that best match ``query``, best first."""
        ...

    def passages(self, collection_id: str) -> list[Passage]:
        """Every passage of the collection: documents in the order they were added,
        passages in document order."""
        ...


@dataclass(frozen=True)
class NewPassage:
    """A passage as the ``index`` kind cut it, before the store gives it an id."""

    text: str
    heading: str | None = None
    start: float | None = None
    end: float | None = None


class Catalog(Library, Protocol):
    """A :class:`Library` that an ``index`` job also writes its documents' passages to."""

    def keep_passages(
        self,
        document_id: str,
        passages: Sequence[NewPassage],
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Replace the document's passages with these (in order) and mark it indexed;
        the number kept, 0 when the document was removed meanwhile. ``progress`` hears
        how many of the passages are embedded, as they are (embeddings on)."""
        ...

    def document_failed(self, document_id: str, error: JobError) -> None:
        """Mark the document failed with ``error``'s code and message; it has no passages."""
        ...


@dataclass
class CollectionNotFound(PermanentError):
    """The job names a collection its owner does not have (any more)."""

    code: str = "collection_not_found"


@dataclass(frozen=True)
class FillsCollection:
    """Marks a ``collection`` params field whose job fills the collection, so that an
    empty one passes the submit-time check: ``Annotated[str, FILLS_COLLECTION]``."""


FILLS_COLLECTION = FillsCollection()
