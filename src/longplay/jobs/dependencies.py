"""Jobs that wait for other jobs (``after``, or inputs naming another job's outputs).

A job with something to wait for is stored ``waiting``: admission reads only queued
jobs, so it is never picked. Each time a job ends, its waiting dependents are settled,
each in a unit of work of its own: queued once every job it waits for completed (then
priority, fairness and owner limits apply as to any job), or cancelled with the error
``upstream_failed`` naming the one that failed, was cancelled or expired. That
cancellation is announced like any other, so it settles the next job down the chain.
A waiting job counts toward its owner's ``max_queued`` when it is submitted (see
:func:`~longplay.jobs.admission.limits.refuse_submission`), so waiting jobs cannot pile
up without bound; released, it is not checked again, only ordered like any queued job.

The subscriber runs after the ending committed, and a new waiting job is settled after
its own submission committed: whichever of the two commits last sees the other, so a
job that completes while a dependent is being submitted cannot leave it waiting. What
runs after a commit can still be lost (the process dies between the commit and the
subscriber, or the subscriber's own store call fails), so beat also runs :func:`sweep`,
which settles every waiting job that has something to settle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from sqlalchemy import ColumnElement, bindparam, exists, or_, select
from sqlalchemy.orm import Session, aliased

from longplay.jobs import lifecycle
from longplay.jobs.admission import pump
from longplay.jobs.hooks import Announcement
from longplay.store.models import Job, JobDependency, JobStatus

UPSTREAM_FAILED = "upstream_failed"
ENDINGS = frozenset({"completed", "failed", "cancelled", "expired"})
"""Announcements after which the job's dependents may move."""
UNSUCCESSFUL = frozenset(
    {JobStatus.FAILED.value, JobStatus.CANCELLED.value, JobStatus.EXPIRED.value}
)
UNENDED = frozenset({JobStatus.WAITING.value, JobStatus.QUEUED.value, JobStatus.RUNNING.value})
SWEEP_AT_MOST = 500
"""Waiting jobs one sweep settles; the next sweep takes the rest."""


class Change(Protocol):
    """What settling a job needs of a unit of work (:class:`~longplay.jobs.unit.UnitOfWork`)."""

    @property
    def session(self) -> Session: ...

    def announce(self, event: str, job_id: str, **data: Any) -> None: ...

    def after_commit(self, work: Callable[[], None]) -> None: ...


OpenUnit = Callable[[], AbstractContextManager[Change]]


def add(session: Session, job_id: str, after: Iterable[str]) -> None:
    """Record that ``job_id`` waits for each of ``after``."""
    session.add_all(JobDependency(job_id=job_id, after_id=a) for a in dict.fromkeys(after))


def upstream_of(session: Session, job_id: str) -> set[str]:
    """Every job ``job_id`` waits (or waited) for, whatever its status."""
    return set(
        session.scalars(select(JobDependency.after_id).where(JobDependency.job_id == job_id))
    )


