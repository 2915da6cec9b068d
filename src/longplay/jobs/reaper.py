"""Jobs whose worker is gone go back to the queue: a stopped worker's at once, a
silent one's when its lease lapses."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from longplay.framework import RetryableError
from longplay.jobs import lifecycle
from longplay.jobs.attempts import close_attempt
from longplay.jobs.endings import settle_error
from longplay.jobs.unit import unit_of_work
from longplay.settings import get_settings
from longplay.store.db import session_scope
from longplay.store.models import Job, JobStatus, utcnow

log = logging.getLogger(__name__)


def release_jobs_of(holder_prefix: str) -> int:
    """After a worker stopped: send the jobs its processes (named ``holder_prefix…``)
    were running back to the queue now, instead of waiting for their leases to lapse.
    A clean stop costs no attempt: the run's attempt row is closed as ``requeued``, and
    the job shows no progress until its next run reports some."""
    with unit_of_work() as unit:
        held = list(
            unit.session.scalars(
                select(Job).where(
                    Job.status == JobStatus.RUNNING.value,
                    Job.worker.startswith(holder_prefix, autoescape=True),
                )
            )
        )
        released = [
            job
            for job in held
            if lifecycle.transition(
                unit.session,
                job.id,
                JobStatus.QUEUED,
                worker=job.worker,
                attempts=max(0, job.attempts - 1),
                dispatched_at=None,
                **lifecycle.NO_PROGRESS,
            )
        ]
        for job in released:
            close_attempt(unit.session, job.id, job.worker or "", "requeued")
            unit.announce(
                "requeued", job.id, status="queued", reason="worker stopped", progress=0.0
            )
    for job in released:
        log.warning("job %s: its worker stopped; back in the queue", job.id)
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
