"""Handing held jobs to the broker, one process at a time, and booking later rounds.

A round hands over, per resource, as many jobs as the live workers have free slots,
plus ``dispatch_ahead`` to wait in the broker for the next slot that frees: all of
them in one transaction and one ``UPDATE ... RETURNING``. Whatever frees room or
queues a job only asks for a round (:func:`notify`, one Redis command); the admission
loop in each worker's main process (:func:`serve`) runs it. So neither a submit nor
a job's end pays for a round, and asks that come while a round runs are answered
together by the next one.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import redis
from redis.client import Pipeline
from redis.commands.core import Script
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from longplay import keys
from longplay.broker import liveness
from longplay.broker import send as broker
from longplay.framework import get_kind
from longplay.jobs.admission.choice import QUEUED, RUNNING, choose, in_flight
from longplay.jobs.hooks import Announcement
from longplay.jobs.outages import said
from longplay.redis_client import get_redis
from longplay.settings import Settings, get_settings
from longplay.store.db import session_scope
from longplay.store.models import Job, utcnow

log = logging.getLogger(__name__)

LOCK_SECONDS = 10.0
"""A round takes milliseconds; the lock of a process that died frees itself after this."""
WAKE_AT_MOST = 600.0
"""A delayed admission round is booked at most this far ahead; it books the next one."""
ASKING = frozenset(
    {"queued", "completed", "failed", "cancelled", "expired", "retrying", "requeued", "stopped"}
)
"""Announcements that ask for a round: a job to hand over, or a worker slot or a place
in the broker freed."""
CAPACITY_TTL = liveness.ALIVE_INTERVAL
"""Seconds a process trusts the workers' capacity it last read."""


@dataclass(frozen=True)
class Handed:
    """A job marked as handed over, with what its message needs."""

    id: str
    kind: str
    resource: str
    priority: str


def dispatch(job: Handed, producer: broker.Sender | None = None) -> None:
    """Send a job marked as handed over to a worker, with its kind's time limits."""
    kind = get_kind(job.kind)
    broker.run_job(
        job.id,
        resource=job.resource,
        priority=job.priority,
        soft_time_limit=kind.soft_time_limit if kind else None,
        time_limit=kind.time_limit if kind else None,
        producer=producer,
    )


_capacity: tuple[float, dict[str, int]] | None = None


def worker_capacity() -> dict[str, int]:
    """Jobs the live workers run at once, per resource, read at most every
    :data:`CAPACITY_TTL` seconds."""
    global _capacity
    now = time.monotonic()
    if _capacity is None or now - _capacity[0] > CAPACITY_TTL:
        _capacity = (now, liveness.capacity(get_redis()))
    return _capacity[1]


# Built once, like the one below: building a statement costs more than running it.
_IN_FLIGHT = (
    select(Job.owner_id, Job.resource, Job.status, func.count())
    .where(in_flight())
    .group_by(Job.owner_id, Job.resource, Job.status)
)
_MARK = (
    update(Job)
    .where(
        Job.id.in_(bindparam("picked", expanding=True)),
        Job.status == QUEUED,
        Job.dispatched_at.is_(None),
    )
    .values(dispatched_at=bindparam("now"))
    .returning(Job.id, Job.kind, Job.resource, Job.priority)
)


def room(session: Session, settings: Settings, capacity: dict[str, int]) -> dict[str, int]:
    """Per resource: how many jobs may be handed over now. Free slots (``capacity``
    less the jobs running) plus ``dispatch_ahead``, less the jobs already waiting in
    the broker; while every slot is busy, ``dispatch_ahead`` wait, no more, so a
    newcomer's job is at most that many behind another owner's backlog."""
    return room_and_flying(session, settings, capacity)[0]


def room_and_flying(
    session: Session, settings: Settings, capacity: dict[str, int]
) -> tuple[dict[str, int], dict[str, int]]:
    """:func:`room`, and the jobs in flight per owner that :func:`choose` orders by,
    from one read of the jobs in flight (few: the workers' slots and what waits in the
    broker)."""
    running: dict[str, int] = defaultdict(int)
    waiting: dict[str, int] = defaultdict(int)
    flying: dict[str, int] = defaultdict(int)
    for owner_id, resource, status, count in session.connection().execute(_IN_FLIGHT):
        (running if status == RUNNING else waiting)[resource] += int(count)
        flying[owner_id] += int(count)
    found = {}
    for resource, slots in capacity.items():
        free = max(0, slots - running[resource])
        n = free + settings.admission.dispatch_ahead - waiting[resource]
        if n > 0:
            found[resource] = n
    return found, dict(flying)


