"""Job records over the store: :class:`~longplay.framework.records.JobRecords` for the
kinds that report on an owner's jobs (``export``), and who may read whose.

Records are read a page of jobs at a time, each page in a short session of its own,
so reading a long history holds neither a transaction nor the history in memory.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import redis
from pydantic import BaseModel
from sqlalchemy import Select, select, tuple_
from sqlalchemy.orm import Session

from longplay import keys
from longplay.framework import PermanentError
from longplay.framework.records import (
    FileRecord,
    ForOwner,
    JobRecord,
    RecordQuery,
    RecordTotals,
)
from longplay.jobs.refusals import NotFound
from longplay.redis_client import get_redis
from longplay.store import files
from longplay.store.db import session_scope
from longplay.store.models import Artifact, Job, JobStatus, Owner
from longplay.store.owners import find_owner, owner_name
from longplay.store.queries import outputs_of_many
from longplay.store.views import JobPublic

PAGE = 200
"""Jobs read per page (and per session)."""
EVENTS_PAGE = 500


def check_for_owner(session: Session, owner: Owner, params: BaseModel) -> None:
    """At submit: a :class:`ForOwner` parameter naming another owner is for admin keys,
    and names an owner that exists; anything else is a 404, as another owner's job is."""
    named = params.owner if isinstance(params, ForOwner) else None
    if named is None or owner_name(named) == owner.name:
        return
    if not owner.is_admin or _owner_named(session, named) is None:
        raise NotFound(f"no owner {named}")


def records_for(job_id: str, owner_id: str, params: BaseModel) -> StoreRecords:
    """The records a running job reads: its owner's, or the owner an admin named (checked
    again here, in case the key's owner stopped being an admin since)."""
    named = params.owner if isinstance(params, ForOwner) else None
    with session_scope() as session:
        owner = session.get(Owner, owner_id)
        target = owner if named is None or owner is None else _owner_named(session, named)
        if owner is None or target is None or (target.id != owner.id and not owner.is_admin):
            raise PermanentError(f"no owner {named}", code="not_found")
        return StoreRecords(target.id, target.name, job_id)


def _owner_named(session: Session, name: str) -> Owner | None:
    return find_owner(session, name)


class StoreRecords:
    """One owner's job records, read from the store (and their event streams)."""

    def __init__(self, owner_id: str, owner: str, reader_job_id: str) -> None:
        self._owner_id = owner_id
        self.owner = owner
        self._reader = reader_job_id
        """The job reading: never one of its own records (it is still being written)."""

    def totals(self, query: RecordQuery) -> RecordTotals:
        jobs = file_count = size = 0
        for page in self._pages(query):
            jobs += len(page)
            with session_scope() as session:
                for job_files in self._files(session, page, query).values():
                    present = [f for f in job_files if f.path is not None]
                    file_count += len(present)
                    size += sum(f.size for f in present)
        return RecordTotals(jobs=jobs, files=file_count, bytes=size)

    def jobs(self, query: RecordQuery) -> Iterator[JobRecord]:
        for page in self._pages(query):
            with session_scope() as session:
                job_files = self._files(session, page, query)
                kept = outputs_of_many(
                    session, [j.id for j in page if j.status == JobStatus.COMPLETED.value]
                )
                views = [JobPublic.of(j, outputs=kept.get(j.id)) for j in page]
            for job, view in zip(page, views, strict=True):
                yield JobRecord(
                    job_id=job.id,
                    view=view.model_dump(mode="json"),
                    events=events_summary(job.id),
                    files=job_files[job.id],
                )

    def _pages(self, query: RecordQuery) -> Iterator[list[Job]]:
        """The matching jobs, oldest first, a page (detached from its session) at a time."""
        after: tuple[Any, str] | None = None
        while True:
            with session_scope() as session:
                statement = self._select(query)
                if after is not None:
                    statement = statement.where(tuple_(Job.created_at, Job.id) > after)
                page = list(session.scalars(statement.limit(PAGE)))
                session.expunge_all()
            if not page:
                return
            yield page
            after = (page[-1].created_at, page[-1].id)

    def _select(self, query: RecordQuery) -> Select[Job]:
        statement = select(Job).where(Job.owner_id == self._owner_id, Job.id != self._reader)
        if query.kinds:
            statement = statement.where(Job.kind.in_(list(query.kinds)))
        if query.except_kinds:
            statement = statement.where(Job.kind.not_in(list(query.except_kinds)))
        if query.statuses:
            statement = statement.where(Job.status.in_(list(query.statuses)))
        if query.since is not None:
            statement = statement.where(Job.created_at >= query.since)
        if query.until is not None:
            statement = statement.where(Job.created_at < query.until)
        return statement.order_by(Job.created_at, Job.id)

    def _files(
        self, session: Session, page: Sequence[Job], query: RecordQuery
    ) -> dict[str, list[FileRecord]]:
        """Each job's files: its inputs (when asked for) in its order, then its outputs."""
        found: dict[str, list[FileRecord]] = {job.id: [] for job in page}
        if query.include_inputs:
            named = {i for job in page for i in job.inputs if isinstance(i, str)}
            rows = {
                a.id: a
                for a in session.scalars(
                    select(Artifact).where(
                        Artifact.id.in_(named), Artifact.owner_id == self._owner_id
                    )
                )
            }
            for job in page:
                for artifact_id in (i for i in job.inputs if isinstance(i, str)):
                    artifact = rows.get(artifact_id)
                    found[job.id].append(
                        _record(artifact, "input") if artifact is not None else _gone(artifact_id)
                    )
        for job_id, outputs in outputs_of_many(session, [j.id for j in page]).items():
            found[job_id] += [_record(a, "output") for a in outputs]
        return found


def _record(artifact: Artifact, role: Literal["input", "output"]) -> FileRecord:
    """A file as the job at hand has it: another job's output it reads is its input."""
    path = files.path_of(artifact)
    return FileRecord(
        artifact_id=artifact.id,
        name=files.safe_name(artifact.name, default=artifact.id),
        role=role,
        media_type=artifact.media_type,
        size=artifact.size,
        sha256=artifact.sha256,
        path=path if path.is_file() else None,
    )


def _gone(artifact_id: str) -> FileRecord:
    """An input the job names whose record retention deleted."""
    return FileRecord(
        artifact_id=artifact_id,
        name=artifact_id,
        role="input",
        media_type="",
        size=0,
        sha256="",
        path=None,
    )


def events_summary(job_id: str) -> dict[str, Any]:
    """What the job's event stream holds: how many events of each type, the first and
    the last time; ``retained: false`` once retention dropped the stream."""
    client = get_redis()
    stream = keys.events_stream(job_id)
    counts: Counter[str] = Counter()
    first_at = last_at = None
    start = "-"
    try:
        while True:
            batch: Any = client.xrange(stream, min=start, count=EVENTS_PAGE)
            for _, fields in batch:
                event = json.loads(fields[b"data"])
                counts[str(event.get("type"))] += 1
                first_at = first_at or event.get("at")
                last_at = event.get("at")
            if len(batch) < EVENTS_PAGE:
                break
            start = "(" + batch[-1][0].decode()
    except redis.RedisError:
        return {"retained": False, "count": 0, "types": {}}
    return {
        "retained": bool(counts),
        "count": sum(counts.values()),
        "types": dict(sorted(counts.items())),
        "first_at": first_at,
        "last_at": last_at,
    }
