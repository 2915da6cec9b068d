"""Running one job: claim it, run its steps, keep their outputs, decide the ending.

The Celery task is a thin shell over :func:`run_job`; everything about status,
retries, outputs and events happens here and in :mod:`longplay.jobs.endings`, once,
for every kind.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from longplay.framework import (
    JobCancelled,
    JobError,
    JobKind,
    PermanentError,
    Step,
    get_kind,
)
from longplay.framework.rules import checkpointable, returned_note
from longplay.jobs import lifecycle, logs, reaper, step_times
from longplay.jobs.admission import rounds
from longplay.jobs.attempts import close_attempt, open_attempt
from longplay.jobs.context import JobContext, load_inputs
from longplay.jobs.endings import after_cancel, end_stuck_process, fail_dead_runs, settle_error
from longplay.jobs.failures import job_error
from longplay.jobs.fanout import Pool
from longplay.jobs.outages import note_store_full, said, storage_full
from longplay.jobs.progress import Heartbeat, ProgressReporter, touch_in
from longplay.jobs.unit import UnitOfWork, unit_of_work
from longplay.jobs.webhooks.outbox import progress_webhooks
from longplay.settings import get_settings
from longplay.store import files
from longplay.store.models import Artifact, ArtifactRole, Job, JobStatus, utcnow

log = logging.getLogger(__name__)


def run_job(job_id: str, *, worker: str, is_gone: Callable[[str], bool]) -> bool:
    """Run the job if this delivery may: it is queued (and handed over by admission),
    or its old worker is gone (its lease lapsed, or ``is_gone(holder)`` says the holder
    process is dead). A queued job whose deadline passed ends ``expired`` instead.
    Whichever way the job ends, its announcement asks admission for the next job.
    Whether this delivery took the job (False: nothing to do, a late or repeated one)."""
    if _claim_and_run(job_id, worker=worker, is_gone=is_gone):
        return True
    rounds.expire(job_id)
    return False


def _claim_and_run(job_id: str, *, worker: str, is_gone: Callable[[str], bool]) -> bool:
    """Run the job if this delivery may claim it; False when it may not."""
    lease = timedelta(seconds=get_settings().worker.lease_seconds)
    with unit_of_work() as unit:
        job, died_as = _claim(unit, job_id, worker=worker, lease=lease, is_gone=is_gone)
        if job is not None:
            attempt = open_attempt(unit.session, job.id, worker, after_lost=job.attempts > 1)
            unit.knows(job)
            unit.announce("running", job.id, status="running", attempt=attempt, worker=worker)
    if job is None:
        if died_as is None:
            log.info("job %s: not claimable here (already running, finished or gone)", job_id)
            return False
        fail_dead_runs(job_id, holder=died_as)  # as each run did, the next would end
        return True
    with logs.job_context(job_id=job.id, kind=job.kind, owner=job.owner_id, attempt=attempt):
        _run(job, attempt, worker=worker, is_gone=is_gone)
    return True


def _claim(
    unit: UnitOfWork,
    job_id: str,
    *,
    worker: str,
    lease: timedelta,
    is_gone: Callable[[str], bool],
) -> tuple[Job | None, str | None]:
    """The job, when this delivery may claim it: queued and handed over, or running where
    its worker's lease lapsed or its process is gone and attempts are left. Else None,
    with the holder whose process died in the job's last attempt, if that is why."""
    session = unit.session
    job = lifecycle.claim(session, job_id, worker=worker, lease=lease)
    if job is not None:
        return job, None
    held = session.execute(
        select(Job.worker, Job.attempts, Job.max_attempts).where(
            Job.id == job_id, Job.status == JobStatus.RUNNING.value
        )
    ).first()
    if held is None or not held.worker or not is_gone(held.worker):
        return None, None
    if reaper.stopped_cleanly(held.worker):
        # Its worker was stopped (SIGTERM), and Celery gave the message back before that
        # worker sent the job back itself: this delivery does it, costing no attempt.
        reaper.release(unit, job_id, holder=held.worker, attempts=held.attempts, handed=True)
        return lifecycle.claim(session, job_id, worker=worker, lease=lease), None
    if held.attempts >= held.max_attempts:
        return None, held.worker
    claimed = lifecycle.claim(session, job_id, worker=worker, lease=lease, dead_holder=held.worker)
    return claimed, None


