"""Where queued jobs stand: how many queued jobs will start before each, across owners.

Jobs already with the broker go first (by priority, then when handed over); the held
ones follow in the order :func:`~longplay.jobs.admission.choice.choose` takes them:
priority, then turn (the owner's jobs in flight plus its place among its held jobs),
then age. A page of jobs costs four queries, however long: the jobs with the broker,
which of the page's jobs went in flight since they were read (a job never counts
itself), the held jobs that are due, and their owners' jobs in flight. Turns and
counts are worked out here, by sorting and bisection.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from longplay.jobs.admission.choice import QUEUED, due, in_flight, in_flight_of
from longplay.store.models import Job, utcnow

Key = tuple[Any, ...]


def queue_positions(session: Session, jobs: Sequence[Job]) -> dict[str, int]:
    """For each queued job among ``jobs``, by id: how many queued jobs will start before
    it (0: it is next)."""
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
        moved_on = set(
            session.scalars(select(Job.id).where(Job.id.in_([j.id for j in held]), in_flight()))
        )
        due_rows = session.execute(
            select(Job.id, Job.owner_id, Job.resource, Job.priority_rank, Job.created_at).where(
                due(utcnow()), Job.resource.in_(resources)
            )
        ).all()
        owners = {row.owner_id for row in due_rows} | {j.owner_id for j in held}
        flying = in_flight_of(session, sorted(owners))
        ranked = _Ranked(due_rows, flying)
    positions: dict[str, int] = {}
    for job in queued:
        if job.dispatched_at is not None:
            handed_key: Key = (job.priority_rank, job.dispatched_at, job.id)
            positions[job.id] = bisect_left(handed[job.resource], handed_key)
            continue
        # Not this job: it may have been handed over since it was read.
        with_broker = len(handed[job.resource]) - (job.id in handed_ids)
        own_flying = flying[job.owner_id] - (job.id in moved_on)
        line = ranked.lines[(job.owner_id, job.resource, job.priority_rank)]
        own_before = bisect_left(line, (job.created_at, job.id))
        turn = own_flying + own_before + 1
        held_key: Key = (job.priority_rank, turn, job.created_at, job.id)
        positions[job.id] = with_broker + bisect_left(ranked.order[job.resource], held_key)
    return positions


class _Ranked:
    """The held, due jobs: each owner's line (per resource and priority, oldest first)
    and, per resource, everyone's in admission order, where the n-th job of a line has
    turn n plus its owner's jobs in flight."""

    def __init__(
        self, rows: Sequence[Row[str, str, str, int, datetime]], flying: Mapping[str, int]
    ) -> None:
        self.lines: dict[tuple[str, str, int], list[tuple[datetime, str]]] = defaultdict(list)
        for row in rows:
            self.lines[(row.owner_id, row.resource, row.priority_rank)].append(
                (row.created_at, row.id)
            )
        self.order: dict[str, list[Key]] = defaultdict(list)
        for (owner_id, resource, rank), line in self.lines.items():
            line.sort()
            for nth, (created_at, job_id) in enumerate(line, start=1):
                self.order[resource].append((rank, nth + flying[owner_id], created_at, job_id))
        for keys in self.order.values():
            keys.sort()
