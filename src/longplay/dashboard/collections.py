"""Collections' pages: the list with a form to create one, and a collection's page with
its documents (live while they are indexed), an upload form, search, and deletes.

Each page and form goes through the same service calls as the JSON routes of
``/v1/collections`` (:mod:`longplay.jobs.collections`) and is presented by their own
models (:mod:`longplay.api.collection_schemas`). Adding documents takes the steps of
``POST /v1/collections/{id}/documents`` with multipart, as the submit form does for a
job: the uploads are copied and hashed outside the store call, one store call adopts
them and adds the documents (which submits their ``index`` job), and admission is asked
for a round after the commit. A refusal (a file that is not a document) shows the page
again with the reason, as the submit form does.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Query, Request, Response, status
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from longplay.api import bodies, uploads
from longplay.api.collection_schemas import (
    CollectionCreate,
    CollectionDetail,
    CollectionPublic,
    PassagePublic,
)
from longplay.api.routes.collections import DOCUMENTS_TEXT_BYTES, question_vector
from longplay.dashboard.live import MAX_FOLLOWED
from longplay.dashboard.sessions import Viewer
from longplay.dashboard.web import (
    PageRoute,
    as_viewer,
    changing,
    refuse_foreign,
    render,
    see_other,
)
from longplay.jobs import collections, refusals, retrieval, service, submission
from longplay.settings import get_settings
from longplay.store.models import DocumentStatus

router = APIRouter(route_class=PageRoute, include_in_schema=False)
SEARCH_RESULTS = 10
"""Passages a search shows, as many as the API's search gives by default."""
# What ids look like (``models.new_id``): a notice names only an id, never what a
# crafted link wants it to say.
COLLECTION_ID = re.compile(r"col_[0-9a-f]{1,40}")
DOCUMENT_ID = re.compile(r"doc_[0-9a-f]{1,40}")
Query1000 = Annotated[str, Query(max_length=1000)]


def _collection_url(collection_id: str, **notice: str | int) -> str:
    url = f"/collections/{quote(collection_id, safe='')}"
    return f"{url}?{urlencode(notice)}" if notice else url


# The list, and creating one


def _list_page(
    request: Request,
    viewer: Viewer,
    listed: list[CollectionPublic],
    *,
    name: str = "",
    problem: refusals.Invalid | None = None,
    deleted: str | None = None,
    status_code: int = status.HTTP_200_OK,
) -> HTMLResponse:
    return render(
        request,
        "collections.html",
        {
            "collections": listed,
            "name": name,
            "problem": str(problem) if problem else None,
            "deleted": deleted if deleted and COLLECTION_ID.fullmatch(deleted) else None,
        },
        viewer=viewer,
        status_code=status_code,
    )


def _listed(session: Session, viewer: Viewer) -> tuple[Viewer, list[CollectionPublic]]:
    """The viewer and their collections, newest first (``GET /v1/collections``)."""
    found = collections.list_collections(session, owner=viewer.owner)
    return viewer, [CollectionPublic.of(c) for c in found]


@router.get("/collections", response_class=HTMLResponse)
async def collections_page(
    request: Request, deleted: Annotated[str | None, Query(max_length=60)] = None
) -> Response:
    """Your collections, newest first, and a form to create one; with ``deleted``, a
    notice that that collection was deleted (where Delete lands)."""
    viewer, listed = await as_viewer(request, _listed)
    return _list_page(request, viewer, listed, deleted=deleted)


