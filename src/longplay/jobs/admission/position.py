"""Where queued jobs stand: how many queued jobs may start before each, across owners,
counted up to :data:`HORIZON`.

The jobs already with the broker go first (by priority, then as handed over); then the
held ones in the order admission takes them (:class:`~longplay.jobs.admission.choice.Order`:
priority, then the owner with the fewest jobs in flight, then age), leaving out owners'
``max_running`` (a capped owner's jobs are placed sooner than they start) and the other
resource. A held job that is not due yet (scheduled, or waiting for its retry) is placed
where it would stand if it were.

One order is not known: the broker has a queue per priority and a worker takes from the
best one, so a held job of a better priority, handed over as a slot frees, starts before
a worse one already with the broker when it is handed over before the worker looks, and
after it otherwise (a normal job that stood next for 17 s saw two high ones start first;
a low one with the broker went before a high one in two runs of three). Each is counted
ahead of the other: a position says how many jobs may start first, never fewer.

Counting exactly how many jobs are ahead costs a read of all of them, so the count stops
at :data:`HORIZON`: a job further back is given ``HORIZON``, "that many or more". A page
then costs a few queries however deep the queue: the jobs in flight, a page or two of
the held ones in admission's order, and the page's owner's own line.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from longplay.broker import liveness
from longplay.jobs.admission.choice import (
    QUEUED,
    Key,
    Order,
    Place,
    Waiting,
    due,
    in_flight,
)
from longplay.redis_client import get_quick_redis
from longplay.store.models import PRIORITY_RANK, Job, utcnow

HORIZON = 100
"""Positions are counted up to this; a job further back is given this."""


def queue_positions(session: Session, jobs: Sequence[Job]) -> dict[str, int]:
    """For each queued job among ``jobs``, by id: how many queued jobs will start before
    it (0: it is next), at most :data:`HORIZON`."""
    queued = [j for j in jobs if j.status == QUEUED]
    if not queued:
        return {}
    # The jobs in flight (few: the workers' slots and what waits in the broker) give the
    # jobs with the broker, each owner's count in flight, and which of the page's held
    # jobs were handed over since they were read (such a job is not ahead of itself).
    in_flight_rows = session.execute(
        select(
            Job.id, Job.owner_id, Job.status, Job.resource, Job.priority_rank, Job.dispatched_at
        ).where(in_flight())
    ).all()
    flying: Counter[str] = Counter(row.owner_id for row in in_flight_rows)
    handed: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in in_flight_rows:
        if row.status == QUEUED:
            handed[row.resource].append((row.priority_rank, row.dispatched_at, row.id))
    for keys in handed.values():
        keys.sort()
    handed_ids = {row.id for row in in_flight_rows if row.status == QUEUED}
    flying_ids = {row.id for row in in_flight_rows}

    positions: dict[str, int] = {}
    held: dict[str, list[Job]] = defaultdict(list)
    overtaking: dict[tuple[str, int], int] = {}
    now = utcnow()
    for job in queued:
        if job.dispatched_at is None:
            held[job.resource].append(job)
        else:
            key = (job.priority_rank, job.dispatched_at, job.id)
            place = (job.resource, job.priority_rank)
            if place not in overtaking:
                overtaking[place] = _held_better(session, *place, now)
            positions[job.id] = min(
                HORIZON, bisect_left(handed[job.resource], key) + overtaking[place]
            )
    for resource, jobs_here in held.items():
        with_broker = len(handed[resource])
        ahead = _held_ahead(
            Waiting(session, resource, now),
            jobs_here,
            flying,
            flying_ids,
            most=max(0, HORIZON - with_broker + 1),
        )
        for job in jobs_here:
            # Not itself, if it was handed over since it was read.
            positions[job.id] = min(HORIZON, with_broker - (job.id in handed_ids) + ahead[job.id])
    return positions


def _held_better(session: Session, resource: str, rank: int, now: datetime) -> int:
    """How many held, due jobs on ``resource`` have a better priority than ``rank``
    (counted up to :data:`HORIZON`): each, handed over as a slot frees, may be taken
    before a job of ``rank`` that waits with the broker."""
    if rank == min(PRIORITY_RANK.values()):
        return 0
    better = (
        select(Job.id)
        .where(due(now), Job.resource == resource, Job.priority_rank < rank)
        .limit(HORIZON)
    )
    return session.scalar(select(func.count()).select_from(better.subquery())) or 0


def stalled(jobs: Sequence[Job]) -> dict[str, str]:
    """For each queued job among ``jobs`` that no live worker takes, by id: why it will
    not start (a ``gpu`` kind where only CPU workers run, or no worker at all).

    Nothing when Redis does not answer at once: the page answers without the note, and
    ``/healthz`` says what is down."""
    queued = [j for j in jobs if j.status == QUEUED]
    if not queued:
        return {}
    try:
        slots = liveness.capacity(get_quick_redis())
    except (redis.RedisError, OSError):
        return {}
    return {
        job.id: f"no worker that takes {job.resource} jobs is running or answering "
        f"(longplay worker --queues {job.resource} starts one)"
        for job in queued
        if not slots.get(job.resource)
    }


def _held_ahead(
    waiting: Waiting,
    jobs: Sequence[Job],
    flying: Mapping[str, int],
    flying_ids: set[str],
    *,
    most: int,
) -> dict[str, int]:
    """For each of ``jobs`` (held, on ``waiting``'s resource): how many held, due jobs
    admission takes before it, at most ``most``.

    A job's key counts its owner's due jobs ahead of it. First the jobs already read
    settle what they can: every one read with a smaller key is ahead, and a job with
    ``most`` of them ahead is past the horizon. When admission's first page was not the
    whole queue, the remaining jobs' owners' lines are read (one query per owner, at most
    ``most`` jobs each) for exact keys, and that is tried again. The rest are placed by
    following admission's order one job at a time, each when the next one taken would
    come after it.
    """
    order = Order([waiting], dict(flying))
    head = order.peek()  # reads the first page, which may be the whole queue
    lines: dict[str, list[Place]] = {}
    """Owners' lines read on their own: the first ``most`` due jobs before the owner's
    last one among ``jobs``."""

    def key_of(job: Job) -> tuple[Key, int]:
        """The job's key were it due, and how many of its owner's due jobs come before
        it: exact once its owner's line is read, or the reading has passed it."""
        line, place = lines.get(job.owner_id), _place(job)
        before = waiting.before(job.owner_id, place) if line is None else bisect_left(line, place)
        own_flying = flying.get(job.owner_id, 0) - (job.id in flying_ids)
        return (job.priority_rank, own_flying + before, job.created_at, job.id), before

    # The keys of the jobs read: each owner's read jobs are the start of its line.
    read = sorted(
        (rank, flying.get(owner_id, 0) + nth, created_at, job_id)
        for owner_id, places in waiting.read.items()
        for nth, (rank, created_at, job_id) in enumerate(places)
    )
    ahead: dict[str, int] = {}

    def settle(todo: Sequence[Job]) -> list[Job]:
        """Give ``most`` to the jobs that many read jobs are ahead of; the others."""
        rest = []
        for job in todo:
            key, before = key_of(job)
            if max(before, bisect_left(read, key)) >= most:
                ahead[job.id] = most
            else:
                rest.append(job)
        return rest

    left = settle(jobs)
    if left and not waiting.complete:
        for owner_id in {job.owner_id for job in left}:
            last = max(_place(j) for j in jobs if j.owner_id == owner_id)
            lines[owner_id] = waiting.line_of(owner_id, before=last, most=most)
        left = settle(left)
    # Exact keys now: the walk read the whole queue, or the owners' lines were read.
    todo = sorted(key_of(job)[0] for job in left)
    placed = taken = 0
    while placed < len(todo) and taken < most and head is not None:
        next_key = (head.priority_rank, order.flying[head.owner_id], head.created_at, head.id)
        if todo[placed] <= next_key:
            ahead[todo[placed][-1]] = taken
            placed += 1
        else:
            order.take(head)
            taken += 1
            head = order.peek()
    for key in todo[placed:]:
        ahead[key[-1]] = taken if taken < most else most
    return ahead


def _place(job: Job) -> Place:
    return (job.priority_rank, job.created_at, job.id)
