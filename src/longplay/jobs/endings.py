"""How a run ends when it does not complete: a retry, a failure, a cancel, a kill.

Each ending is one unit of work: the job's new status, the attempt's outcome and the
announcement commit together, so whoever hears ``failed`` finds the attempt closed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, NoReturn

import redis

from longplay import keys
from longplay.framework import JobError, PermanentError, RetryPolicy, get_kind
from longplay.jobs import lifecycle
from longplay.jobs.admission import pump
from longplay.jobs.attempts import DIED, close_attempt
from longplay.jobs.unit import tell, unit_of_work
from longplay.redis_client import get_redis
from longplay.settings import get_settings
from longplay.store import files
from longplay.store.db import session_scope
from longplay.store.models import Job, JobStatus, utcnow
from longplay.store.queries import outputs_of
from longplay.store.views import ErrorPublic

log = logging.getLogger(__name__)

EXIT_CANCEL_OVERDUE = 75
"""Exit status of a pool process ended because its cancelled job would not stop."""


OPERATORS_WAIT = {"storage_unavailable": 60.0}
"""Seconds at least before the retry after a failure a person mends (a full disk:
space freed), doubling with each attempt: the kind's backoff, seconds long, spent a
job's every attempt before anyone could act."""


def settle_error(
    job: Job,
    error: JobError,
    *,
    worker: str,
    redeliver: bool = True,
    stopped: Mapping[str, Any] | None = None,
) -> None:
    """Retry the job later if the error allows and attempts remain, else fail it.

    ``redeliver=False`` when Celery itself requeues the message (a lost worker).
    A retry waits in the store until its ``retry_at``; admission then hands it over.
    ``stopped``: the run's last progress (``ProgressReporter.snapshot``), which a failed
    job keeps, so that it shows the step it failed in and how far that step got.
    """
    kind = get_kind(job.kind)
    policy = kind.retry if kind is not None else RetryPolicy(max_attempts=1)
    with unit_of_work(known=job) as unit:
        session = unit.session
        row = session.get(Job, job.id)
        attempts = row.attempts if row is not None else job.attempts
        max_attempts = row.max_attempts if row is not None else job.max_attempts
        retry = error.retryable and attempts < max_attempts
        details = {**error.as_dict(), "attempt": attempts}
        if retry:
            delay = policy.delay(attempts) if redeliver else 0.0
            if redeliver and error.code in OPERATORS_WAIT:
                delay = max(delay, OPERATORS_WAIT[error.code] * 2 ** (attempts - 1))
            details["retry_in_seconds"] = round(delay, 1)
            retry_at = utcnow() + timedelta(seconds=delay)
            kept = lifecycle.back_in_queue(job.kind, row.checkpoint if row is not None else None)
            progress = kept["progress"]
            moved = lifecycle.transition(
                session,
                job.id,
                JobStatus.QUEUED,
                worker=worker,
                error=details,
                retry_at=retry_at,
                dispatched_at=None if redeliver else utcnow(),
                **kept,
            )
        else:
            where = _where_it_stopped(stopped)
            progress = where.get("progress", row.progress if row is not None else job.progress)
            moved = lifecycle.transition(
                session,
                job.id,
                JobStatus.FAILED,
                worker=worker,
                error=details,
                eta_seconds=None,
                **where,
            )
        if moved:
            # A run whose worker died is "lost", however that was found (by the reaper,
            # as here, or by the next run of the job: attempts.DIED).
            how = ("lost" if error.code == DIED["code"] else "retrying") if retry else "failed"
            close_attempt(session, job.id, worker, how, details)
            told = ErrorPublic.told(details).model_dump()  # no server paths
            if retry:
                unit.announce("retrying", job.id, status="queued", progress=progress, error=told)
            else:
                unit.announce("failed", job.id, status="failed", progress=progress, error=told)
    if not moved:
        after_cancel(job, worker=worker)
        return
    if retry:
        log.warning(
            "job %s: %s; retrying in %.1fs", job.id, error.message, delay, extra={"job_id": job.id}
        )
        pump.wake_quietly(retry_at)
    else:
        log.warning("job %s failed: %s", job.id, error.message, extra={"job_id": job.id})


def _where_it_stopped(stopped: Mapping[str, Any] | None) -> dict[str, Any]:
    """The columns that keep a run's last progress (``ProgressReporter.snapshot``)."""
    if stopped is None:
        return {}
    return {
        "progress": stopped["progress"],
        "current_step": stopped["step"],
        "step_details": stopped["step_details"],
    }