@router.post("/collections", response_class=HTMLResponse)
async def create(
    request: Request,
    name: Annotated[str, Form(max_length=10_000)] = "",  # the model says 200, at the field
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Create a collection and go to its page; a name the API would refuse shows the
    list again with why."""
    try:
        body = CollectionCreate.model_validate({"name": name})
    except ValidationError as exc:
        problem = bodies.refusal_of(exc)
        # The form is checked like any other before it is answered.
        viewer, listed = await changing(request, _listed, csrf=csrf)
        return _list_page(
            request,
            viewer,
            listed,
            name=name,
            problem=problem,
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    made = await changing(
        request,
        lambda session, viewer: (
            collections.create_collection(session, owner=viewer.owner, name=body.name).id
        ),
        csrf=csrf,
    )
    return see_other(_collection_url(made))


# One collection


def _read(session: Session, viewer: Viewer, collection_id: str) -> dict[str, Any]:
    """The collection with its documents (``GET /v1/collections/{id}``), and the status
    of each ``index`` job still reading some of them, for the page to follow live."""
    collection = collections.get_collection(
        session, owner=viewer.owner, collection_id=collection_id
    )
    detail = CollectionDetail.with_documents(
        collection, collections.documents_of(session, collection)
    )
    reading = [
        d.job_id for d in detail.documents if d.status == DocumentStatus.QUEUED.value and d.job_id
    ]
    followed = list(dict.fromkeys(reading))[:MAX_FOLLOWED]  # what one /live follows
    jobs = service.job_statuses(session, owner=viewer.owner, job_ids=followed)  # not deleted
    return {"viewer": viewer, "collection": detail, "jobs": jobs}


def _search(
    session: Session, viewer: Viewer, collection_id: str, query: str, probe: retrieval.Probe | None
) -> list[PassagePublic]:
    found = collections.search(
        session,
        owner=viewer.owner,
        collection_id=collection_id,
        query=query,
        limit=SEARCH_RESULTS,
        probe=probe,
    )
    return [PassagePublic.of(p) for p in found]


async def _page(
    request: Request,
    collection_id: str,
    *,
    query: str = "",
    notice: str = "",
    problem: refusals.Invalid | None = None,
    files_sent: bool = False,
    status_code: int = status.HTTP_200_OK,
) -> HTMLResponse:
    """The collection's page; with ``query``, the passages that best match it; after a
    ``problem`` with an upload, the reason where the form is."""
    found = await as_viewer(request, lambda session, viewer: _read(session, viewer, collection_id))
    passages: list[PassagePublic] | None = None
    ranking = ""
    if query:
        # The collection is the viewer's (read above) before the model runs.
        probe = await question_vector(query)
        ranking = "full_text" if probe is None else "hybrid"
        passages = await as_viewer(
            request, lambda session, viewer: _search(session, viewer, collection_id, query, probe)
        )
    return render(
        request,
        "collection.html",
        {
            "collection": found["collection"],
            "jobs": found["jobs"],
            "query": query,
            "passages": passages,
            "ranking": ranking,
            "notice": notice,
            "problem": str(problem) if problem else None,
            "files_sent": files_sent,
            "max_files": get_settings().api.max_inputs_per_job,
        },
        viewer=found["viewer"],
        status_code=status_code,
    )


@router.get("/collections/{collection_id}", response_class=HTMLResponse)
async def collection_page(
    request: Request,
    collection_id: str,
    q: Query1000 = "",
    added: Annotated[int | None, Query(ge=0, le=1000)] = None,
    deleted: Annotated[str | None, Query(max_length=60)] = None,
) -> Response:
    """One collection: its documents with their status, an upload form, and with ``q``
    the passages that best match it. ``added`` and ``deleted`` are the notices of the
    forms that land here."""
    notice = ""
    if added:
        notice = f"{added} document{'s' if added != 1 else ''} added; an index job reads them."
    elif deleted and DOCUMENT_ID.fullmatch(deleted):
        notice = f"Document {deleted} deleted."
    return await _page(request, collection_id, query=q.strip(), notice=notice)


@router.post("/collections/{collection_id}/documents", response_class=HTMLResponse)
async def add_documents(request: Request, collection_id: str) -> Response:
    """Store the files chosen and submit the ``index`` job that reads them; on success
    the collection's page, else the page again saying why (nothing is stored)."""
    # Who sends it, and from where, is known before the body is read: a form from
    # nobody signed in, or from another site, is refused before any file is stored.
    refuse_foreign(request)
    await as_viewer(request, lambda session, viewer: viewer)
    within = uploads.within_limit(request, "documents")
    form = await bodies.read_form(
        within,
        "this form's",
        {"csrf": 1, "file": get_settings().api.max_inputs_per_job},
        max_part_size=DOCUMENTS_TEXT_BYTES,
        max_text_bytes=DOCUMENTS_TEXT_BYTES,
    )
    try:
        files = [f for f in form.getlist("file") if isinstance(f, UploadFile) and f.filename]
        csrf = form.get("csrf")
        if not files:  # the field is required: a browser sends none only when told to
            return await _page(
                request,
                collection_id,
                problem=refusals.Invalid("choose one or more files to add"),
                status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            )
        received = await run_in_threadpool(uploads.receive_all, files)

        def add(session: Session, viewer: Viewer) -> tuple[int, Any, Any]:
            try:
                stored = [uploads.adopt(session, viewer.owner, r) for r in received]
            except BaseException:
                uploads.discard(received)
                raise
            made = collections.add_documents(
                session, owner=viewer.owner, collection_id=collection_id, uploaded=stored
            )
            return len(made.documents), made.job.run_at, made.job.deadline

        try:
            count, run_at, deadline = await changing(request, add, csrf=csrf)
        except refusals.Invalid as exc:
            uploads.discard(received)  # whatever was not moved into the store yet
            return await _page(
                request,
                collection_id,
                problem=exc,
                files_sent=bool(files),
                status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            )
        except BaseException:
            uploads.discard(received)
            raise
    finally:
        await form.close()
    await run_in_threadpool(submission.book_rounds, run_at, deadline)
    return see_other(_collection_url(collection_id, added=count))


@router.post("/collections/{collection_id}/documents/{document_id}/delete")
async def delete_document(
    request: Request,
    collection_id: str,
    document_id: str,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Remove a document and its passages, as ``DELETE`` on its API address does."""
    await changing(
        request,
        lambda session, viewer: collections.delete_document(
            session, owner=viewer.owner, collection_id=collection_id, document_id=document_id
        ),
        csrf=csrf,
    )
    return see_other(_collection_url(collection_id, deleted=document_id))


@router.post("/collections/{collection_id}/delete")
async def delete_collection(
    request: Request, collection_id: str, csrf: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    """Delete the collection with its documents and passages (their files stay)."""
    await changing(
        request,
        lambda session, viewer: collections.delete_collection(
            session, owner=viewer.owner, collection_id=collection_id
        ),
        csrf=csrf,
    )
    return see_other("/collections?" + urlencode({"deleted": collection_id}))
