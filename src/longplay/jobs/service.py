"""The jobs service: what routes and the CLI call to read and change jobs. Every query
is scoped to an owner.

Each call that changes a job is a whole unit of work: it commits, then announces
(:mod:`longplay.jobs.unit`), then asks admission to hand what is due to the broker.
A caller never commits for it. Submitting lives in :mod:`longplay.jobs.submission`.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import String, cast, delete, exists, select, tuple_, update
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import Session

from longplay.framework import get_kind
from longplay.jobs import dependencies, events, flow_events, gone, lifecycle, paging
from longplay.jobs.admission import position
from longplay.jobs.admission.position import queue_positions as queue_positions
from longplay.jobs.dependencies import waiting_for as waiting_for
from longplay.jobs.reaper import silent
from longplay.jobs.refusals import Conflict, Forbidden, Gone, Invalid, NotFound, ServiceError
from longplay.jobs.unit import UnitOfWork, unit_of_work
from longplay.settings import get_settings
from longplay.store import files, queries
from longplay.store.db import affected
from longplay.store.models import (
    FINISHED,
    Artifact,
    ArtifactRole,
    Document,
    Flow,
    Job,
    JobAttempt,
    JobStatus,
    Owner,
    WebhookDelivery,
    utcnow,
)

_FINISHED = [status.value for status in FINISHED]


def stalled(jobs: Sequence[Job]) -> dict[str, str]:
    """Why each of ``jobs`` that nothing moves is stuck, by id: a queued job that no
    live worker takes, a running one whose worker has fallen silent."""
    return {**position.stalled(jobs), **silent(jobs)}


@dataclass(frozen=True)
class Page:
    jobs: Sequence[Job]
    next_cursor: str | None


def get_job(session: Session, *, owner: Owner, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.owner_id != owner.id:
        raise NotFound(f"no job {job_id}")
    return job


def list_jobs(
    session: Session,
    *,
    owner: Owner,
    status: Sequence[JobStatus] = (),
    kind: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    all_owners: bool = False,
) -> Page:
    """The owner's jobs, newest first; ``cursor`` continues after the last page.

    ``all_owners`` lists every owner's jobs, for an admin only.
    """
    if all_owners and not owner.is_admin:
        raise Forbidden("only an admin key may list every owner's jobs")
    query = select(Job) if all_owners else select(Job).where(Job.owner_id == owner.id)
    if status:
        query = query.where(Job.status.in_([s.value for s in status]))
    if kind:
        query = query.where(Job.kind == kind)
    if cursor:
        after = paging.position(cursor)
        if after is None:
            raise Invalid("cursor is not one a page of jobs gave")
        # A row-value comparison is one range of the (owner, created_at, id) index, so a
        # page deep in a long history costs what the first one does.
        query = query.where(tuple_(Job.created_at, Job.id) < after)
    rows = list(
        session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1))
    )
    if len(rows) <= limit:
        return Page(rows, None)
    last = rows[limit - 1]
    return Page(rows[:limit], paging.cursor_of(last.created_at, last.id))


def outputs_of_many(session: Session, jobs: Sequence[Job]) -> dict[str, list[Artifact]]:
    """The outputs of each of ``jobs`` (oldest first), in one query."""
    return queries.outputs_of_many(session, [j.id for j in jobs])


def _reread(session: Session, job: Job) -> None:
    """``job`` as the store has it now; :class:`NotFound` if a delete took it meanwhile
    (its owner's cancel or retry crossing its delete)."""
    try:
        session.refresh(job)
    except InvalidRequestError:
        raise NotFound(f"no job {job.id}") from None


def cancel_job(session: Session, *, owner: Owner, job_id: str) -> Job:
    """Cancel a queued job (it will never run) or a running one (it stops at its next
    progress checkpoint); a finished job is a conflict."""
    unit = UnitOfWork(session)
    job = get_job(session, owner=owner, job_id=job_id)
    if not lifecycle.transition(session, job.id, JobStatus.CANCELLED, eta_seconds=None):
        _reread(session, job)
        raise Conflict(f"job {job.id} is already {job.status}")
    _reread(session, job)
    if job.error is not None and job.error.get("retry_in_seconds") is not None:
        # Cancelled while it waited to be retried: its error no longer says a retry comes.
        job.error = {k: v for k, v in job.error.items() if k != "retry_in_seconds"}
    unit.announce("cancelled", job.id, status=job.status, progress=job.progress)
    unit.commit()
    return job


def retry_job(session: Session, *, owner: Owner, job_id: str) -> Job:
    """Queue a failed job again with a fresh set of attempts; it resumes after the
    last step it finished."""
    unit = UnitOfWork(session)
    job = _requeue(unit, owner=owner, job_id=job_id)
    unit.commit()
    return job


@dataclass(frozen=True)
class RetryOutcome:
    """What a retry of many jobs did: the ids queued again, and why the others were not."""

    retried: list[str]
    skipped: list[tuple[str, str]]


def retry_jobs(session: Session, *, owner: Owner, job_ids: Sequence[str]) -> RetryOutcome:
    """Retry many failed jobs in one transaction; the others are listed with the reason."""
    unit = UnitOfWork(session)
    retried: list[str] = []
    skipped: list[tuple[str, str]] = []
    for job_id in dict.fromkeys(job_ids):
        try:
            retried.append(_requeue(unit, owner=owner, job_id=job_id).id)
        except ServiceError as exc:
            skipped.append((job_id, str(exc)))
    unit.commit()
    return RetryOutcome(retried, skipped)


def _requeue(unit: UnitOfWork, *, owner: Owner, job_id: str) -> Job:
    session = unit.session
    job = get_job(session, owner=owner, job_id=job_id)
    if (job.error or {}).get("code") == dependencies.UPSTREAM_FAILED:
        return _wait_again(unit, job)
    if job.status == JobStatus.QUEUED.value and job.error:
        return _retry_now(unit, job)
    kind = get_kind(job.kind)
    if kind is None:
        raise Conflict(f"job {job.id} is of kind {job.kind!r}, which this service no longer has")
    fresh = kind.retry.max_attempts or get_settings().worker.max_attempts
    if not lifecycle.transition(
        session,
        job.id,
        JobStatus.QUEUED,
        from_=[JobStatus.FAILED],
        max_attempts=job.attempts + fresh,
        error=None,
        finished_at=None,
        retry_at=utcnow(),  # due now: the metrics' queue wait counts from here
        dispatched_at=None,
    ):
        _reread(session, job)
        raise Conflict(
            f"job {job.id} is {job.status}; only a failed job, or one waiting to retry, "
            "can be retried"
        )
    _reread(session, job)
    events.drop_ends(unit, job.id)
    if job.flow_id is not None:
        flow_events.reopen(unit, job.flow_id)
    unit.announce("queued", job.id, status="queued", kind=job.kind, priority=job.priority)
    return job


def _retry_now(unit: UnitOfWork, job: Job) -> Job:
    """A job waiting out the backoff of its retry is due now: once a person has mended
    what failed it (freed a full disk, say), the wait, a minute and doubling for a
    storage fault, has no more to give. A job already due is left as it is."""
    now = utcnow()
    due = unit.session.execute(
        update(Job)
        .where(
            Job.id == job.id,
            Job.status == JobStatus.QUEUED.value,
            Job.dispatched_at.is_(None),
            Job.retry_at > now,
        )
        .values(retry_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    _reread(unit.session, job)
    if affected(due):
        unit.announce("queued", job.id, status="queued", kind=job.kind, priority=job.priority)
    return job


def _wait_again(unit: UnitOfWork, job: Job) -> Job:
    """A job cancelled because a job it waits for did not complete waits again, once
    that job was retried; it is queued when they all complete."""
    session = unit.session
    failure = dependencies.upstream_failure(session, job.id)
    if failure is not None:
        upstream, how = failure
        raise Conflict(f"job {upstream}, which job {job.id} waits for, is {how}; retry it first")
    if not lifecycle.transition(
        session,
        job.id,
        JobStatus.WAITING,
        from_=[JobStatus.CANCELLED],
        error=None,
        finished_at=None,
    ):
        _reread(session, job)
        raise Conflict(f"job {job.id} is {job.status}; only a failed job can be retried")
    _reread(session, job)
    events.drop_ends(unit, job.id)
    if job.flow_id is not None:  # before settling it, which may end the flow again
        flow_events.reopen(unit, job.flow_id)
    unit.announce("waiting", job.id, status="waiting", kind=job.kind, priority=job.priority)
    unit.after_commit(lambda: dependencies.settle(job.id, unit_of_work))
    return job


def attempts_of(session: Session, *, owner: Owner, job_id: str) -> list[JobAttempt]:
    job = get_job(session, owner=owner, job_id=job_id)
    return list(
        session.scalars(
            select(JobAttempt).where(JobAttempt.job_id == job.id).order_by(JobAttempt.id)
        )
    )


def delete_job(session: Session, *, owner: Owner, job_id: str) -> None:
    """Delete a finished job and its files: its outputs and the inputs uploaded with it,
    except an input another job names (see :func:`doomed_with_job`); its events, in its
    own stream and in its flow's; and its flow, if it was the flow's last job."""
    # Held from the start, by a write that finds the job only while it is finished: a
    # retry committing meanwhile either comes first (then this finds the job queued) or
    # waits, and then finds it gone. (A read alone would not hold it on SQLite.)
    held = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.owner_id == owner.id, Job.status.in_(_FINISHED))
        .values(updated_at=Job.updated_at)
        .execution_options(synchronize_session=False)
    )
    job = get_job(session, owner=owner, job_id=job_id)
    session.refresh(job)
    if not affected(held) or not job.status_enum.finished:
        raise Conflict(f"job {job.id} is {job.status}; cancel it before deleting it")
    if (reader := dependencies.unended_reader(session, job.id)) is not None:
        raise Conflict(
            f"job {reader} reads this job's outputs and has not ended; delete this one "
            "once it has, or cancel it first"
        )
    flow_id = job.flow_id
    if flow_id is not None:
        flow_events.keep_flow_webhooks(session, job.id, flow_id)
    # Locked first, so that a submission naming one of them either commits before the
    # check below (which then sees it) or waits, and finds the artifact gone (a 422).
    owned = list(
        session.scalars(select(Artifact).where(Artifact.job_id == job.id).with_for_update())
    )
    session.delete(job)
    session.flush()  # gone, the job's own list of inputs no longer counts as naming them
    doomed = doomed_with_job(session, owned)
    for artifact in doomed:
        session.delete(artifact)
    flows_gone = delete_empty_flows(session, [flow_id] if flow_id else [])
    session.commit()
    remove_job_files(job_id, doomed, flow_id=flow_id, flow_deleted=flow_id in flows_gone)


def delete_empty_flows(session: Session, flow_ids: Sequence[str], *, wait: bool = True) -> set[str]:
    """Of ``flow_ids``, delete in ``session`` the flows that have no job left (their jobs
    were deleted in this transaction, or before); the ids deleted. Their streams are
    the caller's to remove once this commits (:func:`remove_job_files`).

    Each flow's row is locked before its jobs are counted, after the jobs deleted (the
    order a retry takes: its job's row, then the flow's in ``flow_events.reopen``). Two
    transactions deleting a flow's last two jobs at once so take turns: the second
    counts after the first committed, sees neither job, and deletes the flow, where
    each would otherwise see the other's job and leave it. A flow being created holds
    its row until its jobs are stored with it, so it is never seen without them.
    ``wait=False`` (retention) skips a flow another transaction holds (SKIP LOCKED):
    the next run finds it.
    """
    if not flow_ids:
        return set()
    locked = list(
        session.scalars(
            select(Flow.id)
            .where(Flow.id.in_(sorted(set(flow_ids))))
            .order_by(Flow.id)
            .with_for_update(skip_locked=not wait)
        )
    )
    if not locked:
        return set()
    has_jobs = exists().where(Job.flow_id == Flow.id)
    return set(
        session.scalars(
            delete(Flow)
            .where(Flow.id.in_(locked), ~has_jobs)
            .returning(Flow.id)
            .execution_options(synchronize_session=False)
        )
    )


def doomed_with_job(session: Session, owned: Sequence[Artifact]) -> list[Artifact]:
    """Of the artifacts of a job deleted in this transaction, those that go with it: its
    outputs, and the inputs uploaded with it that no other job names.

    An input another job still names stays, unlinked from the deleted job (the store's
    ON DELETE SET NULL), as an upload of no job: retention removes it once no job
    names it, as it does any upload. So does a file a collection's document is read
    from (:func:`keep_for_documents`), an output included.
    """
    kept = keep_for_documents(session, owned)
    return [
        a
        for a in owned
        if a.id not in kept
        and (a.role == ArtifactRole.OUTPUT.value or job_naming(session, a) is None)
    ]


def keep_for_documents(session: Session, artifacts: Sequence[Artifact]) -> set[str]:
    """Of ``artifacts``, whose job goes or whose results expire, the ids of those a
    collection's document is read from: each becomes an upload of no job (an output
    too), kept while a document reads it, and then removed by retention as any upload
    is. The ``index`` job's uploads are the documents' sources: deleting that job, or
    its retention after 30 days, took every document's original file with it."""
    read = read_by_documents(session, artifacts)
    if read:
        session.execute(
            update(Artifact)
            .where(Artifact.id.in_(read))
            .values(role=ArtifactRole.INPUT.value, job_id=None)
            .execution_options(synchronize_session=False)
        )
    return read


def read_by_documents(session: Session, artifacts: Sequence[Artifact]) -> set[str]:
    """The ids of those of ``artifacts`` a collection's document is read from."""
    if not artifacts:
        return set()
    ids = [a.id for a in artifacts]
    return {
        artifact_id
        for artifact_id in session.scalars(
            select(Document.artifact_id).where(Document.artifact_id.in_(ids))
        )
        if artifact_id is not None
    }


def job_naming(session: Session, artifact: Artifact) -> str | None:
    """A job of the owner's that lists the artifact among its inputs, if one does."""
    return session.scalar(
        select(Job.id)
        .where(
            Job.owner_id == artifact.owner_id,
            cast(Job.inputs, String).contains(f'"{artifact.id}"', autoescape=True),
        )
        .limit(1)
    )


def remove_job_files(
    job_id: str,
    artifacts: Sequence[Artifact],
    *,
    flow_id: str | None = None,
    flow_deleted: bool = False,
) -> None:
    """After the delete committed: the files, the event stream, the job's events in its
    flow's stream (``flow_id``; the whole stream if the flow was deleted with it) and
    any scratch space."""
    for artifact in artifacts:
        files.remove(artifact)
    events.forget_job(job_id, flow_id=flow_id, flow_deleted=flow_deleted)
    shutil.rmtree(get_settings().work_dir / job_id, ignore_errors=True)


def get_artifact(
    session: Session, *, owner: Owner, artifact_id: str, job_id: str | None = None
) -> Artifact:
    """The owner's artifact; one retention removed is :class:`Gone`, saying why (with
    ``job_id``, a viewer token's job, only one of that job is)."""
    artifact = session.scalar(
        select(Artifact).where(Artifact.id == artifact_id, Artifact.owner_id == owner.id)
    )
    if artifact is None:
        why = gone.why_gone(session, owner_id=owner.id, artifact_ids=[artifact_id], job_id=job_id)
        if why:
            raise Gone(why[artifact_id])
        raise NotFound(f"no artifact {artifact_id}")
    return artifact


def delete_artifact(session: Session, *, owner: Owner, artifact_id: str) -> None:
    """Delete an upload no job and no document reads, with its file: a large one need
    not wait out ``LONGPLAY_UPLOAD_RETENTION``. A job's output goes with its job, and
    an upload a job names or a document is read from stays while they do (409)."""
    # Locked, so that a submission naming it either commits before the checks below
    # (which then see it) or waits, and finds it gone (a 422), as with a job's delete.
    artifact = session.scalar(
        select(Artifact)
        .where(Artifact.id == artifact_id, Artifact.owner_id == owner.id)
        .with_for_update()
    )
    if artifact is None:
        raise NotFound(f"no artifact {artifact_id}")
    if artifact.role == ArtifactRole.OUTPUT.value:
        raise Conflict(
            f"artifact {artifact_id} is an output of job {artifact.job_id}; deleting that "
            "job deletes its outputs"
        )
    reader = artifact.job_id or job_naming(session, artifact)
    if reader is not None:
        raise Conflict(
            f"job {reader} names artifact {artifact_id} as an input; delete that job "
            "first (DELETE /v1/jobs/{id})"
        )
    document = session.scalar(select(Document.id).where(Document.artifact_id == artifact_id))
    if document is not None:
        raise Conflict(
            f"document {document} of a collection is read from artifact {artifact_id}; "
            "delete the document first"
        )
    session.delete(artifact)
    session.commit()
    files.remove(artifact)


def job_statuses(session: Session, *, owner: Owner, job_ids: Sequence[str]) -> dict[str, str]:
    """The statuses of those of ``job_ids`` the owner has, by id (one query)."""
    if not job_ids:
        return {}
    rows = session.execute(
        select(Job.id, Job.status).where(Job.id.in_(set(job_ids)), Job.owner_id == owner.id)
    )
    return {row.id: row.status for row in rows}


def artifact_names(
    session: Session, *, owner: Owner, artifact_ids: Sequence[str]
) -> dict[str, str]:
    """The names of those of ``artifact_ids`` the owner has, by id (one query)."""
    if not artifact_ids:
        return {}
    rows = session.execute(
        select(Artifact.id, Artifact.name).where(
            Artifact.id.in_(set(artifact_ids)), Artifact.owner_id == owner.id
        )
    )
    return {row.id: row.name for row in rows}


def deliveries_of(session: Session, *, owner: Owner, job_id: str) -> list[WebhookDelivery]:
    """The webhook messages about one of the owner's jobs, oldest first."""
    job = get_job(session, owner=owner, job_id=job_id)
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.job_id == job.id)
            .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
        )
    )