def after_cancel(job: Job, *, worker: str, stopped: Mapping[str, Any] | None = None) -> None:
    """The job was cancelled (or taken over) under us: drop what this run produced.

    ``stopped``: the run's last progress. The cancel kept the progress last written,
    which may be a write interval behind the run (the step before, a lower percent);
    a cancelled job keeps where its run stopped, as a failed one does."""
    with session_scope() as session:
        row = session.get(Job, job.id)
        cancelled = row is not None and row.status == JobStatus.CANCELLED.value
        if row is not None and cancelled and row.worker == worker and stopped is not None:
            for column, value in _where_it_stopped(stopped).items():
                setattr(row, column, value)
            row.updated_at = utcnow()  # it changed after the cancel answered
        close_attempt(session, job.id, worker, "cancelled" if cancelled else "lost")
    if not cancelled:
        log.info("job %s: stopped, no longer held by this worker", job.id, extra={"job_id": job.id})
        return
    with session_scope() as session:
        outputs = outputs_of(session, job.id)
        for artifact in outputs:
            session.delete(artifact)
    for artifact in outputs:
        files.remove(artifact)
    log.info("job %s cancelled; %d partial output(s) removed", job.id, len(outputs))
    where = {"progress": stopped["progress"], "step": stopped["step"]} if stopped else {}
    tell("stopped", job.id, status="cancelled", removed_outputs=len(outputs), **where)


def fail_killed(job_id: str, *, holder_prefix: str) -> None:
    """The process running the job was killed at its kind's hard time limit: fail it."""

    def error(job: Job) -> PermanentError:
        kind = get_kind(job.kind)
        limit = kind.time_limit if kind is not None and kind.time_limit is not None else 0.0
        return PermanentError(
            f"{job.kind} ran past its hard time limit of {limit:g} s; its process was stopped",
            code="time_limit",
        )

    _fail_running(job_id, lambda holder: holder.startswith(holder_prefix), error)


def fail_dead_runs(job_id: str, *, holder: str) -> None:
    """The process running the job died in each of its attempts, the last as ``holder``
    (a crash in a model or a native library, the machine's memory running out): fail it
    rather than run it again, which would end the same way and take a worker's process
    with it each time."""
    _fail_running(
        job_id,
        lambda held_by: held_by == holder,
        lambda job: PermanentError(
            f"the worker process running it died during each of its {job.attempts} "
            "attempts (a crash in a model or a native library, or the machine out of "
            "memory); it is not run again",
            code="worker_died",
        ),
    )


def _fail_running(
    job_id: str, held: Callable[[str], bool], error: Callable[[Job], PermanentError]
) -> None:
    """Fail the job with ``error(job)`` if it is still running and ``held`` by the
    worker whose process is gone, and remove its scratch space, which that process
    would have."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.RUNNING.value or not held(job.worker or ""):
            return
        session.expunge(job)
    settle_error(job, error(job), worker=job.worker or "")
    shutil.rmtree(get_settings().work_dir / job.id, ignore_errors=True)


def end_stuck_process(job: Job, *, worker: str) -> None:
    """A cancelled job's step ran past ``cancel_grace`` without reaching a checkpoint:
    drop its partial outputs and scratch space, then end this pool process (Celery
    starts a new one). Runs in the job's heartbeat thread, beside the stuck step.

    Celery requeues the message of a lost process; that delivery finds the job
    cancelled and does nothing.
    """
    log.warning(
        "job %s: still running %g s after it was cancelled; stopping its process",
        job.id,
        get_settings().worker.cancel_grace,
    )
    try:
        after_cancel(job, worker=worker)
        shutil.rmtree(get_settings().work_dir / job.id, ignore_errors=True)
    finally:
        end_pool_process(worker)


def end_pool_process(worker: str) -> NoReturn:
    """End this pool process, ``worker``, with :data:`EXIT_CANCEL_OVERDUE` (Celery starts
    a new one), its report in Redis and its output with it: what a step, or a helper's
    item, that reached no checkpoint within the cancel grace leaves its process to."""
    try:
        with contextlib.suppress(redis.RedisError):
            get_redis().delete(keys.worker_process(worker))
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(EXIT_CANCEL_OVERDUE)
