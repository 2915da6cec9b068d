"""The admission round beat runs: deadlines, messages lost with the broker, the pump."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from longplay import keys
from longplay.broker import send as broker
from longplay.jobs import lifecycle
from longplay.jobs.admission.choice import QUEUED, RUNNING
from longplay.jobs.admission.pump import pump, wake_quietly
from longplay.jobs.unit import unit_of_work
from longplay.settings import Settings, get_settings
from longplay.store.db import affected, session_scope
from longplay.store.models import Job, JobStatus, utcnow

log = logging.getLogger(__name__)


def expire(job_id: str) -> bool:
    """End a queued job whose deadline passed as ``expired``; True when this call did."""
    return _end_past_deadline(
        job_id, JobStatus.QUEUED, JobStatus.EXPIRED, "passed before it started"
    )


def cancel_past_deadline(job_id: str) -> bool:
    """Cancel a running job whose deadline passed; it stops at its next checkpoint."""
    return _end_past_deadline(job_id, JobStatus.RUNNING, JobStatus.CANCELLED, "passed while it ran")


def _end_past_deadline(job_id: str, source: JobStatus, target: JobStatus, when: str) -> bool:
    """Move a job whose deadline passed from ``source`` to ``target``, with an error
    saying the deadline ``when``; True when this call did."""
    with unit_of_work() as unit:
        session = unit.session
        deadline = session.scalar(select(Job.deadline).where(Job.id == job_id))
        if deadline is None:
            return False
        moment = deadline.strftime("%Y-%m-%d %H:%M:%S UTC")
        message = f"its deadline ({moment}) {when}"
        if target == JobStatus.CANCELLED:
            message = f"cancelled: {message}"
        error = {"code": "deadline_passed", "message": message, "retryable": False}
        done = lifecycle.transition(
            session,
            job_id,
            target,
            from_=[source],
            when=Job.deadline <= utcnow(),
            error=error,
            eta_seconds=None,
        )
        if done:
            progress = session.scalar(select(Job.progress).where(Job.id == job_id))
            unit.announce(target.value, job_id, status=target.value, progress=progress, error=error)
    if done:
        log.info("job %s: %s", job_id, message, extra={"job_id": job_id})
    return done


def sweep_deadlines() -> int:
    """Expire queued jobs and cancel running ones whose deadline passed."""
    now = utcnow()
    with session_scope() as session:
        overdue = session.execute(
            select(Job.id, Job.status).where(Job.status.in_([QUEUED, RUNNING]), Job.deadline <= now)
        ).all()
    return sum(
        expire(job_id) if status == QUEUED else cancel_past_deadline(job_id)
        for job_id, status in overdue
    )


def recover_lost(settings: Settings | None = None) -> int:
    """Hold again jobs handed over ``redispatch_after`` ago and still queued while their
    broker queue is empty: their message was lost (a Redis restarted without its data).
    A second delivery is harmless, since only one claim can win."""
    settings = settings or get_settings()
    cutoff = utcnow() - timedelta(seconds=settings.admission.redispatch_after)
    with session_scope() as session:
        stale = session.execute(
            select(Job.id, Job.resource, Job.priority, Job.dispatched_at).where(
                Job.status == QUEUED, Job.dispatched_at < cutoff
            )
        ).all()
        if not stale:
            return 0
        depth: dict[str, int] = {}
        lost = 0
        for job_id, resource, priority, dispatched_at in stale:
            queue = keys.queue_name(resource, priority)
            if queue not in depth:
                depth[queue] = broker.waiting(queue)
            if depth[queue]:
                continue
            lost += affected(
                session.execute(
                    update(Job)
                    .where(
                        Job.id == job_id,
                        Job.status == QUEUED,
                        Job.dispatched_at == dispatched_at,
                    )
                    .values(dispatched_at=None)
                    .execution_options(synchronize_session=False)
                )
            )
            log.warning(
                "job %s: handed over at %s and not started, with its queue empty: its "
                "message was lost with the broker, or a worker that does not answer holds "
                "it; handing it over again",
                job_id,
                f"{dispatched_at:%H:%M:%S}",
            )
    return lost


def next_due(session: Session) -> datetime | None:
    """The next moment something is due: a held job's run_at or retry, or a deadline."""
    now = utcnow()
    held = and_(Job.status == QUEUED, Job.dispatched_at.is_(None))
    moments = [
        session.scalar(select(func.min(Job.run_at)).where(held, Job.run_at > now)),
        session.scalar(select(func.min(Job.retry_at)).where(held, Job.retry_at > now)),
        session.scalar(
            select(func.min(Job.deadline)).where(
                Job.status.in_([QUEUED, RUNNING]), Job.deadline > now
            )
        ),
    ]
    found = [m for m in moments if m is not None]
    return min(found) if found else None


def tick() -> dict[str, int]:
    """One admission round: deadlines, lost messages, hand over what is due, book the
    next round."""
    settings = get_settings()
    swept = sweep_deadlines()
    lost = recover_lost(settings)
    handed = pump()
    with session_scope() as session:
        upcoming = next_due(session)
    wake_quietly(upcoming)
    return {"deadlines": swept, "lost": lost, "handed": handed}
