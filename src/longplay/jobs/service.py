"""The jobs service: what routes and the CLI call. Every query is scoped to an owner."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from longplay import keys
from longplay.config import get_settings
from longplay.jobs import admission, events, lifecycle, webhooks
from longplay.jobs.registry import JobKind, get_kind
from longplay.store import files
from longplay.store.models import (
    PRIORITY_RANK,
    Artifact,
    ArtifactRole,
    Job,
    JobAttempt,
    JobStatus,
    Owner,
    Priority,
    new_id,
)


class ServiceError(Exception):
    """A request the service refuses, with a message for the person who sent it."""


class NotFound(ServiceError):
    pass


class Invalid(ServiceError):
    def __init__(self, message: str, errors: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)


class Conflict(ServiceError):
    pass


class Forbidden(ServiceError):
    """The key is valid but may not do this (an admin-only action)."""


class Unavailable(ServiceError):
    """A part the request needs (the broker) does not answer; retry later."""


class RateLimited(ServiceError):
    """The owner is over a limit (queued jobs, submissions a minute); try again in
    ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Page:
    jobs: Sequence[Job]
    next_cursor: str | None


def _kind_or_invalid(name: str) -> JobKind:
    kind = get_kind(name)
    if kind is None:
        raise Invalid(f"unknown job kind {name!r}; GET /v1/kinds lists the kinds")
    return kind


def create_job(
    session: Session,
    *,
    owner: Owner,
    kind_name: str,
    params: dict[str, Any],
    input_ids: Sequence[str],
    priority: Priority | None = None,
    run_at: datetime | None = None,
    deadline: datetime | None = None,
    callback_url: str | None = None,
    callback_events: Sequence[str] = (),
) -> Job:
    """Check a submission and add its job (queued) to the session; dispatch after commit."""
    kind = _kind_or_invalid(kind_name)
    try:
        checked = kind.params.model_validate(params)
    except ValidationError as exc:
        raise Invalid(
            f"bad parameters for {kind.name}",
            exc.errors(include_url=False, include_input=False, include_context=False),
        ) from exc
    count = len(input_ids)
    if count < kind.min_inputs or (kind.max_inputs is not None and count > kind.max_inputs):
        wanted = (
            f"{kind.min_inputs}"
            if kind.max_inputs == kind.min_inputs
            else f"{kind.min_inputs} to {kind.max_inputs if kind.max_inputs is not None else 'any'}"
        )
        raise Invalid(f"{kind.name} takes {wanted} input file(s), got {count}")
    if count > get_settings().max_inputs_per_job:
        raise Invalid(f"at most {get_settings().max_inputs_per_job} inputs per job")
    found: dict[str, str] = (
        {
            artifact_id: sha256
            for artifact_id, sha256 in session.execute(
                select(Artifact.id, Artifact.sha256).where(
                    Artifact.id.in_(input_ids), Artifact.owner_id == owner.id
                )
            )
        }
        if input_ids
        else {}
    )
    missing = [i for i in input_ids if i not in found]
    if missing:
        raise Invalid(f"no such artifact: {', '.join(missing)}")
    if deadline is not None and run_at is not None and deadline <= run_at:
        raise Invalid("deadline must come after run_at")
    priority = priority or admission.limits_of(owner).priority
    params_json = checked.model_dump(mode="json")
    job = Job(
        id=new_id("job"),
        owner_id=owner.id,
        kind=kind.name,
        priority=priority.value,
        priority_rank=PRIORITY_RANK[priority],
        resource=kind.resource,
        params=params_json,
        inputs=list(input_ids),
        content_key=content_key(kind.name, params_json, [found[i] for i in input_ids]),
        max_attempts=kind.retry.max_attempts or get_settings().max_attempts,
        run_at=run_at,
        deadline=deadline,
        callback_url=callback_url,
        callback_events=list(callback_events) or None,
    )
    session.add(job)
    session.flush()
    return job


@dataclass(frozen=True)
class Submission:
    """What a submission got: a new job, or the earlier one it matched."""

    job: Job
    deduplicated: bool = False
    """An earlier completed job with the same content came back (``dedupe``)."""


