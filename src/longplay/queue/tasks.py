"""The one task that runs a job, and the reaper beat runs.

Like a web view, the task takes an id and hands it to the jobs layer; it never
retries through Celery, because the runner owns the retry rules.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import redis
from celery.exceptions import TimeLimitExceeded
from celery.signals import (
    task_failure,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)
from sqlalchemy import select

from longplay import keys
from longplay.config import get_settings
from longplay.engines import loaded_engines
from longplay.jobs import admission, events, lifecycle
from longplay.jobs.errors import RetryableError
from longplay.jobs.registry import load_builtin_kinds
from longplay.jobs.runner import fail_killed, run_job, settle_error
from longplay.queue.app import ADMIT, CLEANUP, REAP, RUN_JOB, celery_app
from longplay.redis_client import get_redis
from longplay.store.db import dispose_engine, session_scope
from longplay.store.models import Job, JobStatus, utcnow

log = logging.getLogger(__name__)

# In the worker's main process, before it forks its pool: every pool process starts
# with the kinds (and what they import) loaded, instead of loading them on its first job.
load_builtin_kinds()


def worker_prefix(main_pid: int) -> str:
    """What the names of all pool processes of one worker start with."""
    return f"{socket.gethostname()}:{main_pid}:"


def worker_name() -> str:
    """``host:worker pid:pool process pid``: the holder of the jobs this process runs."""
    return f"{worker_prefix(os.getppid())}{os.getpid()}"


REPORT_TTL = 24 * 3600


def report(*, last_job: str | None = None) -> None:
    """Tell the API what this pool process has loaded (``GET /v1/workers``)."""
    name = worker_name()
    engines = [
        {**asdict(e), "fallback": e.fallback.describe() if e.fallback else None}
        for e in loaded_engines()
    ]
    body = {"name": name, "engines": engines, "last_job": last_job, "at": utcnow()}
    try:
        get_redis().set(keys.worker_process(name), json.dumps(body, default=str), ex=REPORT_TTL)
    except redis.RedisError as exc:
        log.warning("could not report worker state: %s", exc)


@worker_process_init.connect
def _fresh_process(**_: object) -> None:
    """A forked pool process must not reuse its parent's database connections."""
    dispose_engine()
    report()


@worker_process_shutdown.connect
def _forget_process(**_: object) -> None:
    with contextlib.suppress(redis.RedisError):
        get_redis().delete(keys.worker_process(worker_name()))


def holder_is_gone(holder: str) -> bool:
    """Whether the pool process named ``holder`` (``host:worker pid:pid``) is dead.

    Only a process on this host can be checked; elsewhere the lease decides.
    """
    host, _, pid = holder.rpartition(":")
    if not host.startswith(f"{socket.gethostname()}:") or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@celery_app.task(name=RUN_JOB, ignore_result=True)
def run_job_task(job_id: str) -> None:
    run_job(job_id, worker=worker_name(), is_gone=holder_is_gone)
    report(last_job=job_id)


@task_failure.connect(sender=run_job_task)
def _hard_time_limit(exception: BaseException | None = None, args: Any = (), **_: Any) -> None:
    """In the worker's main process: the pool process running a job was killed at the
    kind's hard time limit. Fail the job with the reason; the pool starts a new process."""
    if not isinstance(exception, TimeLimitExceeded) or not args:
        return
    fail_killed(str(args[0]), holder_prefix=worker_prefix(os.getpid()))


def release_jobs_of(main_pid: int) -> int:
    """After a worker stopped: send the jobs it was running back to the queue now,
    instead of waiting for their leases to lapse. A clean stop costs no attempt."""
    with session_scope() as session:
        held = list(
            session.scalars(
                select(Job).where(
                    Job.status == JobStatus.RUNNING.value,
                    Job.worker.startswith(worker_prefix(main_pid), autoescape=True),
                )
            )
        )
        released = [
            job
            for job in held
            if lifecycle.transition(
                session,
                job.id,
                JobStatus.QUEUED,
                worker=job.worker,
                attempts=max(0, job.attempts - 1),
                current_step=None,
                eta_seconds=None,
                dispatched_at=None,
            )
        ]
        for job in released:
            session.expunge(job)
    for job in released:
        log.warning("job %s: its worker stopped; back in the queue", job.id)
        events.publish("requeued", job.id, status="queued", reason="worker stopped")
    if released:
        admission.pump_quietly()
    return len(released)


@celery_app.task(name=REAP, ignore_result=True)
def reap() -> int:
    """Send jobs whose worker stopped renewing their lease back to the queue."""
    settings = get_settings()
    stale = utcnow() - timedelta(seconds=settings.lease_seconds)
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
            f"its worker ({job.worker}) stopped answering for {settings.lease_seconds:g} s",
            code="worker_lost",
        )
        settle_error(job, error, worker=job.worker or "")
    if lapsed:
        admission.pump_quietly()
    return len(lapsed)


@celery_app.task(name=ADMIT, ignore_result=True)
def admit() -> dict[str, int]:
    """An admission round: deadlines, lost messages, hand over the held jobs that are due."""
    return admission.tick()


@worker_ready.connect
def _admit_on_start(**_: object) -> None:
    """A worker came up: jobs may have waited for one, or been lost with the broker."""
    try:
        admission.tick()
    except Exception as exc:
        log.warning("admission round at worker start failed: %s", exc)


@celery_app.task(name=CLEANUP, ignore_result=True)
def cleanup() -> dict[str, Any]:
    """Delete old jobs, expired results, unused uploads and scratch space (beat, hourly)."""
    from longplay.jobs.cleanup import run_cleanup

    return run_cleanup().as_dict()
