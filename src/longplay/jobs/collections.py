"""Collections of documents: what routes and the CLI call to make, fill, read and search
them. Every call is scoped to an owner: another owner's collection is not found.

Adding documents stores them ``queued`` and submits one ``index`` job (low priority)
that reads them; :func:`check_named_collection` is the submit-time check of any kind
whose params name a ``collection`` (:mod:`longplay.jobs.collection_checks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from longplay.framework.library import Passage
from longplay.jobs import gone, retrieval
from longplay.jobs.collection_checks import COLLECTION_FIELD, check_document
from longplay.jobs.library import as_passage
from longplay.jobs.refusals import Conflict, Invalid, NotFound
from longplay.jobs.submission import submit_job
from longplay.store import files
from longplay.store import library as queries
from longplay.store.models import (
    FINISHED,
    Artifact,
    Collection,
    Document,
    DocumentStatus,
    Job,
    JobStatus,
    Owner,
    new_id,
)
from longplay.store.models import Passage as PassageRow

INDEX_KIND = "index"
MAX_SEARCH_RESULTS = 100
FINISHED_STATUSES = [status.value for status in FINISHED]


@dataclass(frozen=True)
class CollectionSummary:
    """A collection with the counts a list shows."""

    collection: Collection
    documents: int
    passages: int


@dataclass(frozen=True)
class DocumentState:
    """A document as its owner sees it: its row, and its status and error as they are
    now (a document whose ``index`` job ended without reading it is failed)."""

    document: Document
    status: str
    error: dict[str, Any] | None


def create_collection(session: Session, *, owner: Owner, name: str) -> Collection:
    collection = Collection(id=new_id("col"), owner_id=owner.id, name=name)
    session.add(collection)
    session.commit()
    return collection


def get_collection(session: Session, *, owner: Owner, collection_id: str) -> Collection:
    collection = queries.collection_of(session, owner.id, collection_id)
    if collection is None:
        raise NotFound(f"no collection {collection_id}")
    return collection


def list_collections(session: Session, *, owner: Owner) -> list[CollectionSummary]:
    """The owner's collections, newest first, with their documents and passages counted."""
    documents = (
        select(Document.collection_id, func.count().label("n"))
        .group_by(Document.collection_id)
        .subquery()
    )
    passages = (
        select(PassageRow.collection_id, func.count().label("n"))
        .group_by(PassageRow.collection_id)
        .subquery()
    )
    rows = session.execute(
        select(Collection, documents.c.n, passages.c.n)
        .outerjoin(documents, documents.c.collection_id == Collection.id)
        .outerjoin(passages, passages.c.collection_id == Collection.id)
        .where(Collection.owner_id == owner.id)
        .order_by(Collection.created_at.desc(), Collection.id.desc())
    )
    return [CollectionSummary(row[0], row[1] or 0, row[2] or 0) for row in rows]


def documents_of(session: Session, collection: Collection) -> list[DocumentState]:
    """The collection's documents in the order they were added, with their status."""
    documents = queries.documents_of(session, collection.id)
    job_ids = {d.job_id for d in documents if d.status == DocumentStatus.QUEUED.value and d.job_id}
    jobs = (
        {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(job_ids)))}
        if job_ids
        else {}
    )
    return [_state(document, jobs.get(document.job_id or "")) for document in documents]


def _state(document: Document, job: Job | None) -> DocumentState:
    if (
        document.status == DocumentStatus.QUEUED.value
        and job is not None
        and job.status_enum.finished
        and job.status != JobStatus.COMPLETED.value
    ):
        why = (job.error or {}).get("message") or f"its index job {job.id} is {job.status}"
        error = {"code": "not_indexed", "message": f"not indexed: {why}"}
        return DocumentState(document, DocumentStatus.FAILED.value, error)
    return DocumentState(document, document.status, document.error)


def delete_collection(session: Session, *, owner: Owner, collection_id: str) -> None:
    """Delete the collection, its documents and their passages (not their files);
    :class:`Conflict` while an ``index`` job of it has not finished."""
    collection = get_collection(session, owner=owner, collection_id=collection_id)
    _not_being_indexed(session, queries.documents_of(session, collection.id))
    session.execute(delete(PassageRow).where(PassageRow.collection_id == collection.id))
    session.execute(delete(Document).where(Document.collection_id == collection.id))
    session.delete(collection)
    session.commit()


@dataclass(frozen=True)
class Added:
    """Documents added to a collection and the ``index`` job that reads them."""

    documents: list[Document]
    job: Job