def waiting_for(
    session: Session, job_ids: Sequence[str], known: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """For each of ``job_ids``, the jobs it waits for that have not completed yet.

    ``known`` are statuses the caller already read (a page of jobs, a flow's stages):
    they are taken over the store's, read later, so that one answer agrees with itself
    (a stage shown running is not left out of another's ``waiting_for``)."""
    if not job_ids:
        return {}
    found: dict[str, list[str]] = {}
    known = known or {}
    for job_id, after_id, status in session.execute(
        select(JobDependency.job_id, JobDependency.after_id, Job.status)
        .join(Job, Job.id == JobDependency.after_id)
        .where(JobDependency.job_id.in_(job_ids))
        .order_by(JobDependency.after_id)
    ):
        if known.get(after_id, status) != JobStatus.COMPLETED.value:
            found.setdefault(job_id, []).append(after_id)
    return found


def unended_reader(session: Session, job_id: str) -> str | None:
    """A job that has not ended and takes an input from ``job_id``'s outputs (found
    when it starts, so deleting them would fail it), if there is one."""
    readers = session.scalars(
        select(Job)
        .join(JobDependency, JobDependency.job_id == Job.id)
        .where(JobDependency.after_id == job_id, Job.status.in_(UNENDED))
        .order_by(Job.created_at, Job.id)
    )
    for reader in readers:
        if any(isinstance(i, dict) and i.get("job") == job_id for i in reader.inputs):
            return reader.id
    return None


def upstream_failure(session: Session, job_id: str) -> tuple[str, str] | None:
    """The first job ``job_id`` waits for that ended without completing, and how."""
    row = session.execute(
        select(Job.id, Job.status)
        .join(JobDependency, JobDependency.after_id == Job.id)
        .where(JobDependency.job_id == job_id, Job.status.in_(UNSUCCESSFUL))
        .order_by(Job.finished_at, Job.id)
        .limit(1)
    ).first()
    return None if row is None else (row.id, row.status)


def settle(job_id: str, open_unit: OpenUnit) -> None:
    """Queue a waiting job whose upstream jobs all completed, or cancel it when one of
    them did not; otherwise leave it waiting. Safe to call twice: each move is guarded."""
    _settled(job_id, open_unit)


def _settled(job_id: str, open_unit: OpenUnit) -> bool:
    """:func:`settle`; True when this call moved the job."""
    with open_unit() as unit:
        session = unit.session
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.WAITING.value:
            return False
        failure = upstream_failure(session, job_id)
        if failure is not None:
            upstream, how = failure
            error = {
                "code": UPSTREAM_FAILED,
                "message": f"job {upstream}, which this job waits for, {how}",
                "retryable": False,
                "upstream": upstream,
            }
            if lifecycle.transition(
                session, job_id, JobStatus.CANCELLED, from_=[JobStatus.WAITING], error=error
            ):
                unit.announce("cancelled", job_id, status="cancelled", progress=0.0, error=error)
                return True
            return False
        if waiting_for(session, [job_id]):
            return False
        if lifecycle.transition(session, job_id, JobStatus.QUEUED, from_=[JobStatus.WAITING]):
            unit.announce("queued", job_id, status="queued", kind=job.kind, priority=job.priority)
            unit.after_commit(_admit(job))
            return True
        return False


def _admit(job: Job) -> Callable[[], None]:
    run_at, deadline = job.run_at, job.deadline

    def admit() -> None:  # the announcement asked for a round; these book later ones
        pump.wake_quietly(run_at)
        pump.wake_quietly(deadline)

    return admit


# Built once and run on the connection: it runs after every job's end, and building a
# statement, or going through the ORM, costs more than running it.
_DEPENDENTS_WAITING = (
    select(JobDependency.job_id)
    .join(Job, Job.id == JobDependency.job_id)
    .where(JobDependency.after_id == bindparam("job_id"), Job.status == JobStatus.WAITING.value)
    .order_by(JobDependency.job_id)
)


def dependents_waiting(session: Session, job_id: str) -> list[str]:
    """The waiting jobs that wait for ``job_id`` (indexed by ``after_id``)."""
    found = session.connection().execute(_DEPENDENTS_WAITING, {"job_id": job_id})
    return list(found.scalars())


def tell(announcement: Announcement, *, open_unit: OpenUnit) -> None:
    """The hooks' subscriber: once a job ended, settle the jobs waiting for it."""
    if announcement.event not in ENDINGS:
        return
    with open_unit() as unit:
        dependents = dependents_waiting(unit.session, announcement.job_id)
    for job_id in dependents:
        settle(job_id, open_unit)


def stranded(session: Session, *, limit: int = SWEEP_AT_MOST) -> list[str]:
    """Waiting jobs that should have moved: every job they wait for ended, or one of
    them ended without completing."""
    upstream = aliased(Job)

    def upstream_in(statuses: frozenset[str]) -> ColumnElement[bool]:
        return exists().where(
            JobDependency.job_id == Job.id,
            upstream.id == JobDependency.after_id,
            upstream.status.in_(statuses),
        )

    return list(
        session.scalars(
            select(Job.id)
            .where(
                Job.status == JobStatus.WAITING.value,
                or_(~upstream_in(UNENDED), upstream_in(UNSUCCESSFUL)),
            )
            .order_by(Job.created_at, Job.id)
            .limit(limit)
        )
    )


def sweep(open_unit: OpenUnit, *, limit: int = SWEEP_AT_MOST) -> int:
    """Beat's safety net: settle the waiting jobs whose wake-up was lost; how many moved.
    Settling is guarded, so a job the subscriber settles at the same moment moves once."""
    with open_unit() as unit:
        found = stranded(unit.session, limit=limit)
    return sum(_settled(job_id, open_unit) for job_id in found)
