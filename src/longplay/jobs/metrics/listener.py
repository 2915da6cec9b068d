"""The hooks' metrics subscriber: each announcement a job's change makes, counted.

An announcement carries the announcer's copy of the job when it holds one (the runner
does, for a run's start and end): the kind and times come from it. Otherwise the
subscriber reads them with one primary-key select. It keeps the kind of the jobs this
process runs, so that progress (told many times a second) costs no query.

Step times are measured where the steps run: the process that tells a job's progress
sees each step start, and a step ends when the next starts or the job completes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from redis.client import Pipeline
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from longplay.jobs.hooks import Announcement
from longplay.jobs.metrics import catalogue as m
from longplay.jobs.metrics.kept import Add, Counter, add_to
from longplay.store.db import session_scope
from longplay.store.models import Job, utcnow

log = logging.getLogger(__name__)

LOST = "worker_lost"
"""The code of a run whose worker died (:mod:`longplay.jobs.reaper`)."""

REMEMBERED = 4096
"""Jobs whose kind and current step a process remembers (the oldest are forgotten)."""


@dataclass(frozen=True)
class Facts:
    """What the metrics need of a job, read after its change committed."""

    kind: str
    created_at: datetime
    run_at: datetime | None
    retry_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


def facts(job_id: str) -> Facts | None:
    """The job's facts read from the store; None when it is gone."""
    with session_scope() as session:
        row = session.execute(
            select(
                Job.kind,
                Job.created_at,
                Job.run_at,
                Job.retry_at,
                Job.started_at,
                Job.finished_at,
                Job.heartbeat_at,
            ).where(Job.id == job_id)
        ).one_or_none()
    return None if row is None else Facts(*row)


