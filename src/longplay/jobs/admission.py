"""Admission: which queued jobs go to the broker, and when.

longplay keeps the broker shallow. A queued job whose ``dispatched_at`` is null is
held in the store: scheduled for later (``run_at``), waiting for its retry
(``retry_at``), or behind other owners' fair share. :func:`pump` hands held jobs
that are due to Celery, at most ``dispatch_ahead`` per resource beyond the ones
running, choosing by priority, then the owner with the fewest jobs in flight
(running or handed over), then age; never past an owner's ``max_running``.

What frees a worker slot or queues a job calls :func:`pump`: a submit, a claim, the
end of a job, a worker starting. :func:`tick` (beat, every ``dispatch_interval``, and
a delayed round booked for the next ``run_at``, ``retry_at`` or deadline) also ends
queued jobs whose deadline passed, cancels running ones past theirs and hands over
again jobs whose message was lost with the broker. One process pumps at a time (a
Redis lock); one that finds the lock taken leaves a flag, and the holder goes round
once more, so no wake-up is lost.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import redis
from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from longplay import keys
from longplay.config import Settings, get_settings
from longplay.jobs import events, lifecycle, webhooks
from longplay.redis_client import get_redis
from longplay.store.db import affected, session_scope
from longplay.store.models import Job, JobStatus, Owner, Priority, utcnow

log = logging.getLogger(__name__)

RESOURCES = ("cpu", "gpu")
LOCK_SECONDS = 10.0
"""A round takes milliseconds; the lock of a process that died frees itself after this."""
FULL_QUEUE_RETRY_AFTER = 10
"""Seconds an owner at its queued cap is told to wait before submitting again."""
WAKE_AT_MOST = 600.0
"""A delayed admission round is booked at most this far ahead; it books the next one."""
BROKER_PRIORITY_STEPS = (3, 6, 9)
"""kombu's Redis transport keeps message priorities in extra lists (``name\\x06\\x16N``)."""

QUEUED = JobStatus.QUEUED.value
RUNNING = JobStatus.RUNNING.value
T = TypeVar("T")


# -- limits ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What applies to one owner: its own values, else its tier's, else the settings'."""

    tier: str
    priority: Priority
    max_running: int | None
    max_queued: int | None
    submit_rate: float | None


def _first(*values: T | None) -> T | None:
    return next((v for v in values if v is not None), None)


def limits_of(owner: Owner, settings: Settings | None = None) -> Limits:
    settings = settings or get_settings()
    tier = settings.tiers.get(owner.tier) or settings.tiers["standard"]
    return Limits(
        tier=owner.tier,
        priority=Priority(tier.priority),
        max_running=_first(owner.max_running, tier.max_running, settings.owner_max_running),
        max_queued=_first(owner.max_queued, tier.max_queued, settings.owner_max_queued),
        submit_rate=_first(owner.submit_rate, tier.submit_rate, settings.owner_submit_rate),
    )


@dataclass(frozen=True)
class Refusal:
    """Why a submission is not taken now, and in how many seconds to try again."""

    message: str
    retry_after: int


