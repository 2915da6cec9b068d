"""Where queued jobs stand: how many queued jobs will start before each, across owners.

Jobs already with the broker go first (by priority, then when handed over); the held
ones follow in the order :func:`~longplay.jobs.admission.choice.choose` takes them:
priority, then turn (the owner's jobs in flight plus its place among its held jobs),
then age. A page of jobs costs four queries, however long: the jobs with the broker,
the held jobs that are due (with their turn, from a window query), the page's owners'
jobs in flight, and which of the page's jobs went in flight since they were read (a
job never counts itself). The counting is done here, by bisection.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from longplay.jobs.admission.choice import QUEUED, due, in_flight
from longplay.store.models import Job, utcnow

Key = tuple[Any, ...]


def queue_position(session: Session, job: Job) -> int | None:
    """How many queued jobs will start before this one (0: it is next); None unless
    it is queued."""
    return queue_positions(session, [job]).get(job.id)


def queue_positions(session: Session, jobs: Sequence[Job]) -> dict[str, int]:
    """:func:`queue_position` of each queued job among ``jobs``, by id."""
    queued = [j for j in jobs if j.status == QUEUED]
    if not queued:
        return {}
    resources = sorted({j.resource for j in queued})
    handed_rows = session.execute(
        select(Job.id, Job.resource, Job.priority_rank, Job.dispatched_at).where(
            Job.status == QUEUED, Job.dispatched_at.is_not(None), Job.resource.in_(resources)
        )
    ).all()
    handed: dict[str, list[Key]] = defaultdict(list)
    for row in handed_rows:
        handed[row.resource].append((row.priority_rank, row.dispatched_at, row.id))
    handed_ids = {row.id for row in handed_rows}
    for keys in handed.values():
        keys.sort()

    held = [j for j in queued if j.dispatched_at is None]
    if held:
        owners = sorted({j.owner_id for j in held})
        flying = dict(
            session.execute(
                select(Job.owner_id, func.count())
                .where(Job.owner_id.in_(owners), in_flight())
                .group_by(Job.owner_id)
            ).all()
        )
        moved_on = set(
            session.scalars(select(Job.id).where(Job.id.in_([j.id for j in held]), in_flight()))
        )
        ranked = _due_with_turns(session, resources)
    positions: dict[str, int] = {}
    for job in queued:
        if job.dispatched_at is not None:
            handed_key: Key = (job.priority_rank, job.dispatched_at, job.id)
            positions[job.id] = bisect_left(handed[job.resource], handed_key)
            continue
        # Not this job: it may have been handed over since it was read.
        with_broker = len(handed[job.resource]) - (job.id in handed_ids)
        own_flying = int(flying.get(job.owner_id, 0)) - (job.id in moved_on)
        line = ranked.lines[(job.owner_id, job.resource, job.priority_rank)]
        own_before = bisect_left(line, (job.created_at, job.id))
        turn = own_flying + own_before + 1
        held_key: Key = (job.priority_rank, turn, job.created_at, job.id)
        positions[job.id] = with_broker + bisect_left(ranked.order[job.resource], held_key)
    return positions


class _Ranked:
    """The held, due jobs: per resource in admission order, and per owner line."""

    def __init__(self) -> None:
        self.order: dict[str, list[Key]] = defaultdict(list)
        self.lines: dict[tuple[str, str, int], list[tuple[datetime, str]]] = defaultdict(list)


def _due_with_turns(session: Session, resources: Sequence[str]) -> _Ranked:
    now = utcnow()
    flying = (
        select(Job.owner_id.label("owner_id"), func.count().label("n"))
        .where(in_flight())
        .group_by(Job.owner_id)
        .subquery()
    )
    nth = func.row_number().over(
        partition_by=(Job.owner_id, Job.resource, Job.priority_rank),
        order_by=(Job.created_at, Job.id),
    )
    rows = session.execute(
        select(
            Job.id,
            Job.owner_id,
            Job.resource,
            Job.priority_rank,
            Job.created_at,
            (nth + func.coalesce(flying.c.n, 0)).label("turn"),
        )
        .join(flying, flying.c.owner_id == Job.owner_id, isouter=True)
        .where(and_(due(now), Job.resource.in_(resources)))
    ).all()
    ranked = _Ranked()
    for row in rows:
        ranked.order[row.resource].append((row.priority_rank, row.turn, row.created_at, row.id))
        ranked.lines[(row.owner_id, row.resource, row.priority_rank)].append(
            (row.created_at, row.id)
        )
    for keys in (*ranked.order.values(), *ranked.lines.values()):
        keys.sort()
    return ranked
