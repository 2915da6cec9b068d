"""Jobs whose worker is gone go back to the queue: a stopped worker's at once, a dead
one's on this machine at the reaper's next round, a silent one's when its lease lapses."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

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
    ``attempts`` less the run's own, that attempt's row closed as ``requeued``, the
    progress of its finished steps alone (:func:`~longplay.jobs.lifecycle.back_in_queue`).
    ``handed``: it stays handed to the broker, for the delivery that found it to claim
    at once. False when ``holder`` no longer runs it."""
    held = unit.session.execute(select(Job.kind, Job.checkpoint).where(Job.id == job_id)).first()
    kept = lifecycle.back_in_queue(held.kind, held.checkpoint) if held else lifecycle.NO_PROGRESS
    released = lifecycle.transition(
        unit.session,
        job_id,
        JobStatus.QUEUED,
        worker=holder,
        attempts=max(0, attempts - 1),
        retry_at=utcnow(),  # due again now: the metrics' queue wait counts from here
        dispatched_at=utcnow() if handed else None,
        **kept,
    )
    if released:
        close_attempt(unit.session, job_id, holder, "requeued")
        unit.announce(
            "requeued", job_id, status="queued", reason="worker stopped", progress=kept["progress"]
        )
        log.warning(
            "job %s: its worker stopped; back in the queue", job_id, extra={"job_id": job_id}
        )
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


def _quiet_since(now: datetime) -> datetime:
    """A running job's last heartbeat before this is two missed: its worker is silent."""
    return now - timedelta(seconds=2 * get_settings().worker.heartbeat_interval)


def silent(jobs: Sequence[Job]) -> dict[str, str]:
    """For each running job among ``jobs`` whose worker has missed two heartbeats, by
    id: since when it has been silent, and by when the reaper takes the job from it
    (its lease, and a round of the reaper) unless it answers. A worker that answers
    again keeps its job; one that is gone loses it then, or sooner where the reaper
    runs on its machine."""
    settings = get_settings().worker
    quiet = _quiet_since(utcnow())
    told = {}
    for job in jobs:
        if job.status != JobStatus.RUNNING.value or not job.heartbeat_at:
            continue
        if job.heartbeat_at >= quiet:
            continue
        taken = job.heartbeat_at + timedelta(
            seconds=settings.lease_seconds + settings.reaper_interval
        )
        last = job.attempts >= job.max_attempts
        then = "it fails (its last attempt)" if last else "it runs again"
        told[job.id] = (
            f"its worker has not reported since {job.heartbeat_at:%H:%M:%S} UTC; if it "
            f"stays silent, the job is taken from it by {taken:%H:%M:%S} UTC and {then}"
        )
    return told


def reap(is_gone: Callable[[str], bool] = lambda _holder: False) -> int:
    """Send jobs whose worker stopped renewing their lease back to the queue; and,
    without waiting for the lease, those whose process ``is_gone`` (dead, on this
    machine) once it has missed two heartbeats: after ``kill -9`` of a whole worker, or
    of ``up``, no delivery of theirs comes back to find them. The missed heartbeats
    keep a live process of another machine of the same name from being taken for
    gone. How many were sent back."""
    settings = get_settings()
    now = utcnow()
    lease = settings.worker.lease_seconds
    stale = now - timedelta(seconds=lease)
    quiet = _quiet_since(now)
    with session_scope() as session:
        rows = session.execute(
            select(Job, Job.heartbeat_at < stale).where(
                Job.status == JobStatus.RUNNING.value, Job.heartbeat_at < quiet
            )
        ).all()
        for job, _ in rows:
            session.expunge(job)
    reaped = 0
    for job, lapsed in rows:
        holder = job.worker or ""
        if lapsed:
            log.warning("job %s: lease lapsed on %s", job.id, holder, extra={"job_id": job.id})
            why = f"its worker ({holder}) stopped answering for {lease:g} s"
        elif holder and is_gone(holder):
            if stopped_cleanly(holder):  # its worker's own release did not come
                with unit_of_work() as unit:
                    reaped += release(unit, job.id, holder=holder, attempts=job.attempts)
                continue
            log.warning("job %s: its process %s is gone", job.id, holder, extra={"job_id": job.id})
            why = f"its worker process ({holder}) died"
        else:
            continue
        settle_error(job, RetryableError(why, code="worker_lost"), worker=holder)
        reaped += 1
    return reaped