def add_documents(
    session: Session,
    *,
    owner: Owner,
    collection_id: str,
    artifact_ids: Sequence[str] = (),
    uploaded: Sequence[Artifact] = (),
) -> Added:
    """Add the owner's artifacts (``artifact_ids``, e.g. a transcript a job made) and
    the files just ``uploaded`` to the collection, and submit the job that indexes
    them; nothing is stored when the submission is refused, not even the uploads."""
    try:
        documents = _new_documents(session, owner, collection_id, artifact_ids, uploaded)
    except BaseException:
        session.rollback()
        for artifact in uploaded:
            files.remove(artifact)
        raise
    job = submit_job(
        session,
        owner=owner,
        kind_name=INDEX_KIND,
        params={COLLECTION_FIELD: collection_id, "documents": [d.id for d in documents]},
        input_ids=list(artifact_ids),
        uploaded=uploaded,
        admit=False,
    ).job
    for document in documents:
        document.job_id = job.id
    session.commit()
    return Added(documents, job)


def _new_documents(
    session: Session,
    owner: Owner,
    collection_id: str,
    artifact_ids: Sequence[str],
    uploaded: Sequence[Artifact],
) -> list[Document]:
    """The documents of the artifacts, added to the session (not yet committed); a file
    that cannot be a document refuses them all (:func:`check_document`)."""
    collection = get_collection(session, owner=owner, collection_id=collection_id)
    if not artifact_ids and not uploaded:
        raise Invalid(
            "send one or more files (multipart 'file') or artifact ids ('artifacts')",
            [{"loc": ["body"], "msg": "no documents", "type": "missing"}],
        )
    named = {
        a.id: a
        for a in session.scalars(
            select(Artifact).where(Artifact.id.in_(artifact_ids), Artifact.owner_id == owner.id)
        )
    }
    missing = [i for i, artifact_id in enumerate(artifact_ids) if artifact_id not in named]
    if missing:
        why = gone.why_gone(
            session, owner_id=owner.id, artifact_ids=[artifact_ids[i] for i in missing]
        )
        said = [why.get(artifact_ids[i], f"no such artifact: {artifact_ids[i]}") for i in missing]
        problems = [
            {
                "loc": ["body", "artifacts", i],
                "msg": why.get(artifact_ids[i], "no such artifact"),
                "type": "gone" if artifact_ids[i] in why else "not_found",
            }
            for i in missing
        ]
        raise Invalid("; ".join(said), problems)
    listed = [named[i] for i in artifact_ids]
    for field, sent in (("artifacts", listed), ("file", uploaded)):
        for index, artifact in enumerate(sent):
            check_document(artifact.name, files.path_of(artifact), ["body", field, index])
    artifacts = [*listed, *uploaded]
    seq = queries.next_document_seq(session, collection.id)
    documents = [
        Document(
            id=new_id("doc"),
            collection_id=collection.id,
            seq=seq + offset,
            artifact_id=artifact.id,
            name=artifact.name,
            media_type=artifact.media_type,
            status=DocumentStatus.QUEUED.value,
            passage_count=0,
        )
        for offset, artifact in enumerate(artifacts)
    ]
    session.add_all(documents)
    return documents


def delete_document(
    session: Session, *, owner: Owner, collection_id: str, document_id: str
) -> None:
    """Remove a document and its passages from the collection (its file stays);
    :class:`Conflict` while its ``index`` job has not finished."""
    collection = get_collection(session, owner=owner, collection_id=collection_id)
    document = session.get(Document, document_id)
    if document is None or document.collection_id != collection.id:
        raise NotFound(f"no document {document_id} in collection {collection_id}")
    _not_being_indexed(session, [document])
    session.execute(delete(PassageRow).where(PassageRow.document_id == document.id))
    session.delete(document)
    session.commit()


def _not_being_indexed(session: Session, documents: Sequence[Document]) -> None:
    job_ids = {d.job_id for d in documents if d.job_id}
    if not job_ids:
        return
    busy = session.scalar(
        select(Job.id).where(Job.id.in_(job_ids), Job.status.not_in(FINISHED_STATUSES)).limit(1)
    )
    if busy is not None:
        raise Conflict(f"job {busy} is still indexing it; wait for it, or cancel it first")


def search(
    session: Session,
    *,
    owner: Owner,
    collection_id: str,
    query: str,
    limit: int = 10,
    probe: retrieval.Probe | None = None,
) -> list[Passage]:
    """The collection's passages that best match ``query``, best first; hybrid with
    the query's embedding (:func:`longplay.jobs.retrieval.query_vector`)."""
    collection = get_collection(session, owner=owner, collection_id=collection_id)
    found = retrieval.search(session, collection.id, query, min(limit, MAX_SEARCH_RESULTS), probe)
    return [as_passage(f.passage, f.document_name, f.score) for f in found]