def _admit_round(settings: Settings) -> int:
    """Hand over what :func:`choose` picks: marked in the store first (a worker only
    claims a job marked so), then sent; one that could not be sent is held again."""
    capacity = worker_capacity()
    now = utcnow()
    with session_scope() as session:
        free, flying = room_and_flying(session, settings, capacity)
        picked = choose(session, settings, free, flying) if free else []
        if not picked:
            return 0
        marked = session.connection().execute(_MARK, {"picked": picked, "now": now}).all()
    order = {job_id: n for n, job_id in enumerate(picked)}
    handed = sorted((Handed(*row) for row in marked), key=lambda job: order[job.id])
    sent = 0
    try:
        with broker.job_sender() as producer:
            for job in handed:
                dispatch(job, producer)
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


_scripts: tuple[redis.Redis, Script, Script] | None = None


def _lock_scripts(client: redis.Redis) -> tuple[Script, Script]:
    """The lock's two scripts for ``client``, registered once (each registration
    hashes its source), not once a round."""
    global _scripts
    if _scripts is None or _scripts[0] is not client:
        _scripts = (
            client,
            client.register_script(_ACQUIRE),
            client.register_script(_AGAIN_OR_RELEASE),
        )
    return _scripts[1], _scripts[2]


def pump() -> int:
    """Hand held, due jobs to the broker; how many this call handed over.

    When another process is pumping this returns at once: it raises a flag and that
    process goes round once more. Raises when Redis or the store is unreachable.
    """
    settings = get_settings()
    acquire, again_or_release = _lock_scripts(get_redis())
    lock_keys = [keys.ADMISSION_LOCK, keys.ADMISSION_DIRTY]
    token = secrets.token_hex(8)
    ttl_ms = int(LOCK_SECONDS * 1000)
    if not acquire(keys=lock_keys, args=[token, ttl_ms]):
        return 0
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
        log.warning("could not hand queued jobs to the broker: %s", said(exc))
        return 0


def notify() -> None:
    """Ask for an admission round: a job was queued or room was freed. One Redis round
    trip; raises when Redis does not answer. Asks that come before the round starts
    make one round."""
    pipe = get_redis().pipeline(transaction=False)
    ask(pipe)
    pipe.execute()


def ask(pipe: Pipeline) -> None:
    """Add the ask for a round to ``pipe`` (the list keeps one ask, however many come)."""
    pipe.lpush(keys.ADMISSION_ASKED, 1)
    pipe.ltrim(keys.ADMISSION_ASKED, 0, 0)


def notify_quietly() -> None:
    """:func:`notify` where a failure must not end anything else: beat's next round
    hands the jobs over."""
    try:
        notify()
    except redis.RedisError as exc:
        log.warning("could not ask for an admission round: %s", exc)


def send(pipe: Pipeline, announcement: Announcement) -> None:
    """The hooks' ``sent`` subscriber: once a job is queued, or something freed room (a
    job ended, was cancelled or requeued), ask for a round."""
    if announcement.event in ASKING:
        ask(pipe)


def serve(stopping: threading.Event, *, idle: float = 2.0) -> None:
    """Run an admission round each time one is asked for, until ``stopping`` is set:
    the admission loop of a worker's main process. Several loops (one per worker)
    share the asks; the lock lets one round run at a time.

    After ``idle`` seconds without an ask it looks at the lock's flag: a process that
    died holding the lock leaves the rounds asked for meanwhile to whoever comes next.
    An ask taken while stopping is put back for another loop (or the next start)."""
    while not stopping.is_set():
        try:
            client = get_redis()
            asked = client.blpop([keys.ADMISSION_ASKED], timeout=idle)
            if asked is None and not client.exists(keys.ADMISSION_DIRTY):
                continue
        except redis.RedisError as exc:
            log.warning("admission loop: Redis did not answer: %s", exc)
            stopping.wait(1.0)
            continue
        if stopping.is_set():
            if asked is not None:
                notify_quietly()
            return
        pump_quietly()


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