def _run(job: Job, attempt: int, *, worker: str, is_gone: Callable[[str], bool]) -> None:
    """Run the claimed job's steps and settle how the run ended."""
    settings = get_settings()
    log.info("job %s (%s) started, attempt %d", job.id, job.kind, attempt)
    kind = get_kind(job.kind)
    reporter = ProgressReporter(
        job.id,
        worker,
        kind.steps if kind is not None else [],
        write_interval=settings.worker.progress_write_interval,
        known=job,
        shares=step_times.shares_of(job.kind, [s.name for s in kind.steps]) if kind else None,
    )
    try:
        if kind is None:
            raise PermanentError(f"this worker has no job kind {job.kind!r}", code="unknown_kind")
        _run_steps(job, kind, reporter, worker=worker, is_gone=is_gone)
    except JobCancelled:
        after_cancel(job, worker=worker, stopped=reporter.snapshot())
    except Exception as exc:
        # Progress is written at most every write_interval: the failure writes where
        # the run stopped, so a failed job shows the step it failed in.
        _settle_failure(job, job_error(job, kind, exc), worker=worker, stopped=reporter.snapshot())
    finally:
        shutil.rmtree(settings.work_dir / job.id, ignore_errors=True)


def _settle_failure(job: Job, error: JobError, *, worker: str, stopped: dict[str, Any]) -> None:
    """Settle the error with where the run stopped, waiting for a store that does not
    answer or whose disk is full (:func:`_kept_in_time`). If the store stays away, one
    line says so, and the reaper settles the job once its lease lapses; if the progress
    cannot be kept, it is settled without, rather than left running until then."""
    try:
        _kept_in_time(
            job.id,
            "its failure",
            lambda: settle_error(job, error, worker=worker, stopped=stopped),
        )
    except OperationalError as exc:
        log.warning(
            "job %s: its failure (%s) was not kept, the store did not take it: %s",
            job.id,
            error.code,
            said(exc),
        )
    except Exception:
        log.exception(
            "job %s: its failure was not kept with its progress, keeping it without", job.id
        )
        settle_error(job, error, worker=worker)


def _run_steps(
    job: Job,
    kind: JobKind[Any],
    reporter: ProgressReporter,
    *,
    worker: str,
    is_gone: Callable[[str], bool],
) -> None:
    settings = get_settings()
    params = kind.params.model_validate(job.params)
    inputs = load_inputs(job)
    workdir = settings.work_dir / job.id
    shutil.rmtree(workdir, ignore_errors=True)  # what an earlier, lost run left
    pool = Pool(job.id, job.resource, job.priority, kind.fan_out, worker, is_gone)
    ctx = JobContext(
        job, params, inputs, workdir, reporter, progress_webhooks(job, settings), pool=pool
    )
    done: list[str] = list(job.checkpoint.get("done", []))
    heartbeat = Heartbeat(
        reporter,
        settings.worker.heartbeat_interval,
        cancel_grace=settings.worker.cancel_grace,
        on_overdue=lambda: end_stuck_process(job, worker=worker),
    )
    heartbeat.start()
    try:
        for index, step in enumerate(kind.steps):
            if step.name in done:
                reporter.finish_step(step, skipped=True)
                continue
            logs.at_step(step.name)
            reporter.start_step(step)
            _returned(step, cast(Any, step.run)(ctx), ctx)
            reporter.end_step()
            done.append(step.name)
            _keep_step(job, step, ctx, done, worker=worker, final=index == len(kind.steps) - 1)
            reporter.finish_step(step)
    finally:
        heartbeat.stop()
    log.info("job %s completed", job.id)
    if not (reporter.tracker.skipped or ctx.partial):  # a whole run's times, all its own
        step_times.learn(kind.name, reporter.tracker.seconds)


def _returned(step: Step[Any], value: object, ctx: JobContext) -> None:
    """A step returns nothing; a value it returns anyway (the path of a file it made,
    say) would be lost without a word, so the job is told so in a note."""
    note = returned_note(step.name, value)
    if note is not None:
        ctx.note(note, code="step_returned_value")


