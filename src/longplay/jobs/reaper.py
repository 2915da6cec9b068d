"""Jobs whose worker is gone go back to the queue: a stopped worker's at once, a
silent one's when its lease lapses."""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from sqlalchemy import select

from longplay import keys
from longplay.framework import RetryableError
from longplay.jobs import lifecycle
from longplay.jobs.attempts import close_attempt
from longplay.jobs.endings import settle_error
from longplay.jobs.unit import UnitOfWork, unit_of_work
from longplay.redis_client import get_redis
from longplay.settings import get_settings
from longplay.store.db import session_scope
from longplay.store.models import Job, JobStatus, utcnow

log = logging.getLogger(__name__)


STOPPING_TTL = 600
"""Seconds a stopping worker's mark lasts: its shutdown grace and the release after it,
with room to spare, and short enough that a later worker given the same pid is not
taken for it."""


def mark_stopping(holder_prefix: str) -> None:
    """The worker whose processes are named ``holder_prefix…`` begins a clean stop
    (SIGTERM): a job of its found by another worker before its own release goes back to
    the queue as that release would send it (:func:`stopped_cleanly`)."""
    try:
        get_redis().set(keys.worker_stopping(holder_prefix), 1, ex=STOPPING_TTL)
    except redis.RedisError as exc:
        log.warning("could not mark worker %s as stopping: %s", holder_prefix, exc)


def stopped_cleanly(holder: str) -> bool:
    """Whether the worker of the process ``holder`` (``host:worker pid:pid``) is
    stopping, or stopped, cleanly; False when Redis does not say."""
    prefix = f"{holder.rpartition(':')[0]}:"
    try:
        return bool(get_redis().exists(keys.worker_stopping(prefix)))
    except redis.RedisError:
        return False


def release(
    unit: UnitOfWork, job_id: str, *, holder: str, attempts: int, handed: bool = False
) -> bool:
    """Send a job whose worker stopped cleanly back to the queue, in ``unit``: its
    ``attempts`` less the run's own, that attempt's row closed as ``requeued``, no
    progress shown until its next run reports some. ``handed``: it stays handed to the
    broker, for the delivery that found it to claim at once. False when ``holder`` no
    longer runs it."""
    released = lifecycle.transition(
        unit.session,
        job_id,
        JobStatus.QUEUED,
        worker=holder,
        attempts=max(0, attempts - 1),
        dispatched_at=utcnow() if handed else None,
        **lifecycle.NO_PROGRESS,
    )
    if released:
        close_attempt(unit.session, job_id, holder, "requeued")
        unit.announce("requeued", job_id, status="queued", reason="worker stopped", progress=0.0)
        log.warning("job %s: its worker stopped; back in the queue", job_id)
    return released


def release_jobs_of(holder_prefix: str) -> int:
    """After a worker stopped: send the jobs its processes (named ``holder_prefix…``)
    were running back to the queue now (:func:`release`), instead of waiting for their
    leases to lapse. Another worker may have found one first (:func:`stopped_cleanly`)."""
    with unit_of_work() as unit:
        held = unit.session.execute(
            select(Job.id, Job.worker, Job.attempts).where(
                Job.status == JobStatus.RUNNING.value,
                Job.worker.startswith(holder_prefix, autoescape=True),
            )
        ).all()
        released = [
            job.id
            for job in held
            if release(unit, job.id, holder=job.worker or "", attempts=job.attempts)
        ]
    return len(released)


def reap() -> int:
    """Send jobs whose worker stopped renewing their lease back to the queue."""
    settings = get_settings()
    stale = utcnow() - timedelta(seconds=settings.worker.lease_seconds)
    with session_scope() as session:
        lapsed = list(
            session.scalars(
                select(Job).where(Job.status == JobStatus.RUNNING.value, Job.heartbeat_at < stale)
            )
        )
        for job in lapsed:
            session.expunge(job)
    for job in lapsed:
        log.warning("job %s: lease lapsed on %s", job.id, job.worker)
        error = RetryableError(
            f"its worker ({job.worker}) stopped answering for {settings.worker.lease_seconds:g} s",
            code="worker_lost",
        )
        settle_error(job, error, worker=job.worker or "")
    return len(lapsed)
