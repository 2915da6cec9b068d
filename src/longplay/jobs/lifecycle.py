"""Guarded status transitions.

Every change of a job's status is one conditional ``UPDATE ... WHERE status IN (...)``,
so two processes racing (a worker finishing, an owner cancelling) cannot both win:
a cancelled job can never become completed, and a second delivery of a job that
is already running elsewhere does nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from sqlalchemy import ColumnElement, Update, bindparam, case, null, or_, update
from sqlalchemy.orm import Session

from longplay.framework import get_kind
from longplay.store.db import affected
from longplay.store.models import Job, JobStatus, utcnow

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    # A waiting job is queued when the jobs it waits for completed, cancelled when one
    # of them did not; one cancelled that way waits again when its owner retries it.
    JobStatus.WAITING: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
    JobStatus.QUEUED: frozenset(
        {JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED, JobStatus.EXPIRED}
    ),
    JobStatus.RUNNING: frozenset(
        {JobStatus.QUEUED, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),
    JobStatus.CANCELLED: frozenset({JobStatus.WAITING}),
    JobStatus.EXPIRED: frozenset(),
}


NO_PROGRESS: Mapping[str, Any] = MappingProxyType(
    {"progress": 0.0, "current_step": None, "step_details": {}, "eta_seconds": None}
)
"""The progress of a job that has none yet."""


def back_in_queue(kind: str, checkpoint: Mapping[str, Any] | None) -> dict[str, Any]:
    """The progress of a job going back to the queue (a retry, a requeue): its finished
    steps' share of the bar, since its next run goes on after them; no step, no ETA
    until that run reports. It showed 0 %, and its next run jumped back to where the
    finished steps had it."""
    found = get_kind(kind)
    done = set((checkpoint or {}).get("done", ()))
    if found is None or not done:
        return dict(NO_PROGRESS)
    total = sum(step.weight for step in found.steps)
    kept = sum(step.weight for step in found.steps if step.name in done)
    return {**NO_PROGRESS, "progress": round(100.0 * kept / total, 2)}


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
    ``values`` (plain values, not SQL expressions) are set with the status.
    """
    sources = sources_of(target)
    if from_ is not None:
        sources = [s.value for s in from_ if s.value in sources]
    now = utcnow()
    values.setdefault("updated_at", now)
    if target.finished:
        values.setdefault("finished_at", now)
    bound = {name: value for name, value in values.items() if value is not None}
    nulls = tuple(sorted(values.keys() - bound.keys()))
    statement = _transition_statement(
        target, tuple(sources), worker is not None, tuple(sorted(bound)), nulls
    )
    if when is not None:
        statement = statement.where(when)
    params = {"job_id": job_id, "holder": worker, **{f"new_{k}": v for k, v in bound.items()}}
    # On the session's connection: no ORM object changes here, and its path costs more.
    return bool(affected(session.connection().execute(statement, params)))


@lru_cache(maxsize=128)
def _transition_statement(
    target: JobStatus,
    sources: tuple[str, ...],
    held: bool,
    names: tuple[str, ...],
    nulls: tuple[str, ...],
) -> Update:
    """One shape of transition as a statement with parameters, built once: building a
    statement costs more than running it. ``nulls`` are set to SQL NULL (a None bound
    to a JSON column would store JSON ``null``)."""
    statement = update(Job).where(Job.id == bindparam("job_id"), Job.status.in_(sources))
    if held:
        statement = statement.where(Job.worker == bindparam("holder"))
    return statement.values(
        {
            "status": target.value,
            **{name: bindparam(f"new_{name}") for name in names},
            **{name: null() for name in nulls},
        }
    ).execution_options(synchronize_session=False)


_running = Job.status == JobStatus.RUNNING.value
_CLAIM = (
    update(Job)
    .where(
        Job.id == bindparam("job_id"),
        or_(
            # Queued, handed over by admission, and its deadline not passed.
            (Job.status == JobStatus.QUEUED.value)
            & Job.dispatched_at.is_not(None)
            & or_(Job.deadline.is_(None), Job.deadline > bindparam("now")),
            # Running, but its worker stopped renewing the lease or is known to be gone,
            # and attempts are left (one whose process died in every attempt is failed).
            _running
            & (Job.attempts < Job.max_attempts)
            & or_(Job.heartbeat_at < bindparam("stale"), Job.worker == bindparam("dead_holder")),
        ),
    )
    .values(
        status=JobStatus.RUNNING.value,
        worker=bindparam("worker"),
        attempts=Job.attempts + 1,
        started_at=bindparam("now"),
        updated_at=bindparam("now"),
        heartbeat_at=bindparam("now"),
        # A queued job keeps when it became due (its retry, or its return to the
        # queue), for the metrics' queue wait; a run taken over from a dead worker was
        # never queued.
        retry_at=case((_running, None), else_=Job.retry_at),
    )
    .returning(Job)
    .execution_options(synchronize_session=False)
)


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
    params = {
        "job_id": job_id,
        "worker": worker,
        "now": now,
        "stale": now - lease,
        "dead_holder": dead_holder,
    }
    return session.scalars(_CLAIM, params).first()
