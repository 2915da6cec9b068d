"""The task that runs a job, and the upkeep tasks beat sends (and runs itself).

Like a web view, the task takes an id and hands it to the jobs layer; it never
retries a job through Celery, because the runner owns the retry rules. Only a message
whose job could not be taken at all (the store away) comes back through Celery.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from dataclasses import asdict
from typing import Any

import redis
from celery import Task
from celery.exceptions import TimeLimitExceeded
from celery.signals import (
    task_failure,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from longplay import keys
from longplay.broker.app import ADMIT, CLEANUP, REAP, RUN_JOB, celery_app
from longplay.broker.liveness import process_is_gone
from longplay.broker.send import HELP_JOB
from longplay.engines import loaded_engines, on_engine_loaded
from longplay.jobs import fanout, reaper
from longplay.jobs.admission import rounds
from longplay.jobs.cleanup import run_cleanup
from longplay.jobs.endings import fail_killed
from longplay.jobs.outages import STORE_DOWN, said, why_to_wait
from longplay.jobs.runner import run_job
from longplay.jobs.webhooks import delivery, relay
from longplay.kinds import load as load_kinds
from longplay.redis_client import get_redis
from longplay.store.db import dispose_engine
from longplay.store.models import utcnow
from longplay.worker import admission
from longplay.worker.memory import give_memory_back
from longplay.worker.stops import quiet_ended_processes
from longplay.worker.upkeep import round_of_upkeep

log = logging.getLogger(__name__)

RETAKE_MAX_S = 30.0
"""Seconds, at most, before a message whose job could not be taken comes back (2, 4,
8 … while the store stays away)."""

# In the worker's main process, before it forks its pool: every pool process starts
# with the kinds (and what they import) loaded, instead of loading them on its first job.
load_kinds()
quiet_ended_processes()
relay.sends_with(delivery.deliver)  # the pool processes make webhook attempts themselves


def worker_prefix(main_pid: int) -> str:
    """What the names of all pool processes of one worker start with."""
    return f"{socket.gethostname()}:{main_pid}:"


def worker_name() -> str:
    """``host:worker pid:pool process pid``: the holder of the jobs this process runs."""
    return f"{worker_prefix(os.getppid())}{os.getpid()}"


REPORT_TTL = 24 * 3600
_last_job: str | None = None
"""The job this pool process last took (a late or repeated delivery is not one)."""


def report(*_: object) -> None:
    """Tell the API what this pool process has loaded and the job it last took
    (``GET /v1/workers``): at its start, when it loads an engine, after each job."""
    name = worker_name()
    engines = [
        {**asdict(e), "fallback": e.fallback.describe() if e.fallback else None}
        for e in loaded_engines()
    ]
    body = {"name": name, "engines": engines, "last_job": _last_job, "at": utcnow()}
    try:
        get_redis().set(keys.worker_process(name), json.dumps(body, default=str), ex=REPORT_TTL)
    except redis.RedisError as exc:
        log.warning("could not report worker state: %s", exc)


@worker_process_init.connect
def _fresh_process(**_: object) -> None:
    """A forked pool process must not reuse its parent's database connections."""
    dispose_engine()
    on_engine_loaded(report)
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
    return host.startswith(f"{socket.gethostname()}:") and process_is_gone(pid)


@celery_app.task(name=RUN_JOB, ignore_result=True, bind=True, max_retries=None)
def run_job_task(self: Task, job_id: str) -> None:
    global _last_job
    try:
        took = run_job(job_id, worker=worker_name(), is_gone=holder_is_gone)
    except STORE_DOWN as exc:
        # Not taken at all: the store did not answer the claim, or its disk is full.
        # The message comes back, as admission would hand the job over again, but not
        # before its lost-message sweep (a minute), and with a traceback meanwhile.
        if (why := why_to_wait(exc)) is None:
            raise
        delay = min(RETAKE_MAX_S, 2.0 ** (self.request.retries + 1))
        log.warning(
            "job %s: not taken, %s (%s); its message comes back in %g s",
            job_id,
            why,
            said(exc),
            delay,
        )
        raise self.retry(countdown=delay) from None
    finally:
        give_memory_back()
    if took:
        _last_job = job_id
        report()


@celery_app.task(name=HELP_JOB, ignore_result=True)
def help_job_task(job_id: str, step: str) -> None:
    """Run items of a running job's step that maps over the pool (``ctx.map``)."""
    try:
        fanout.help_job(job_id, step, worker=worker_name(), is_gone=holder_is_gone)
    finally:
        give_memory_back()


@task_failure.connect(sender=run_job_task)
def _hard_time_limit(exception: BaseException | None = None, args: Any = (), **_: Any) -> None:
    """In the worker's main process: the pool process running a job was killed at the
    kind's hard time limit. Fail the job with the reason; the pool starts a new process."""
    if not isinstance(exception, TimeLimitExceeded) or not args:
        return
    fail_killed(str(args[0]), holder_prefix=worker_prefix(os.getpid()))


def release_jobs_of(main_pid: int) -> int:
    """After the worker with this main process stopped: its jobs go back to the queue."""
    return reaper.release_jobs_of(worker_prefix(main_pid))


def _stopping(**_: object) -> None:
    """In the worker's main process, as a clean stop begins (SIGTERM, Ctrl-C). Celery
    gives a job's message back to the broker before :func:`release_jobs_of` can run,
    and another worker on this host, finding the job's process gone, would take the job
    as one whose process died (an attempt counted, or ``worker_died`` at the last):
    the mark tells it the stop was clean."""
    reaper.mark_stopping(worker_prefix(os.getpid()))


@celery_app.task(name=REAP, ignore_result=True)
@round_of_upkeep
def reap() -> int:
    """Send jobs whose worker stopped renewing their lease, or whose process on this
    machine died, back to the queue."""
    return reaper.reap(is_gone=holder_is_gone)


@celery_app.task(name=ADMIT, ignore_result=True)
@round_of_upkeep
def admit() -> dict[str, int]:
    """An admission round: deadlines, lost messages, hand over the held jobs that are due."""
    return rounds.tick()


def _admit_on_start(**_: object) -> None:
    """A worker came up: jobs may have waited for one, or been lost with the broker.
    Then its admission loop answers the asks for rounds."""
    try:
        rounds.tick()
    except Exception as exc:
        log.warning("admission round at worker start failed: %s", exc)
    admission.LOOP.start()


def _stop_admission(**_: object) -> None:
    admission.LOOP.stop()


def take_jobs() -> None:
    """Make this Celery worker one that runs jobs (the ``worker`` command): at its start
    an admission round and its admission loop; as it stops, its mark that the stop is
    clean, and the loop's end. Beat's process, which runs upkeep on threads of its own
    (:mod:`longplay.worker.beat`), does none of it."""
    worker_ready.connect(_admit_on_start, weak=False)
    worker_shutting_down.connect(_stopping, weak=False)
    worker_shutdown.connect(_stop_admission, weak=False)


@celery_app.task(name=CLEANUP, ignore_result=True)
@round_of_upkeep
def cleanup() -> dict[str, Any]:
    """Delete old jobs, expired results, unused uploads and scratch space (beat, hourly)."""
    return run_cleanup().as_dict()
