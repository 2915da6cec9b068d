"""Running one job: claim it, run its steps, keep their outputs, decide the ending.

The Celery task is a thin shell over :func:`run_job`; everything about status,
retries, outputs and events happens here, once, for every kind.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from longplay import keys
from longplay.config import get_settings
from longplay.jobs import admission, events, lifecycle, webhooks
from longplay.jobs.errors import JobCancelled, JobError, PermanentError, RetryableError
from longplay.jobs.progress import Heartbeat, ProgressReporter, touch_in
from longplay.jobs.registry import (
    InputFile,
    JobKind,
    RetryPolicy,
    Step,
    StepContext,
    get_kind,
)
from longplay.redis_client import get_redis
from longplay.store import files
from longplay.store.db import session_scope
from longplay.store.models import Artifact, ArtifactRole, Job, JobAttempt, JobStatus, utcnow

log = logging.getLogger(__name__)


class JobContext(StepContext):
    """The :class:`StepContext` the runner hands to each step."""

    def __init__(
        self,
        job: Job,
        params: BaseModel,
        inputs: Sequence[InputFile],
        workdir: Path,
        reporter: ProgressReporter,
    ) -> None:
        self.job_id = job.id
        self.params = params
        self.inputs = inputs
        self.workdir = workdir
        self.state = dict(job.checkpoint.get("state", {}))
        self._reporter = reporter
        self.pending_outputs: list[tuple[Path, str, str]] = []
        self.progress_webhooks: webhooks.ProgressWebhooks | None = None

    def advance(self, done: float, total: float, **details: Any) -> None:
        self._reporter.advance(done, total, **details)
        if self.progress_webhooks is not None:
            self.progress_webhooks.offer(self._reporter.snapshot())

    def add_output(
        self, path: Path, *, name: str | None = None, media_type: str | None = None
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"output {path} is not a file")
        if not path.resolve().is_relative_to(self.workdir.resolve()):
            raise ValueError(f"output {path} is outside the job's workdir")
        out_name = files.safe_name(name or path.name)
        self.pending_outputs.append((path, out_name, files.guess_media_type(out_name, media_type)))

    def outputs(self, step: str | None = None) -> list[InputFile]:
        query = select(Artifact).where(
            Artifact.job_id == self.job_id, Artifact.role == ArtifactRole.OUTPUT.value
        )
        if step is not None:
            query = query.where(Artifact.step == step)
        with session_scope() as session:
            rows = session.scalars(query.order_by(Artifact.created_at, Artifact.id)).all()
        return [_input_file(a) for a in rows]

    def note(self, message: str, **data: Any) -> None:
        events.publish("note", self.job_id, message=message, **data)


def _input_file(artifact: Artifact) -> InputFile:
    return InputFile(
        artifact.id, artifact.name, artifact.media_type, files.path_of(artifact), artifact.size
    )


def run_job(job_id: str, *, worker: str, is_gone: Callable[[str], bool]) -> None:
    """Run the job if this delivery may: it is queued (and handed over by admission),
    or its old worker is gone (its lease lapsed, or ``is_gone(holder)`` says the holder
    process is dead). A queued job whose deadline passed ends ``expired`` instead.
    Afterwards the slot is free: admission hands over the next job."""
    try:
        if not _claim_and_run(job_id, worker=worker, is_gone=is_gone):
            admission.expire(job_id)
    finally:
        admission.pump_quietly()


def _claim_and_run(job_id: str, *, worker: str, is_gone: Callable[[str], bool]) -> bool:
    """Run the job if this delivery may claim it; False when it may not."""
    settings = get_settings()
    lease = timedelta(seconds=settings.lease_seconds)
    with session_scope() as session:
        job = lifecycle.claim(session, job_id, worker=worker, lease=lease)
        if job is None:
            holder = session.scalar(
                select(Job.worker).where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
            )
            if holder and is_gone(holder):
                job = lifecycle.claim(
                    session, job_id, worker=worker, lease=lease, dead_holder=holder
                )
        if job is None:
            log.info("job %s: not claimable here (already running, finished or gone)", job_id)
            return False
        if job.attempts > 1:  # an earlier run whose process died left its attempt open
            session.execute(
                update(JobAttempt)
                .where(JobAttempt.job_id == job.id, JobAttempt.finished_at.is_(None))
                .values(finished_at=utcnow(), outcome="lost")
                .execution_options(synchronize_session=False)
            )
        session.add(JobAttempt(job_id=job.id, attempt=job.attempts, worker=worker))
        webhooks.enqueue(session, job, "started")
        session.flush()
        session.expunge(job)
    events.publish("running", job.id, status="running", attempt=job.attempts, worker=worker)
    log.info("job %s (%s) started, attempt %d", job.id, job.kind, job.attempts)
    admission.pump_quietly()  # its broker slot is free
    kind = get_kind(job.kind)
    try:
        if kind is None:
            raise PermanentError(f"this worker has no job kind {job.kind!r}", code="unknown_kind")
        _run_steps(job, kind, worker=worker)
    except JobCancelled:
        _after_cancel(job, worker=worker)
    except JobError as exc:
        settle_error(job, exc, worker=worker)
    except MemoryError:
        settle_error(
            job, RetryableError("the worker ran out of memory", code="out_of_memory"), worker=worker
        )
    except SoftTimeLimitExceeded:
        limit = kind.soft_time_limit if kind is not None else None
        error = PermanentError(
            f"{job.kind} ran past its time limit of {limit:g} s and was stopped",
            code="time_limit",
        )
        settle_error(job, error, worker=worker)
    except OperationalError as exc:
        lost = RetryableError(f"the database did not answer: {exc}", code="store_unavailable")
        settle_error(job, lost, worker=worker)
    except Exception as exc:
        log.exception("job %s: unexpected error", job.id)
        error = PermanentError(
            f"internal error: {type(exc).__name__}: {exc}", code="internal_error"
        )
        settle_error(job, error, worker=worker)
    finally:
        shutil.rmtree(settings.work_dir / job.id, ignore_errors=True)
    return True


def fail_killed(job_id: str, *, holder_prefix: str) -> None:
    """The process running the job was killed at its kind's hard time limit: fail it."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.RUNNING.value:
            return
        holder = job.worker or ""
        session.expunge(job)
    if not holder.startswith(holder_prefix):
        return
    kind = get_kind(job.kind)
    limit = kind.time_limit if kind is not None and kind.time_limit is not None else 0.0
    error = PermanentError(
        f"{job.kind} ran past its hard time limit of {limit:g} s; its process was stopped",
        code="time_limit",
    )
    settle_error(job, error, worker=holder)
    shutil.rmtree(get_settings().work_dir / job.id, ignore_errors=True)
    admission.pump_quietly()


