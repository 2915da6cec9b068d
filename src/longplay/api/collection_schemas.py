"""Request and response shapes of collections: ``CollectionCreate`` in, ``CollectionPublic``
out; documents, the passages a search finds."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from longplay.framework.library import Passage
from longplay.jobs.collections import CollectionSummary, DocumentState
from longplay.settings import get_settings
from longplay.store.models import Collection
from longplay.store.views import JobPublic, public_message


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="What you call it.")

    @field_validator("name")
    @classmethod
    def _a_name(cls, value: str) -> str:
        """A name is shown on one line: blank, or a control character (a NUL, which
        PostgreSQL cannot store, a line break) in it, it is refused."""
        if not value.strip():
            raise ValueError("must not be blank")
        if _CONTROL.search(value):
            raise ValueError("must not hold a control character (a NUL, a tab, a line break)")
        return value.strip()


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class DocumentsAdd(BaseModel):
    """Files already stored (uploads, or what a job made, e.g. a transcript JSON) to add."""

    model_config = ConfigDict(extra="forbid")

    artifacts: list[str] = Field(
        min_length=1, max_length=get_settings().api.max_inputs_per_job, description="Artifact ids."
    )


class DocumentError(BaseModel):
    code: str = Field(description="e.g. `empty`, `no_text`, `encrypted`, `unsupported_input`.")
    message: str = Field(description="Why it could not be read, and what to do about it.")


class DocumentPublic(BaseModel):
    id: str
    name: str
    media_type: str
    artifact_id: str | None = Field(description="Its file; null once that file was deleted.")
    status: str = Field(description="`queued` (its index job has not read it yet), "
                        "`indexed` or `failed` (see `error`).")  # fmt: skip
    passages: int
    error: DocumentError | None
    job_id: str | None = Field(description="The `index` job that reads it.")
    created_at: datetime
    indexed_at: datetime | None

    @classmethod
    def of(cls, state: DocumentState) -> DocumentPublic:
        document, error = state.document, state.error
        return cls(
            id=document.id,
            name=document.name,
            media_type=document.media_type,
            artifact_id=document.artifact_id,
            status=state.status,
            passages=document.passage_count,
            error=None
            if error is None
            else DocumentError(code=error["code"], message=public_message(error["message"])),
            job_id=document.job_id,
            created_at=document.created_at,
            indexed_at=document.indexed_at,
        )


class CollectionPublic(BaseModel):
    id: str
    name: str
    created_at: datetime
    document_count: int
    passage_count: int = Field(description="Passages of its indexed documents.")

    @classmethod
    def of(cls, summary: CollectionSummary) -> CollectionPublic:
        return cls(
            id=summary.collection.id,
            name=summary.collection.name,
            created_at=summary.collection.created_at,
            document_count=summary.documents,
            passage_count=summary.passages,
        )


class CollectionDetail(CollectionPublic):
    """A collection with its documents, in the order they were added."""

    documents: list[DocumentPublic]

    @classmethod
    def with_documents(
        cls, collection: Collection, documents: list[DocumentState]
    ) -> CollectionDetail:
        return cls(
            id=collection.id,
            name=collection.name,
            created_at=collection.created_at,
            document_count=len(documents),
            passage_count=sum(d.document.passage_count for d in documents),
            documents=[DocumentPublic.of(d) for d in documents],
        )


class CollectionList(BaseModel):
    items: list[CollectionPublic]


class DocumentsAdded(BaseModel):
    """The documents added (``queued``) and the ``index`` job that reads them."""

    documents: list[DocumentPublic]
    job: JobPublic


class PassagePublic(BaseModel):
    id: str
    document: str = Field(description="The document's id.")
    document_name: str
    position: int = Field(description="Its order within its document, from 0.")
    heading: str | None = Field(description="The headings it is under (`A > B`).")
    text: str
    score: float = Field(
        description="How well it matches, higher first: the query's words it has, plus "
        "its full-text rank (BM25, or ts_rank_cd on PostgreSQL) squeezed into [0, 1)."
    )
    start: float | None = Field(description="Seconds into the recording (transcripts, subtitles).")
    end: float | None

    @classmethod
    def of(cls, passage: Passage) -> PassagePublic:
        return cls(
            id=passage.id,
            document=passage.document_id,
            document_name=passage.document_name,
            position=passage.position,
            heading=passage.heading,
            text=passage.text,
            score=round(passage.score, 6),
            start=passage.start,
            end=passage.end,
        )


class SearchResults(BaseModel):
    query: str
    ranking: Literal["hybrid", "full_text"] = Field(
        description="``hybrid``: full text fused with embeddings; ``full_text``: words "
        "only (embeddings are off, or their engine failed just now)."
    )
    items: list[PassagePublic] = Field(description="Best first.")
