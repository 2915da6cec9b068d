"""What is waiting where, for the admins' queues page: messages in each broker queue,
the queued jobs admission still holds in the store (per resource and per owner), and
the jobs it will hand over next, in its own order.

"Next" is :func:`~longplay.jobs.admission.choice.choose` asked for a few jobs per
resource as if that many slots were free: the same order and owners' ``max_running``
a round applies, without handing anything over.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from longplay import keys
from longplay.jobs.admission.choice import QUEUED, RESOURCES, choose
from longplay.settings import get_settings
from longplay.store.models import Job, Owner

PRIORITY_LISTS = ("", "\x06\x163", "\x06\x166", "\x06\x169")
"""kombu's Redis transport keeps a queue's messages of priority 0 in a list named as the
queue, and those of higher priority steps in lists with these suffixes."""


@dataclass(frozen=True)
class OwnerHeld:
    """How many of an owner's queued jobs admission holds on a resource."""

    owner: str
    resource: str
    held: int


@dataclass(frozen=True)
class Upcoming:
    """A job admission hands over soon."""

    job: Job
    owner: str


@dataclass(frozen=True)
class Queues:
    broker: dict[str, int]
    """Messages waiting in each broker queue: handed over, not yet taken by a worker."""
    held: dict[str, int]
    """Queued jobs held in the store, per resource."""
    held_by_owner: list[OwnerHeld]
    """The same per owner, most first."""
    upcoming: dict[str, list[Upcoming]]
    """Per resource, the jobs admission hands over next, first first."""


def broker_depths(client: redis.Redis) -> dict[str, int]:
    """Messages waiting in each of the workers' broker queues, in one round trip."""
    queues = keys.worker_queues(list(RESOURCES))
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for suffix in PRIORITY_LISTS:
            pipe.llen(queue + suffix)
    lengths = pipe.execute()
    width = len(PRIORITY_LISTS)
    return {q: sum(lengths[i * width : (i + 1) * width]) for i, q in enumerate(queues)}


def queues(session: Session, client: redis.Redis, *, upcoming: int = 10) -> Queues:
    """The whole picture; ``upcoming`` jobs per resource at most."""
    rows = session.execute(
        select(Owner.name, Job.resource, func.count())
        .join(Owner, Owner.id == Job.owner_id)
        .where(Job.status == QUEUED, Job.dispatched_at.is_(None))
        .group_by(Owner.name, Job.resource)
    ).all()
    by_owner = sorted(
        (OwnerHeld(owner=name, resource=resource, held=count) for name, resource, count in rows),
        key=lambda row: (-row.held, row.owner, row.resource),
    )
    held = dict.fromkeys(RESOURCES, 0)
    for row in by_owner:
        held[row.resource] = held.get(row.resource, 0) + row.held
    ids = choose(session, get_settings(), dict.fromkeys(RESOURCES, upcoming))
    found = {
        job.id: Upcoming(job=job, owner=name)
        for job, name in session.execute(
            select(Job, Owner.name).join(Owner, Owner.id == Job.owner_id).where(Job.id.in_(ids))
        ).tuples()
    }
    next_jobs: dict[str, list[Upcoming]] = {resource: [] for resource in RESOURCES}
    for job_id in ids:
        if job_id in found:
            next_jobs.setdefault(found[job_id].job.resource, []).append(found[job_id])
    return Queues(
        broker=broker_depths(client), held=held, held_by_owner=by_owner, upcoming=next_jobs
    )