class Listener:
    """Turns announcements into adds to the kept metrics (see :mod:`.kept`)."""

    def __init__(
        self,
        *,
        read: Callable[[str], Facts | None] = facts,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._clock = clock
        self._kinds: OrderedDict[str, str] = OrderedDict()
        self._steps: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()  # an API process tells from several threads
        self._handlers: dict[str, Callable[[Announcement], list[Add]]] = {
            "queued": self._submitted,
            "waiting": self._submitted,
            "running": self._running,
            "completed": self._completed,
            "failed": self._failed,
            "retrying": self._retrying,
            "cancelled": self._ended(m.CANCELLED),
            "expired": self._ended(m.EXPIRED),
            "requeued": self._requeued,
            "stopped": self._stopped,
            "webhook": self._webhook,
        }

    def send(self, pipe: Pipeline, announcement: Announcement) -> None:
        """The hooks' ``sent`` subscriber: the adds go in the hooks' pipeline."""
        if announcement.event == "progress":
            step = announcement.data.get("step")
            if isinstance(step, str):
                add_to(pipe, self._step(announcement.job_id, step))
            return
        handler = self._handlers.get(announcement.event)
        if handler is None:
            return
        try:
            adds = handler(announcement)
        except SQLAlchemyError as exc:  # the change is stored; only its count is lost
            log.warning(
                "metrics: %s of job %s not counted: %s",
                announcement.event,
                announcement.job_id,
                exc,
            )
            return
        add_to(pipe, adds)

    # -- status changes -------------------------------------------------------------
    def _facts(self, announcement: Announcement) -> Facts | None:
        """The job's kind and times: from the announcer's copy, else read."""
        job = announcement.job
        if job is None:
            return self._read(announcement.job_id)
        return Facts(
            job.kind,
            job.created_at,
            job.run_at,
            job.retry_at,
            job.started_at,
            job.finished_at,
            job.heartbeat_at,
        )

    def _submitted(self, announcement: Announcement) -> list[Add]:
        data = announcement.data
        if not data.get("submitted"):  # a retry or a settled dependency queues it too
            return []
        return m.SUBMITTED.inc(str(data.get("kind") or self._kind(announcement.job_id)))

    def _running(self, announcement: Announcement) -> list[Add]:
        job_id = announcement.job_id
        job = self._facts(announcement)
        if job is None:
            return []
        self._remember(self._kinds, job_id, job.kind)
        self._steps.pop(job_id, None)
        adds = m.STARTED.inc(job.kind)
        since = _became_due(job, attempt=int(announcement.data.get("attempt") or 1))
        if since is not None and job.started_at is not None:
            wait = (_utc(job.started_at) - _utc(since)).total_seconds()
            adds += m.QUEUE_WAIT.observe(max(0.0, wait), job.kind)
        return adds

    def _completed(self, announcement: Announcement) -> list[Add]:
        job_id = announcement.job_id
        job = self._facts(announcement)
        if job is None:
            return []
        adds = m.COMPLETED.inc(job.kind) + self._run_time(job, "completed")
        current = self._steps.pop(job_id, None)
        if current is not None:
            step, began = current
            adds += m.STEP_TIME.observe(self._clock() - began, job.kind, step)
        self._kinds.pop(job_id, None)
        return adds

    def _failed(self, announcement: Announcement) -> list[Add]:
        job = self._facts(announcement)
        if job is None:
            return []
        self._forget(announcement.job_id)
        code = _code(announcement.data)
        return m.FAILED.inc(job.kind, code) + self._run_time(job, "failed", code)

    def _retrying(self, announcement: Announcement) -> list[Add]:
        job = self._facts(announcement)
        if job is None:
            return []
        self._forget(announcement.job_id)
        # The row no longer says when this run ended (it is queued again): now did.
        ended = replace(job, finished_at=None)
        code = _code(announcement.data)
        return m.RETRIED.inc(job.kind, code) + self._run_time(ended, "retrying", code)

    def _ended(self, counter: Counter) -> Callable[[Announcement], list[Add]]:
        def count(announcement: Announcement) -> list[Add]:
            job_id = announcement.job_id
            self._forget(job_id)
            kind = announcement.job.kind if announcement.job is not None else self._kind(job_id)
            return counter.inc(kind) if kind is not None else []

        return count

    def _requeued(self, announcement: Announcement) -> list[Add]:
        return self._ended(m.REQUEUED)(announcement) + self._run_ends(announcement, "requeued")

    def _stopped(self, announcement: Announcement) -> list[Add]:
        """A run of a cancelled job stopped (the job was cancelled when asked)."""
        return self._run_ends(announcement, "cancelled")

    def _run_ends(self, announcement: Announcement, outcome: str) -> list[Add]:
        """The run ends now, not when the job did: a cancelled job's run stops at its
        next checkpoint, and a requeued job has not ended."""
        self._forget(announcement.job_id)
        job = self._facts(announcement)
        return [] if job is None else self._run_time(replace(job, finished_at=None), outcome)

    def _webhook(self, announcement: Announcement) -> list[Add]:
        return m.WEBHOOKS.inc(str(announcement.data.get("outcome", "unknown")))

    # -- steps ----------------------------------------------------------------------
    def _step(self, job_id: str, step: str) -> list[Add]:
        """A progress report: when its step is not the one this process saw last, the
        last one ended now."""
        current = self._steps.get(job_id)
        if current is not None and current[0] == step:
            return []
        now = self._clock()
        self._remember(self._steps, job_id, (step, now))
        if current is None:
            return []
        kind = self._kind(job_id)
        return m.STEP_TIME.observe(now - current[1], kind, current[0]) if kind else []

    # -- memory ---------------------------------------------------------------------
    def _kind(self, job_id: str) -> str | None:
        kind = self._kinds.get(job_id)
        if kind is None:
            job = self._read(job_id)
            if job is None:
                return None
            kind = job.kind
            self._remember(self._kinds, job_id, kind)
        return kind

    def _forget(self, job_id: str) -> None:
        self._steps.pop(job_id, None)

    def _run_time(self, job: Facts, outcome: str, code: str = "") -> list[Add]:
        if job.started_at is None:
            return []
        end = _utc(job.finished_at or utcnow())
        if code == LOST and job.heartbeat_at is not None:
            # Its worker died: the run ended at its last heartbeat, not when the reaper
            # noticed (a lease later, for a worker of another machine).
            end = min(end, _utc(job.heartbeat_at))
        seconds = max(0.0, (end - _utc(job.started_at)).total_seconds())
        return m.RUN_TIME.observe(seconds, job.kind, outcome)

    def _remember(self, memory: OrderedDict[str, Any], job_id: str, value: Any) -> None:
        with self._lock:
            memory[job_id] = value
            memory.move_to_end(job_id)
            while len(memory) > REMEMBERED:
                memory.popitem(last=False)


def _code(data: Mapping[str, Any]) -> str:
    error = data.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return str(code or "unknown")


def _became_due(job: Facts, *, attempt: int) -> datetime | None:
    """When the job could first have started this run: a first run once submitted (or
    at its ``run_at``), a later one at its ``retry_at`` (the retry's time, or when it was
    retried by hand or went back to the queue); None for a run taken over from a dead
    worker, which was never queued."""
    if attempt <= 1:
        return max(_utc(t) for t in (job.created_at, job.run_at) if t is not None)
    return job.retry_at


def _utc(moment: datetime) -> datetime:
    """An aware UTC time (SQLite gives times back naive)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


LISTENER = Listener()
send = LISTENER.send