# GCRA: the limiter keeps a "theoretical arrival time"; a submit is allowed while that
# time is at most a burst's worth of intervals ahead of now. Redis' clock, so every API
# process agrees.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return math.ceil(wait) end
local next_tat = tat + interval
redis.call('SET', KEYS[1], tostring(next_tat), 'PX', math.ceil(next_tat - now) + 1000)
return 0
"""


def take_submit(owner_id: str, per_minute: float) -> float:
    """Count one submission against ``per_minute`` (a burst of a minute's worth); the
    seconds to wait when it is over the limit, else 0."""
    burst = max(1, math.floor(per_minute))
    script = get_redis().register_script(_GCRA)
    wait_ms = script(keys=[keys.submit_rate(owner_id)], args=[60_000.0 / per_minute, burst])
    return int(wait_ms) / 1000


def refuse_submission(
    session: Session, owner: Owner, *, new_job_id: str | None = None
) -> Refusal | None:
    """Check the owner's queued cap and submit rate before a job (``new_job_id``, not
    yet committed) is stored; a submission that passes is counted against the rate."""
    limits = limits_of(owner)
    if limits.max_queued is not None:
        queued = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.owner_id == owner.id, Job.status == QUEUED, Job.id != new_job_id)
        )
        if (queued or 0) >= limits.max_queued:
            return Refusal(
                f"you have {queued} jobs queued, the most allowed "
                f"(tier {limits.tier!r}: {limits.max_queued}); submit more once some start",
                FULL_QUEUE_RETRY_AFTER,
            )
    if limits.submit_rate is not None:
        try:
            wait = take_submit(owner.id, limits.submit_rate)
        except redis.RedisError as exc:  # the limiter is away: let the submission in
            log.warning("submit rate limiter unavailable: %s", exc)
            wait = 0.0
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return Refusal(
                f"too many submissions: at most {limits.submit_rate:g} a minute "
                f"(tier {limits.tier!r}); try again in {seconds} s",
                seconds,
            )
    return None


# -- which jobs -----------------------------------------------------------------------------


def _due(now: datetime) -> ColumnElement[bool]:
    """Held, and nothing keeps it back: its time came, its retry is due, its deadline not."""
    return and_(
        Job.status == QUEUED,
        Job.dispatched_at.is_(None),
        or_(Job.run_at.is_(None), Job.run_at <= now),
        or_(Job.retry_at.is_(None), Job.retry_at <= now),
        or_(Job.deadline.is_(None), Job.deadline > now),
    )


def _in_flight() -> ColumnElement[bool]:
    """Running, or handed to the broker and about to."""
    return or_(Job.status == RUNNING, and_(Job.status == QUEUED, Job.dispatched_at.is_not(None)))


def _room(session: Session, settings: Settings) -> dict[str, int]:
    """Per resource with held jobs that are due: how many may be handed over now."""
    waiting = dict(
        session.execute(
            select(Job.resource, func.count())
            .where(Job.status == QUEUED, Job.dispatched_at.is_not(None))
            .group_by(Job.resource)
        ).all()
    )
    room = {r: settings.dispatch_ahead - int(waiting.get(r, 0)) for r in RESOURCES}
    now = utcnow()
    return {
        r: n
        for r, n in room.items()
        if n > 0 and session.scalar(select(Job.id).where(_due(now), Job.resource == r).limit(1))
    }


def _in_flight_of(session: Session, owner_ids: Sequence[str]) -> dict[str, int]:
    counts = session.execute(
        select(Job.owner_id, func.count())
        .where(Job.owner_id.in_(owner_ids), _in_flight())
        .group_by(Job.owner_id)
    ).all()
    return defaultdict(int, {owner_id: int(n) for owner_id, n in counts})


def choose(session: Session, settings: Settings, room: dict[str, int]) -> list[str]:
    """The held, due jobs to hand over now, in order: priority, then the owner with the
    fewest jobs in flight, then age; within each owner's ``max_running``.

    Each owner contributes at most ``room`` rows per resource and priority (a window
    query), so one owner's thousand held jobs are never loaded.
    """
    now = utcnow()
    nth = (
        func.row_number()
        .over(
            partition_by=(Job.owner_id, Job.resource, Job.priority_rank),
            order_by=(Job.created_at, Job.id),
        )
        .label("nth")
    )
    ranked = (
        select(Job.id, Job.owner_id, Job.resource, Job.priority_rank, Job.created_at, nth)
        .where(_due(now), Job.resource.in_(list(room)))
        .subquery()
    )
    rows = session.execute(
        select(ranked).where(ranked.c.nth <= max(room.values(), default=0))
    ).all()
    if not rows:
        return []
    owner_ids = sorted({row.owner_id for row in rows})
    caps = {
        o.id: limits_of(o, settings).max_running
        for o in session.scalars(select(Owner).where(Owner.id.in_(owner_ids)))
    }
    flying = _in_flight_of(session, owner_ids)
    lines: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r.priority_rank, r.created_at, r.id)):
        lines[(row.owner_id, row.resource)].append(row)
    room = dict(room)
    picked: list[str] = []
    while True:
        best: tuple[Any, ...] | None = None
        for (owner_id, resource), line in lines.items():
            cap = caps.get(owner_id)
            if not line or room.get(resource, 0) <= 0:
                continue
            if cap is not None and flying[owner_id] >= cap:
                continue
            head = line[0]
            key = (head.priority_rank, flying[owner_id], head.created_at, head.id)
            if best is None or key < best[0]:
                best = (key, owner_id, resource)
        if best is None:
            return picked
        _, owner_id, resource = best
        picked.append(lines[(owner_id, resource)].pop(0).id)
        flying[owner_id] += 1
        room[resource] -= 1


# -- handing over ---------------------------------------------------------------------------


def _admit_round(settings: Settings) -> int:
    """Hand over what :func:`choose` picks: marked in the store first (a worker only
    claims a job marked so), then sent; one that could not be sent is held again."""
    from longplay.jobs.service import dispatch

    now = utcnow()
    with session_scope() as session:
        room = _room(session, settings)
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
        return bool(_room(session, settings))


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


# -- the round beat runs ---------------------------------------------------------------------


def _error(message: str) -> dict[str, Any]:
    return {"code": "deadline_passed", "message": message, "retryable": False}


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def expire(job_id: str) -> bool:
    """End a queued job whose deadline passed as ``expired``; True when this call did."""
    with session_scope() as session:
        deadline = session.scalar(select(Job.deadline).where(Job.id == job_id))
        if deadline is None:
            return False
        error = _error(f"its deadline ({_when(deadline)}) passed before it started")
        done = lifecycle.transition(
            session,
            job_id,
            JobStatus.EXPIRED,
            from_=[JobStatus.QUEUED],
            when=Job.deadline <= utcnow(),
            error=error,
            eta_seconds=None,
        )
        if done:
            webhooks.enqueue(session, job_id, "expired")
    if done:
        log.info("job %s expired: %s", job_id, error["message"])
        events.publish("expired", job_id, status="expired", error=error, expire=True)
    return done


def stop_overdue(job_id: str) -> bool:
    """Cancel a running job whose deadline passed; it stops at its next checkpoint."""
    with session_scope() as session:
        deadline = session.scalar(select(Job.deadline).where(Job.id == job_id))
        if deadline is None:
            return False
        error = _error(f"cancelled: its deadline ({_when(deadline)}) passed while it ran")
        done = lifecycle.transition(
            session,
            job_id,
            JobStatus.CANCELLED,
            from_=[JobStatus.RUNNING],
            when=Job.deadline <= utcnow(),
            error=error,
            eta_seconds=None,
        )
        if done:
            webhooks.enqueue(session, job_id, "cancelled")
        progress = session.scalar(select(Job.progress).where(Job.id == job_id))
    if done:
        log.info("job %s: %s", job_id, error["message"])
        events.publish(
            "cancelled", job_id, status="cancelled", progress=progress, error=error, expire=True
        )
    return done


def sweep_deadlines() -> int:
    """Expire queued jobs and cancel running ones whose deadline passed."""
    now = utcnow()
    with session_scope() as session:
        overdue = session.execute(
            select(Job.id, Job.status).where(Job.status.in_([QUEUED, RUNNING]), Job.deadline <= now)
        ).all()
    return sum(
        expire(job_id) if status == QUEUED else stop_overdue(job_id) for job_id, status in overdue
    )


def broker_depth(queue: str) -> int:
    """Messages waiting in a Celery queue on the Redis broker."""
    pipe = get_redis().pipeline(transaction=False)
    pipe.llen(queue)
    for step in BROKER_PRIORITY_STEPS:
        pipe.llen(f"{queue}\x06\x16{step}")
    return sum(int(n) for n in pipe.execute())


def recover_lost(settings: Settings | None = None) -> int:
    """Hold again jobs handed over ``redispatch_after`` ago and still queued while their
    broker queue is empty: their message was lost (a Redis restarted without its data).
    A second delivery is harmless, since only one claim can win."""
    settings = settings or get_settings()
    cutoff = utcnow() - timedelta(seconds=settings.redispatch_after)
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
                depth[queue] = broker_depth(queue)
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
                "job %s: its message was lost with the broker; handing it over again", job_id
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


def wake_at(moment: datetime) -> None:
    """Book an admission round for ``moment`` (a delayed upkeep task), unless one is
    booked at or before it; that round books the next. Beat's rounds back this up."""
    from longplay.queue.app import ADMIT, celery_app

    now = time.time()
    at = min(moment.timestamp(), now + WAKE_AT_MOST)
    client = get_redis()
    booked = client.get(keys.ADMISSION_WAKE)
    if booked is not None and now < float(booked) <= at + 0.01:
        return
    client.set(keys.ADMISSION_WAKE, repr(at), px=max(1, int((at - now + 60) * 1000)))
    celery_app.send_task(
        ADMIT, queue=keys.UPKEEP_QUEUE, countdown=max(0.0, at - now), ignore_result=True
    )