def submit_job(
    session: Session,
    *,
    owner: Owner,
    kind_name: str,
    params: dict[str, Any],
    input_ids: Sequence[str],
    priority: Priority | None = None,
    uploaded: Sequence[Artifact] = (),
    idempotency_key: str | None = None,
    run_at: datetime | None = None,
    deadline: datetime | None = None,
    dedupe: bool = False,
    callback_url: str | None = None,
    callback_events: Sequence[str] = (),
    admit: bool = True,
) -> Submission:
    """Create, commit and dispatch a job; ``uploaded`` are input artifacts sent with it.

    ``admit=False`` leaves handing it to the broker to the caller (the API does it
    after its answer went out, with :func:`admit_submitted`).

    With an ``idempotency_key`` the owner already used, the first job comes back and
    nothing new is stored, not even this request's uploads. So it is with ``dedupe``
    and a completed job of the owner's with the same kind, parameters and input bytes
    whose outputs are still there; that job comes back marked ``deduplicated``.
    """
    if idempotency_key is not None:
        existing = _by_idempotency_key(session, owner, idempotency_key)
        if existing is not None:
            _discard(session, uploaded)
            return Submission(existing)
    try:
        session.flush()
        job = create_job(
            session,
            owner=owner,
            kind_name=kind_name,
            params=params,
            input_ids=[*input_ids, *(a.id for a in uploaded)],
            priority=priority,
            run_at=run_at,
            deadline=deadline,
            callback_url=callback_url,
            callback_events=callback_events,
        )
        if dedupe and (earlier := _duplicate_of(session, job)) is not None:
            _discard(session, uploaded)
            return Submission(earlier, deduplicated=True)
        if (refusal := admission.refuse_submission(session, owner, new_job_id=job.id)) is not None:
            raise RateLimited(refusal.message, refusal.retry_after)
        job.idempotency_key = idempotency_key
        for artifact in uploaded:
            artifact.job_id = job.id
        session.commit()
    except IntegrityError:
        _discard(session, uploaded)
        raced = _by_idempotency_key(session, owner, idempotency_key or "")
        if raced is None:
            raise
        return Submission(raced)
    except BaseException:
        _discard(session, uploaded)
        raise
    announce_queued(job)
    if not admit:
        return Submission(job)
    try:
        admission.pump()
    except Exception as exc:
        abandon(session, job)
        raise Unavailable(f"the queue is not reachable, nothing was submitted: {exc}") from exc
    admit_submitted(job.run_at, job.deadline, pumped=True)
    return Submission(job)


def admit_submitted(
    run_at: datetime | None, deadline: datetime | None, *, pumped: bool = False
) -> None:
    """After a submission committed: hand what is due to the broker, and book the
    admission rounds its ``run_at`` and ``deadline`` need. A failure leaves the job
    held in the store for beat's next round."""
    if not pumped:
        admission.pump_quietly()
    admission.wake_quietly(run_at)
    admission.wake_quietly(deadline)


def content_key(kind: str, params: dict[str, Any], input_sha256s: Sequence[str]) -> str:
    """SHA-256 over the kind, the validated parameters (canonical JSON) and the input
    files' SHA-256s in order: two jobs with one key do the same work."""
    canonical = json.dumps(
        {"kind": kind, "params": params, "inputs": list(input_sha256s)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _duplicate_of(session: Session, job: Job) -> Job | None:
    """The owner's newest completed job with ``job``'s content key whose outputs are
    all still there (not expired, not deleted)."""
    candidates = session.scalars(
        select(Job)
        .where(
            Job.owner_id == job.owner_id,
            Job.content_key == job.content_key,
            Job.status == JobStatus.COMPLETED.value,
            Job.id != job.id,
        )
        .order_by(Job.finished_at.desc())
        .limit(5)
    )
    for candidate in list(candidates):
        result = candidate.result or {}
        if result.get("results_expired"):
            continue
        outputs = outputs_of(session, candidate)
        if {a.id for a in outputs} == set(result.get("outputs", [])) and all(
            files.path_of(a).is_file() for a in outputs
        ):
            return candidate
    return None


def _by_idempotency_key(session: Session, owner: Owner, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner.id, Job.idempotency_key == key))


def _discard(session: Session, uploaded: Sequence[Artifact]) -> None:
    session.rollback()
    for artifact in uploaded:
        files.remove(artifact)


def dispatch(job: Job, *, countdown: float | None = None) -> None:
    """Hand a committed job's id to Celery, on the queue for its resource and priority."""
    from longplay.queue.app import RUN_JOB, celery_app

    kind = get_kind(job.kind)
    celery_app.send_task(
        RUN_JOB,
        args=[job.id],
        queue=keys.queue_name(job.resource, job.priority),
        countdown=countdown,
        soft_time_limit=kind.soft_time_limit if kind else None,
        time_limit=kind.time_limit if kind else None,
    )


def announce_queued(job: Job) -> None:
    events.publish(
        "queued", job.id, status="queued", kind=job.kind, priority=job.priority, expire=True
    )


def abandon(session: Session, job: Job) -> None:
    """Undo a committed submission that could not be dispatched, files included."""
    owned = list(session.scalars(select(Artifact).where(Artifact.job_id == job.id)))
    for artifact in owned:
        session.delete(artifact)
    session.delete(job)
    session.commit()
    remove_job_files(job.id, owned)


def get_job(session: Session, *, owner: Owner, job_id: str) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id, Job.owner_id == owner.id))
    if job is None:
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
        anchor_query = select(Job).where(Job.id == cursor)
        if not all_owners:
            anchor_query = anchor_query.where(Job.owner_id == owner.id)
        anchor = session.scalar(anchor_query)
        if anchor is None:
            raise Invalid("cursor does not name one of your jobs")
        query = query.where(
            or_(
                Job.created_at < anchor.created_at,
                and_(Job.created_at == anchor.created_at, Job.id < anchor.id),
            )
        )
    rows = list(
        session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1))
    )
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return Page(rows[:limit], next_cursor)