def _load_inputs(job: Job) -> list[InputFile]:
    if not job.inputs:
        return []
    with session_scope() as session:
        rows = {
            a.id: a for a in session.scalars(select(Artifact).where(Artifact.id.in_(job.inputs)))
        }
    inputs = []
    for artifact_id in job.inputs:
        artifact = rows.get(artifact_id)
        path = files.path_of(artifact) if artifact is not None else None
        if artifact is None or path is None or not path.is_file():
            raise PermanentError(
                f"input {artifact_id} no longer exists; upload it again", code="input_missing"
            )
        inputs.append(_input_file(artifact))
    return inputs


def _run_steps(job: Job, kind: JobKind, *, worker: str) -> None:
    settings = get_settings()
    params = kind.params.model_validate(job.params)
    inputs = _load_inputs(job)
    workdir = settings.work_dir / job.id
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    reporter = ProgressReporter(
        job.id, worker, kind.steps, write_interval=settings.progress_write_interval
    )
    ctx = JobContext(job, params, inputs, workdir, reporter)
    ctx.progress_webhooks = webhooks.progress_webhooks(job, settings)
    done: list[str] = list(job.checkpoint.get("done", []))
    heartbeat = Heartbeat(
        reporter,
        settings.heartbeat_interval,
        cancel_grace=settings.cancel_grace,
        on_overdue=lambda: stop_overdue(job, worker=worker),
    )
    heartbeat.start()
    try:
        for index, step in enumerate(kind.steps):
            if step.name in done:
                reporter.finish_step(step, skipped=True)
                continue
            reporter.start_step(step)
            step.run(ctx)
            reporter.advance(1, 1)
            done.append(step.name)
            _keep_step(job, step, ctx, done, worker=worker, final=index == len(kind.steps) - 1)
            reporter.finish_step(step)
    finally:
        heartbeat.stop()
    result = {"outputs": job.checkpoint.get("outputs", []), "state": ctx.state}
    events.publish(
        "completed", job.id, status="completed", progress=100.0, result=result, expire=True
    )
    log.info("job %s completed", job.id)