def wake_quietly(moment: datetime | None) -> None:
    if moment is None or moment <= utcnow():
        return
    try:
        wake_at(moment)
    except Exception as exc:
        log.warning("could not book the admission round at %s: %s", moment, exc)


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


# -- where a job stands ---------------------------------------------------------------------


def queue_position(session: Session, job: Job) -> int | None:
    """How many queued jobs will start before this one (0: it is next), across owners.

    Jobs already with the broker go first (by priority, then when handed over); the
    held ones follow in the order :func:`choose` takes them: priority, then turn (the
    owner's jobs in flight plus its place among its held jobs), then age.
    """
    if job.status != QUEUED:
        return None
    now = utcnow()
    handed = and_(
        Job.status == QUEUED, Job.dispatched_at.is_not(None), Job.resource == job.resource
    )
    if job.dispatched_at is not None:
        ahead = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(
                handed,
                or_(
                    Job.priority_rank < job.priority_rank,
                    and_(
                        Job.priority_rank == job.priority_rank,
                        or_(
                            Job.dispatched_at < job.dispatched_at,
                            and_(Job.dispatched_at == job.dispatched_at, Job.id < job.id),
                        ),
                    ),
                ),
            )
        )
        return int(ahead or 0)
    # Not this job: it may have been handed over since it was read.
    with_broker = (
        session.scalar(select(func.count()).select_from(Job).where(handed, Job.id != job.id)) or 0
    )
    flying = (
        select(Job.owner_id.label("owner_id"), func.count().label("n"))
        .where(_in_flight())
        .group_by(Job.owner_id)
        .subquery()
    )
    nth = func.row_number().over(
        partition_by=(Job.owner_id, Job.priority_rank), order_by=(Job.created_at, Job.id)
    )
    ranked = (
        select(
            Job.id,
            Job.priority_rank,
            Job.created_at,
            (nth + func.coalesce(flying.c.n, 0)).label("turn"),
        )
        .join(flying, flying.c.owner_id == Job.owner_id, isouter=True)
        .where(_due(now), Job.resource == job.resource)
        .subquery()
    )
    own_flying = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.owner_id == job.owner_id, Job.id != job.id, _in_flight())
    )
    own_before = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(
            _due(now),
            Job.owner_id == job.owner_id,
            Job.resource == job.resource,
            Job.priority_rank == job.priority_rank,
            or_(
                Job.created_at < job.created_at,
                and_(Job.created_at == job.created_at, Job.id < job.id),
            ),
        )
    )
    turn = (own_flying or 0) + (own_before or 0) + 1
    held_ahead = session.scalar(
        select(func.count())
        .select_from(ranked)
        .where(
            or_(
                ranked.c.priority_rank < job.priority_rank,
                and_(
                    ranked.c.priority_rank == job.priority_rank,
                    or_(
                        ranked.c.turn < turn,
                        and_(
                            ranked.c.turn == turn,
                            or_(
                                ranked.c.created_at < job.created_at,
                                and_(
                                    ranked.c.created_at == job.created_at,
                                    ranked.c.id < job.id,
                                ),
                            ),
                        ),
                    ),
                ),
            )
        )
    )
    return int(with_broker) + int(held_ahead or 0)