def queue_position(session: Session, job: Job) -> int | None:
    """How many queued jobs will start before this one (0: it is next), across owners,
    in the order admission hands them over (held jobs included)."""
    return admission.queue_position(session, job)


def admit_held() -> None:
    """After a commit that queued jobs again: hand what is due to the broker (a failure
    leaves them held for the next admission round)."""
    admission.pump_quietly()


def outputs_of(session: Session, job: Job) -> list[Artifact]:
    return list(
        session.scalars(
            select(Artifact)
            .where(Artifact.job_id == job.id, Artifact.role == ArtifactRole.OUTPUT.value)
            .order_by(Artifact.created_at, Artifact.id)
        )
    )


def cancel_job(session: Session, *, owner: Owner, job_id: str) -> Job:
    """Cancel a queued job (it will never run) or a running one (it stops at its next
    progress checkpoint); a finished job is a conflict."""
    job = get_job(session, owner=owner, job_id=job_id)
    if not lifecycle.transition(session, job.id, JobStatus.CANCELLED, eta_seconds=None):
        session.refresh(job)
        raise Conflict(f"job {job.id} is already {job.status}")
    session.refresh(job)
    webhooks.enqueue(session, job, "cancelled")
    return job


def retry_job(session: Session, *, owner: Owner, job_id: str) -> Job:
    """Queue a failed job again with a fresh set of attempts; it resumes after the
    last step it finished. Commit, then :func:`admit_held`."""
    job = get_job(session, owner=owner, job_id=job_id)
    kind = get_kind(job.kind)
    if kind is None:
        raise Conflict(f"job {job.id} is of kind {job.kind!r}, which this service no longer has")
    fresh = kind.retry.max_attempts or get_settings().max_attempts
    if not lifecycle.transition(
        session,
        job.id,
        JobStatus.QUEUED,
        from_=[JobStatus.FAILED],
        max_attempts=job.attempts + fresh,
        error=None,
        finished_at=None,
        retry_at=None,
        dispatched_at=None,
    ):
        session.refresh(job)
        raise Conflict(f"job {job.id} is {job.status}; only a failed job can be retried")
    session.refresh(job)
    return job


def attempts_of(session: Session, *, owner: Owner, job_id: str) -> list[JobAttempt]:
    job = get_job(session, owner=owner, job_id=job_id)
    return list(
        session.scalars(
            select(JobAttempt).where(JobAttempt.job_id == job.id).order_by(JobAttempt.id)
        )
    )


def announce_cancel(job: Job) -> None:
    events.publish("cancelled", job.id, status=job.status, progress=job.progress, expire=True)


def delete_job(session: Session, *, owner: Owner, job_id: str) -> list[Artifact]:
    """Delete a finished job and its files (outputs and inputs uploaded with it)."""
    job = get_job(session, owner=owner, job_id=job_id)
    if not job.status_enum.finished:
        raise Conflict(f"job {job.id} is {job.status}; cancel it before deleting it")
    owned = list(session.scalars(select(Artifact).where(Artifact.job_id == job.id)))
    for artifact in owned:
        session.delete(artifact)
    session.delete(job)
    return owned


def remove_job_files(job_id: str, artifacts: Sequence[Artifact]) -> None:
    """After the delete committed: the files, the event stream and any scratch space."""
    for artifact in artifacts:
        files.remove(artifact)
    events.delete_stream(job_id)
    shutil.rmtree(get_settings().work_dir / job_id, ignore_errors=True)


def get_artifact(session: Session, *, owner: Owner, artifact_id: str) -> Artifact:
    artifact = session.scalar(
        select(Artifact).where(Artifact.id == artifact_id, Artifact.owner_id == owner.id)
    )
    if artifact is None:
        raise NotFound(f"no artifact {artifact_id}")
    return artifact