def _keep_step(
    job: Job, step: Step, ctx: JobContext, done: list[str], *, worker: str, final: bool
) -> None:
    """Keep a finished step's outputs and checkpoint, and after the last step complete
    the job: one transaction, which finds nothing to update if the job is no longer
    ours (cancelled, taken over) and then keeps nothing."""
    kept = [
        files.adopt(
            path,
            owner_id=job.owner_id,
            name=name,
            media_type=media_type,
            role=ArtifactRole.OUTPUT,
            job_id=job.id,
            step=step.name,
        )
        for path, name, media_type in ctx.pending_outputs
    ]
    ctx.pending_outputs.clear()
    outputs = [*job.checkpoint.get("outputs", []), *(a.id for a in kept)]
    checkpoint = {"done": list(done), "state": ctx.state, "outputs": outputs}
    # A store that does not answer is waited for (up to a lease), not taken as a
    # reason to run the finished step again.
    patience = time.monotonic() + get_settings().lease_seconds
    try:
        for wait in itertools.count():
            try:
                _keep_in_store(job, ctx, kept, checkpoint, worker=worker, final=final)
                break
            except OperationalError as exc:
                if time.monotonic() > patience:
                    raise
                log.warning("job %s: the store did not keep step %s (%s)", job.id, step.name, exc)
                time.sleep(min(2.0, 0.25 * 2**wait))
    except BaseException:
        for artifact in kept:
            files.remove(artifact)
        raise
    job.checkpoint = checkpoint


def _keep_in_store(
    job: Job,
    ctx: JobContext,
    kept: list[Artifact],
    checkpoint: dict[str, Any],
    *,
    worker: str,
    final: bool,
) -> None:
    """One transaction: the step's outputs and checkpoint, or the job's completion."""
    outputs = checkpoint["outputs"]
    with session_scope() as session:
        session.add_all(kept)
        if final:
            held = lifecycle.transition(
                session,
                job.id,
                JobStatus.COMPLETED,
                worker=worker,
                checkpoint=checkpoint,
                progress=100.0,
                eta_seconds=0.0,
                current_step=None,
                result={"outputs": outputs, "state": ctx.state},
            )
        else:
            held = touch_in(session, job.id, worker, checkpoint=checkpoint)
        if not held:
            raise JobCancelled(job.id)
        if final:
            _close_attempt(session, job.id, worker, "completed")
            webhooks.enqueue(session, job, "completed")


def finish_attempt(
    job_id: str, worker: str, outcome: str, error: dict[str, Any] | None = None
) -> None:
    """Close this worker's open attempt at the job with how it ended."""
    with session_scope() as session:
        _close_attempt(session, job_id, worker, outcome, error)


def _close_attempt(
    session: Session,
    job_id: str,
    worker: str,
    outcome: str,
    error: dict[str, Any] | None = None,
) -> None:
    session.execute(
        update(JobAttempt)
        .where(
            JobAttempt.job_id == job_id,
            JobAttempt.worker == worker,
            JobAttempt.finished_at.is_(None),
        )
        .values(finished_at=utcnow(), outcome=outcome, error=error)
        .execution_options(synchronize_session=False)
    )


