"""Which held jobs go to the broker next: priority, then the owner with the fewest jobs
in flight, then age; never past an owner's ``max_running``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from longplay.jobs.admission.limits import limits_of
from longplay.settings import Settings
from longplay.store.models import Job, JobStatus, Owner, utcnow

RESOURCES = ("cpu", "gpu")
QUEUED = JobStatus.QUEUED.value
RUNNING = JobStatus.RUNNING.value


def due(now: datetime) -> ColumnElement[bool]:
    """Held, and nothing keeps it back: its time came, its retry is due, its deadline not."""
    return and_(
        Job.status == QUEUED,
        Job.dispatched_at.is_(None),
        or_(Job.run_at.is_(None), Job.run_at <= now),
        or_(Job.retry_at.is_(None), Job.retry_at <= now),
        or_(Job.deadline.is_(None), Job.deadline > now),
    )


def in_flight() -> ColumnElement[bool]:
    """Running, or handed to the broker and about to."""
    return or_(Job.status == RUNNING, and_(Job.status == QUEUED, Job.dispatched_at.is_not(None)))


def room_per_resource(session: Session, settings: Settings) -> dict[str, int]:
    """Per resource with held jobs that are due: how many may be handed over now."""
    waiting = dict(
        session.execute(
            select(Job.resource, func.count())
            .where(Job.status == QUEUED, Job.dispatched_at.is_not(None))
            .group_by(Job.resource)
        ).all()
    )
    room = {r: settings.admission.dispatch_ahead - int(waiting.get(r, 0)) for r in RESOURCES}
    now = utcnow()
    return {
        r: n
        for r, n in room.items()
        if n > 0 and session.scalar(select(Job.id).where(due(now), Job.resource == r).limit(1))
    }


def in_flight_of(session: Session, owner_ids: Sequence[str]) -> dict[str, int]:
    counts = session.execute(
        select(Job.owner_id, func.count())
        .where(Job.owner_id.in_(owner_ids), in_flight())
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
        .where(due(now), Job.resource.in_(list(room)))
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
    flying = in_flight_of(session, owner_ids)
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
