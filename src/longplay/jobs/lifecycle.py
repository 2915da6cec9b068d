"""Guarded status transitions.

Every change of a job's status is one conditional ``UPDATE ... WHERE status IN (...)``,
so two processes racing (a worker finishing, an owner cancelling) cannot both win:
a cancelled job can never become completed, and a second delivery of a job that
is already running elsewhere does nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, or_, update
from sqlalchemy.orm import Session

from longplay.store.db import affected
from longplay.store.models import Job, JobStatus, utcnow

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset(
        {JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED, JobStatus.EXPIRED}
    ),
    JobStatus.RUNNING: frozenset(
        {JobStatus.QUEUED, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),
    JobStatus.CANCELLED: frozenset(),
    JobStatus.EXPIRED: frozenset(),
}


def sources_of(target: JobStatus) -> list[str]:
    return [s.value for s, targets in ALLOWED.items() if target in targets]


def transition(
    session: Session,
    job_id: str,
    target: JobStatus,
    *,
    from_: Iterable[JobStatus] | None = None,
    worker: str | None = None,
    when: ColumnElement[bool] | None = None,
    **values: Any,
) -> bool:
    """Move a job to ``target`` if its status allows it; True when this call did it.

    ``from_`` narrows the allowed sources; ``worker`` requires that the job is held
    by that worker (so a worker that lost its lease cannot finish a job now held by
    another one); ``when`` is one more condition on the row (a deadline that passed).
    """
    sources = sources_of(target)
    if from_ is not None:
        sources = [s.value for s in from_ if s.value in sources]
    now = utcnow()
    values.setdefault("updated_at", now)
    if target.finished:
        values.setdefault("finished_at", now)
    statement = update(Job).where(Job.id == job_id, Job.status.in_(sources))
    if worker is not None:
        statement = statement.where(Job.worker == worker)
    if when is not None:
        statement = statement.where(when)
    result = session.execute(
        statement.values(status=target.value, **values).execution_options(synchronize_session=False)
    )
    return bool(affected(result))


def claim(
    session: Session,
    job_id: str,
    *,
    worker: str,
    lease: timedelta,
    dead_holder: str | None = None,
) -> Job | None:
    """Take a queued job, or a running one whose worker stopped renewing its lease or,
    with ``dead_holder``, whose worker process is known to be gone. Returns the job as
    claimed, or None when this call did not get it.

    A queued job is taken only once admission handed it to the broker (a late or
    repeated message for a job held back, waiting for its retry or its turn, does
    nothing) and while its deadline has not passed."""
    now = utcnow()
    stale: datetime = now - lease
    startable = (
        (Job.status == JobStatus.QUEUED.value)
        & Job.dispatched_at.is_not(None)
        & or_(Job.deadline.is_(None), Job.deadline > now)
    )
    running = Job.status == JobStatus.RUNNING.value
    taken_over = running & (Job.heartbeat_at < stale)
    if dead_holder is not None:
        taken_over = taken_over | (running & (Job.worker == dead_holder))
    return session.scalars(
        update(Job)
        .where(
            Job.id == job_id,
            or_(startable, taken_over),
        )
        .values(
            status=JobStatus.RUNNING.value,
            worker=worker,
            attempts=Job.attempts + 1,
            started_at=now,
            updated_at=now,
            heartbeat_at=now,
            retry_at=None,
        )
        .returning(Job)
        .execution_options(synchronize_session=False)
    ).first()
