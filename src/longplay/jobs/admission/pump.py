"""Handing held jobs to the broker, one process at a time, and booking later rounds."""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from datetime import datetime

import redis
from sqlalchemy import select, update

from longplay import keys
from longplay.broker import send as broker
from longplay.framework import get_kind
from longplay.jobs.admission.choice import QUEUED, choose, room_per_resource
from longplay.redis_client import get_redis
from longplay.settings import Settings, get_settings
from longplay.store.db import affected, session_scope
from longplay.store.models import Job, utcnow

log = logging.getLogger(__name__)

LOCK_SECONDS = 10.0
"""A round takes milliseconds; the lock of a process that died frees itself after this."""
WAKE_AT_MOST = 600.0
"""A delayed admission round is booked at most this far ahead; it books the next one."""


def dispatch(job: Job) -> None:
    """Send a job marked as handed over to a worker, with its kind's time limits."""
    kind = get_kind(job.kind)
    broker.run_job(
        job.id,
        resource=job.resource,
        priority=job.priority,
        soft_time_limit=kind.soft_time_limit if kind else None,
        time_limit=kind.time_limit if kind else None,
    )


def _admit_round(settings: Settings) -> int:
    """Hand over what :func:`choose` picks: marked in the store first (a worker only
    claims a job marked so), then sent; one that could not be sent is held again."""
    now = utcnow()
    with session_scope() as session:
        room = room_per_resource(session, settings)
        picked = choose(session, settings, room) if room else []
        if not picked:
            return 0
        jobs = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(picked)))}
        handed = []
        for job_id in picked:
            marked = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == QUEUED, Job.dispatched_at.is_(None))
                .values(dispatched_at=now)
                .execution_options(synchronize_session=False)
            )
            if affected(marked) and job_id in jobs:
                handed.append(jobs[job_id])
    sent = 0
    try:
        for job in handed:
            dispatch(job)
            sent += 1
    finally:
        if sent < len(handed):
            with session_scope() as session:
                session.execute(
                    update(Job)
                    .where(
                        Job.id.in_([j.id for j in handed[sent:]]),
                        Job.status == QUEUED,
                        Job.dispatched_at == now,
                    )
                    .values(dispatched_at=None)
                    .execution_options(synchronize_session=False)
                )
    return sent


def has_room(settings: Settings | None = None) -> bool:
    """Whether a held job is due on a resource that may take one now (a hint, read
    without the lock: whatever makes room or queues a job later pumps after it)."""
    settings = settings or get_settings()
    with session_scope() as session:
        return bool(room_per_resource(session, settings))


# The lock and the "dirty" flag move together, so that no wake-up is lost between a
# holder's last round and its release: a process that cannot take the lock raises the
# flag in the same step, and the holder looks at the flag and lets go in one step.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('DEL', KEYS[2])
  return 1
end
redis.call('SET', KEYS[2], '1')
return 0
"""
_AGAIN_OR_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if ARGV[3] == '1' and redis.call('DEL', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
redis.call('DEL', KEYS[1])
return 0
"""


def pump() -> int:
    """Hand held, due jobs to the broker; how many this call handed over.

    When another process is pumping this returns at once: it raises a flag and that
    process goes round once more. Raises when Redis or the store is unreachable.
    """
    settings = get_settings()
    if not has_room(settings):
        return 0
    client = get_redis()
    lock_keys = [keys.ADMISSION_LOCK, keys.ADMISSION_DIRTY]
    token = secrets.token_hex(8)
    ttl_ms = int(LOCK_SECONDS * 1000)
    if not client.register_script(_ACQUIRE)(keys=lock_keys, args=[token, ttl_ms]):
        return 0
    again_or_release = client.register_script(_AGAIN_OR_RELEASE)
    handed = 0
    while True:
        try:
            handed += _admit_round(settings)
        except BaseException:
            with contextlib.suppress(redis.RedisError):
                again_or_release(keys=lock_keys, args=[token, ttl_ms, 0])
            raise
        if again_or_release(keys=lock_keys, args=[token, ttl_ms, 1]) != 1:
            return handed


def pump_quietly() -> int:
    """:func:`pump` where a failure must not end anything else (a job, a worker): the
    next round (beat's at the latest) hands the jobs over."""
    try:
        return pump()
    except Exception as exc:
        log.warning("could not hand queued jobs to the broker: %s", exc)
        return 0


def wake_at(moment: datetime) -> None:
    """Book an admission round for ``moment`` (a delayed upkeep task), unless one is
    booked at or before it; that round books the next. Beat's rounds back this up."""
    now = time.time()
    at = min(moment.timestamp(), now + WAKE_AT_MOST)
    client = get_redis()
    booked = client.get(keys.ADMISSION_WAKE)
    if booked is not None and now < float(booked) <= at + 0.01:
        return
    client.set(keys.ADMISSION_WAKE, repr(at), px=max(1, int((at - now + 60) * 1000)))
    broker.admission_round(countdown=max(0.0, at - now))


def wake_quietly(moment: datetime | None) -> None:
    if moment is None or moment <= utcnow():
        return
    try:
        wake_at(moment)
    except Exception as exc:
        log.warning("could not book the admission round at %s: %s", moment, exc)