def stop_overdue(job: Job, *, worker: str) -> None:
    """A cancelled job's step ran past ``cancel_grace`` without reaching a checkpoint:
    drop its partial outputs and scratch space, then end this pool process (Celery
    starts a new one). Runs in the job's heartbeat thread, beside the stuck step.

    Celery requeues the message of a lost process; that delivery finds the job
    cancelled and does nothing.
    """
    log.warning(
        "job %s: still running %g s after it was cancelled; stopping its process",
        job.id,
        get_settings().cancel_grace,
    )
    try:
        _after_cancel(job, worker=worker)
        shutil.rmtree(get_settings().work_dir / job.id, ignore_errors=True)
        with contextlib.suppress(redis.RedisError):  # this process's report goes with it
            get_redis().delete(keys.worker_process(worker))
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(EXIT_CANCEL_OVERDUE)


EXIT_CANCEL_OVERDUE = 75
"""Exit status of a pool process ended because its cancelled job would not stop."""


def _after_cancel(job: Job, *, worker: str) -> None:
    """The job was cancelled (or taken over) under us: drop what this run produced."""
    with session_scope() as session:
        row = session.get(Job, job.id)
        cancelled = row is not None and row.status == JobStatus.CANCELLED.value
    finish_attempt(job.id, worker, "cancelled" if cancelled else "lost")
    if not cancelled:
        log.info("job %s: stopped, no longer held by this worker", job.id)
        return
    with session_scope() as session:
        outputs = list(
            session.scalars(
                select(Artifact).where(
                    Artifact.job_id == job.id, Artifact.role == ArtifactRole.OUTPUT.value
                )
            )
        )
        for artifact in outputs:
            session.delete(artifact)
    for artifact in outputs:
        files.remove(artifact)
    log.info("job %s cancelled; %d partial output(s) removed", job.id, len(outputs))
    events.publish("stopped", job.id, status="cancelled", removed_outputs=len(outputs))


def settle_error(job: Job, error: JobError, *, worker: str, redeliver: bool = True) -> None:
    """Retry the job later if the error allows and attempts remain, else fail it.

    ``redeliver=False`` when Celery itself requeues the message (a lost worker).
    A retry waits in the store until its ``retry_at``; admission then hands it over.
    """
    kind = get_kind(job.kind)
    policy = kind.retry if kind is not None else RetryPolicy(max_attempts=1)
    with session_scope() as session:
        row = session.get(Job, job.id)
        attempts = row.attempts if row is not None else job.attempts
        max_attempts = row.max_attempts if row is not None else job.max_attempts
        retry = error.retryable and attempts < max_attempts
        details = {**error.as_dict(), "attempt": attempts}
        if retry:
            delay = policy.delay(attempts) if redeliver else 0.0
            details["retry_in_seconds"] = round(delay, 1)
            retry_at = utcnow() + timedelta(seconds=delay)
            moved = lifecycle.transition(
                session,
                job.id,
                JobStatus.QUEUED,
                worker=worker,
                error=details,
                eta_seconds=None,
                retry_at=retry_at,
                dispatched_at=None if redeliver else utcnow(),
            )
        else:
            moved = lifecycle.transition(
                session, job.id, JobStatus.FAILED, worker=worker, error=details, eta_seconds=None
            )
            if moved:
                webhooks.enqueue(session, job, "failed")
    if not moved:
        _after_cancel(job, worker=worker)
        return
    finish_attempt(job.id, worker, "retrying" if retry else "failed", details)
    if retry:
        log.warning("job %s: %s; retrying in %.1fs", job.id, error.message, delay)
        events.publish("retrying", job.id, status="queued", error=details)
        admission.wake_quietly(retry_at)
    else:
        log.warning("job %s failed: %s", job.id, error.message)
        events.publish("failed", job.id, status="failed", error=details, expire=True)
