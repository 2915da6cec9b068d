"""Collections of documents: create, list, fill (an ``index`` job reads the files),
search, delete. Another owner's collection is a 404."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

import anyio
from anyio import CapacityLimiter
from fastapi import APIRouter, Query, Request, Response, status
from pydantic import StringConstraints
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from longplay.api import bodies, uploads
from longplay.api.collection_schemas import (
    CollectionCreate,
    CollectionDetail,
    CollectionList,
    CollectionPublic,
    DocumentPublic,
    DocumentsAdd,
    DocumentsAdded,
    PassagePublic,
    SearchResults,
)
from longplay.api.deps import KeyDep, as_owner, check_key
from longplay.api.errors import errors
from longplay.api.openapi import json_body, ref_of
from longplay.jobs import collections, refusals, retrieval, submission
from longplay.jobs.collections import CollectionSummary
from longplay.settings import get_settings
from longplay.store.models import Owner
from longplay.store.views import JobPublic

router = APIRouter(prefix="/v1/collections", tags=["collections"])
DOCUMENTS_TEXT_BYTES = 1024
"""Documents come as files; a text part where one belongs is refused anyway."""

QUESTIONS_AT_ONCE = 8
"""Searches of one API process that embed their question at once."""


@cache
def _question_slots() -> CapacityLimiter:
    return CapacityLimiter(QUESTIONS_AT_ONCE)


async def question_vector(query: str) -> retrieval.Probe | None:
    """The question's embedding, or None to search by the words alone
    (:func:`~longplay.jobs.retrieval.query_vector_or_words`). On threads of its own
    limit: an embedding server that hangs holds searches, never the threads that
    ``/healthz``, ``/metrics`` and uploads run on."""
    return await anyio.to_thread.run_sync(
        retrieval.query_vector_or_words, query, limiter=_question_slots()
    )


ADD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "minItems": 1,
                            "maxItems": get_settings().api.max_inputs_per_job,
                            "description": "One or more documents: .txt, .md, .html, .pdf, "
                            ".docx, .srt, .vtt, or a transcript .json.",
                        }
                    },
                    "required": ["file"],
                }
            },
            "application/json": {"schema": {"$ref": ref_of(DocumentsAdd)}},
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CollectionPublic,
    responses=errors(401, 413, 422),
    openapi_extra=json_body(CollectionCreate),
)
async def create_collection(request: Request, key: KeyDep) -> CollectionPublic:
    """Create an empty collection; add documents to it next."""
    _, raw = await bodies.read_json_body(request)
    body = bodies.validated(CollectionCreate, raw)

    def create(session: Session, owner: Owner) -> CollectionPublic:
        collection = collections.create_collection(session, owner=owner, name=body.name)
        return CollectionPublic.of(CollectionSummary(collection, 0, 0))

    return await as_owner(key, create)


@router.get("", response_model=CollectionList, responses=errors(401))
async def list_collections(key: KeyDep) -> CollectionList:
    """Your collections, newest first, with their documents and passages counted."""
    return await as_owner(
        key,
        lambda session, owner: CollectionList(
            items=[
                CollectionPublic.of(c) for c in collections.list_collections(session, owner=owner)
            ]
        ),
    )


@router.get("/{collection_id}", response_model=CollectionDetail, responses=errors(401, 404))
async def get_collection(collection_id: str, key: KeyDep) -> CollectionDetail:
    """A collection and its documents, each with its status and passage count."""

    def read(session: Session, owner: Owner) -> CollectionDetail:
        collection = collections.get_collection(session, owner=owner, collection_id=collection_id)
        return CollectionDetail.with_documents(
            collection, collections.documents_of(session, collection)
        )

    return await as_owner(key, read)


@router.delete(
    "/{collection_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(401, 404, 409),
)
async def delete_collection(collection_id: str, key: KeyDep) -> Response:
    """Delete a collection with its documents and passages (the files stay artifacts)."""
    await as_owner(
        key,
        lambda session, owner: collections.delete_collection(
            session, owner=owner, collection_id=collection_id
        ),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{collection_id}/documents",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DocumentsAdded,
    responses=errors(401, 404, 413, 422, 429, 503),
    openapi_extra=ADD_BODY,
)
async def add_documents(collection_id: str, request: Request, key: KeyDep) -> DocumentsAdded:
    """Add documents, uploaded (multipart ``file``, one or more) or already stored
    (JSON ``{"artifacts": [ids]}``); an ``index`` job reads them, at low priority."""
    if bodies.media_type(request) == "multipart/form-data":
        await check_key(key)
    artifact_ids, files = await _read_documents(request)
    received = await run_in_threadpool(uploads.receive_all, files) if files else []

    def add(session: Session, owner: Owner) -> DocumentsAdded:
        try:
            stored = [uploads.adopt(session, owner, r) for r in received]
        except BaseException:
            uploads.discard(received)
            raise
        added = collections.add_documents(
            session,
            owner=owner,
            collection_id=collection_id,
            artifact_ids=artifact_ids,
            uploaded=stored,
        )
        states = [collections.DocumentState(d, d.status, d.error) for d in added.documents]
        return DocumentsAdded(
            documents=[DocumentPublic.of(s) for s in states], job=JobPublic.of(added.job)
        )

    try:
        answer = await as_owner(key, add)
    except BaseException:
        uploads.discard(received)  # whatever was not moved into the store yet
        raise
    await run_in_threadpool(submission.book_rounds, answer.job.run_at, answer.job.deadline)
    return answer


async def _read_documents(request: Request) -> tuple[list[str], list[UploadFile]]:
    """Artifact ids from a JSON body, or the files of a multipart one."""
    media_type = bodies.media_type(request)
    if media_type == "multipart/form-data":
        limits = get_settings().api
        within = uploads.within_limit(request, "documents")
        form = await bodies.read_form(
            within,
            "a documents upload's",
            {"file": limits.max_inputs_per_job},
            max_part_size=DOCUMENTS_TEXT_BYTES,
            max_text_bytes=DOCUMENTS_TEXT_BYTES,
        )
        files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
        if not files:
            raise refusals.Invalid(
                "send the documents as one or more multipart parts named 'file'",
                [{"loc": ["body", "file"], "msg": "no files", "type": "missing"}],
            )
        return [], files
    if media_type == "application/json":
        _, raw = await bodies.read_json_body(request)
        return bodies.validated(DocumentsAdd, raw).artifacts, []
    raise refusals.Invalid(
        "send multipart/form-data with files, or application/json with artifact ids",
        [{"loc": ["header", "content-type"], "msg": "unsupported", "type": "content_type"}],
    )


@router.delete(
    "/{collection_id}/documents/{document_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(401, 404, 409),
)
async def delete_document(collection_id: str, document_id: str, key: KeyDep) -> Response:
    """Remove a document and its passages from the collection (its file stays)."""
    await as_owner(
        key,
        lambda session, owner: collections.delete_document(
            session, owner=owner, collection_id=collection_id, document_id=document_id
        ),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{collection_id}/search", response_model=SearchResults, responses=errors(401, 404, 422)
)
async def search(
    collection_id: str,
    key: KeyDep,
    q: Annotated[
        str,
        StringConstraints(strip_whitespace=True),  # only spaces: as empty, a 422
        Query(min_length=1, max_length=1000, description="Words to find."),
    ],
    limit: Annotated[int, Query(ge=1, le=collections.MAX_SEARCH_RESULTS)] = 10,
) -> SearchResults:
    """The passages that best match ``q``, best first: full text (BM25 on SQLite,
    ``ts_rank_cd`` on PostgreSQL), fused with embeddings where they are on
    (``LONGPLAY_EMBED_ENGINE``); ``ranking`` says which was done."""
    probe = None
    if retrieval.embedding():
        # The key and the collection are checked before the model runs, and the model
        # runs outside any store call, so no connection waits on it.
        await as_owner(
            key,
            lambda session, owner: collections.get_collection(
                session, owner=owner, collection_id=collection_id
            ),
        )
        probe = await question_vector(q)
    return await as_owner(
        key,
        lambda session, owner: SearchResults(
            query=q,
            ranking="full_text" if probe is None else "hybrid",
            items=[
                PassagePublic.of(p)
                for p in collections.search(
                    session,
                    owner=owner,
                    collection_id=collection_id,
                    query=q,
                    limit=limit,
                    probe=probe,
                )
            ],
        ),
    )