def _keep_step(
    job: Job, step: Step[Any], ctx: JobContext, done: list[str], *, worker: str, final: bool
) -> None:
    """Keep a finished step's outputs and checkpoint, and after the last step complete
    the job: one transaction, which finds nothing to update if the job is no longer
    ours (cancelled, taken over) and then keeps nothing."""
    checked = checkpointable(ctx.state)  # before any file moves: a bad state keeps none
    ctx.state.clear()
    ctx.state.update(checked)  # the shape every next step sees, in this run or a retry
    ctx.warnings[:] = json.loads(json.dumps(ctx.warnings, default=str))
    kept: list[Artifact] = []
    try:
        for path, name, media_type in ctx.pending_outputs:
            kept.append(
                files.adopt(
                    path,
                    owner_id=job.owner_id,
                    name=name,
                    media_type=media_type,
                    role=ArtifactRole.OUTPUT,
                    job_id=job.id,
                    step=step.name,
                )
            )
    except BaseException:
        for artifact in kept:  # no row will name them
            files.remove(artifact)
        raise
    # Outputs are listed by time: one step's, made within a microsecond of each other,
    # keep the order the step added them in.
    now = utcnow()
    for n, artifact in enumerate(kept):
        artifact.created_at = now + timedelta(microseconds=n)
    ctx.pending_outputs.clear()
    outputs = [*job.checkpoint.get("outputs", []), *(a.id for a in kept)]
    checkpoint = {
        "done": list(done),
        "state": ctx.state,
        "outputs": outputs,
        "warnings": ctx.warnings,
    }
    try:
        _kept_in_time(
            job.id,
            f"step {step.name}",
            lambda: _keep_in_store(job, ctx, kept, checkpoint, worker=worker, final=final),
        )
    except BaseException:
        for artifact in kept:
            files.remove(artifact)
        raise
    job.checkpoint = checkpoint


STORAGE_PATIENCE_S = 1800.0
"""Seconds a finished step, or a failure, waits to be kept while the database's disk is
full: a person frees space in minutes. Giving up after a lease threw the step's work
away, and the job, found later with its lease lapsed, was recorded as a lost worker's."""
TOLD_EVERY_S = 60.0
"""Seconds between two log lines about one write that waits."""


def _kept_in_time(job_id: str, what: str, keep: Callable[[], None]) -> None:
    """Run ``keep`` (a write to the store), and again while the store does not answer:
    for up to a lease, or :data:`STORAGE_PATIENCE_S` while its disk is full. A store
    that is away is no reason to run a finished step again."""
    began = time.monotonic()
    told = -TOLD_EVERY_S
    for wait in itertools.count():
        try:
            keep()
            return
        except OperationalError as exc:
            now = time.monotonic()
            full = storage_full(exc)
            if full:
                note_store_full(exc)
            if now - began > (STORAGE_PATIENCE_S if full else get_settings().worker.lease_seconds):
                raise
            if now - told >= TOLD_EVERY_S:
                why = "its disk is full" if full else "it did not answer"
                log.warning("job %s: %s waits for the store, %s (%s)", job_id, what, why, said(exc))
                told = now
            time.sleep(min(2.0, 0.25 * 2**wait))


STATE_TOLD_LIMIT = 64 * 1024
"""Bytes of ``ctx.state``'s JSON the ``completed`` event carries to every follower."""


def _state_told(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` as the ``completed`` event tells it: its largest values left out (their
    keys in ``state_left_out``) until the rest is within :data:`STATE_TOLD_LIMIT`. A
    kind kept a 3 MB text's word list there, and the event took 7.6 MB to every
    follower, the job's stream and its flow's."""
    sizes = {key: len(json.dumps(value)) for key, value in state.items()}
    total, left_out = sum(sizes.values()), []
    for key in sorted(sizes, key=sizes.__getitem__, reverse=True):
        if total <= STATE_TOLD_LIMIT:
            break
        left_out.append(key)
        total -= sizes[key]
    if not left_out:
        return {"state": state}
    kept = {key: value for key, value in state.items() if key not in left_out}
    return {"state": kept, "state_left_out": left_out}


def _keep_in_store(
    job: Job,
    ctx: JobContext,
    kept: list[Artifact],
    checkpoint: dict[str, Any],
    *,
    worker: str,
    final: bool,
) -> None:
    """One unit of work: the step's outputs and checkpoint, or the job's completion.
    The unit knows the runner's copy of the job, so the webhook outbox need not read it."""
    result = {"outputs": checkpoint["outputs"], "state": ctx.state, "warnings": ctx.warnings}
    with unit_of_work(known=job) as unit:
        session = unit.session
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
                step_details={},
                result=result,
                error=None,  # an earlier attempt's stays in its attempt's row
            )
        else:
            held = touch_in(session, job.id, worker, checkpoint=checkpoint)
        if not held:
            raise JobCancelled(job.id)
        if final:
            close_attempt(session, job.id, worker, "completed")
            told = {**result, **_state_told(ctx.state)}
            unit.announce("completed", job.id, status="completed", progress=100.0, result=told)
