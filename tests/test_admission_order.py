"""Admission's order at any depth: ``choose`` and ``queue_positions`` read only as much of
the queue as they need, and must still give what the rules, read plainly over every
held job, give. Random queues on SQLite and PostgreSQL, with pages of a few rows so a
small queue goes through every way of reading: the walk, the turn to reading by owner
(one owner's backlog in front), and more of one owner's line.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import create_database, drop_database
from sqlalchemy import delete, insert, select

from longplay.jobs.admission import choice, position
from longplay.jobs.admission.choice import choose
from longplay.jobs.admission.position import queue_positions
from longplay.settings import get_settings
from longplay.store.db import session_scope
from longplay.store.models import Job, Owner, utcnow

Row = dict[str, Any]


@pytest.fixture
def db_url(database_kind: str, tmp_path: Path) -> Iterator[str]:
    url = create_database(database_kind, tmp_path)
    yield url
    drop_database(url)


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read three rows at a time, by owner after seven, and two of an owner's at a time."""
    monkeypatch.setattr(choice, "PAGE", 3)
    monkeypatch.setattr(choice, "WALK_AT_MOST", 7)
    monkeypatch.setattr(choice, "LINE_PAGE", 2)
    monkeypatch.setattr(position, "HORIZON", 12)


def make_queue(seed: int) -> tuple[list[Row], list[Row]]:
    """Owners and jobs of one random queue. Some shapes put one owner's backlog, in
    flight, in front of everyone else's jobs."""
    rng = random.Random(seed)
    now = utcnow()
    owners = [
        {"id": f"own_{seed}_{n}", "name": f"o{seed}-{n}", "max_running": rng.choice([None, 1, 2])}
        for n in range(rng.randint(1, 9))
    ]
    jobs: list[Row] = []
    start = now - timedelta(hours=2)

    def job(owner: Row, at: datetime, **values: Any) -> None:
        jobs.append(
            {
                "id": f"job_{seed}_{len(jobs):04d}",
                "owner_id": owner["id"],
                "kind": "sleep",
                "status": "queued",
                "priority_rank": rng.choice([0, 1, 1, 1, 2]),
                "resource": rng.choice(["cpu", "cpu", "gpu"]),
                "created_at": at,
                "dispatched_at": None,
                "run_at": None,
                "retry_at": None,
                "deadline": None,
                **values,
            }
        )

    if rng.random() < 0.4:  # a backlog in front, of an owner with jobs running
        big = owners[0]
        for n in range(rng.randint(10, 30)):
            job(big, start + timedelta(seconds=n), priority_rank=1, resource="cpu")
        job(big, start, status="running", dispatched_at=start, resource="cpu")
        start += timedelta(minutes=10)
    for _ in range(rng.randint(0, 60)):
        owner = rng.choice(owners)
        # Whole seconds, so that ages tie and ids decide.
        at = start + timedelta(seconds=rng.randint(0, 300))
        roll = rng.random()
        if roll < 0.1:
            job(owner, at, status="running", dispatched_at=at)
        elif roll < 0.2:
            job(owner, at, dispatched_at=at + timedelta(seconds=rng.randint(0, 5)))
        elif roll < 0.25:
            job(owner, at, run_at=now + timedelta(hours=1))
        elif roll < 0.3:
            job(owner, at, retry_at=now + timedelta(hours=1))
        elif roll < 0.33:
            job(owner, at, deadline=now - timedelta(minutes=1))
        elif roll < 0.38:
            job(owner, at, status="completed", dispatched_at=at)
        else:
            job(owner, at)
    return owners, jobs


def is_due(job: Row, now: datetime) -> bool:
    return (
        job["status"] == "queued"
        and job.get("dispatched_at") is None
        and (job.get("run_at") is None or job["run_at"] <= now)
        and (job.get("retry_at") is None or job["retry_at"] <= now)
        and (job.get("deadline") is None or job["deadline"] > now)
    )


def in_flight(job: Row) -> bool:
    return job["status"] == "running" or (
        job["status"] == "queued" and job.get("dispatched_at") is not None
    )


def place(job: Row) -> tuple[Any, ...]:
    return (job["priority_rank"], job["created_at"], job["id"])


def plain_order(
    jobs: list[Row], now: datetime, room: dict[str, int], caps: dict[str, int | None]
) -> list[str]:
    """The rules over every due job: take the best line head (priority, the owner's jobs
    in flight, age) until the room is used; an owner at its cap takes nothing."""
    lines: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for job in sorted((j for j in jobs if is_due(j, now)), key=place):
        if job["resource"] in room:
            lines[(job["owner_id"], job["resource"])].append(job)
    flying = Counter(j["owner_id"] for j in jobs if in_flight(j))
    room = dict(room)
    taken: list[str] = []
    while True:
        heads = [
            ((line[0]["priority_rank"], flying[owner], line[0]["created_at"], line[0]["id"]), key)
            for key, line in lines.items()
            if line
            for owner, resource in [key]
            if room[resource] > 0
            and (caps.get(owner) is None or flying[owner] < (caps[owner] or 0))
        ]
        if not heads:
            return taken
        _, (owner, resource) = min(heads)
        taken.append(lines[(owner, resource)].pop(0)["id"])
        flying[owner] += 1
        room[resource] -= 1


def plain_positions(jobs: list[Row], now: datetime, horizon: int) -> dict[str, int]:
    """Each queued job's position by the rules over every job: the jobs with the broker
    first, then the held ones in the order admission takes them (no caps, one resource
    at a time), a held job not due placed where it would stand if it were; and ahead of
    a job with the broker, the held, due ones of a better priority, which may be handed
    over and taken before it."""
    flying = Counter(j["owner_id"] for j in jobs if in_flight(j))
    found = {}
    for resource in ("cpu", "gpu"):
        handed = sorted(
            (j["priority_rank"], j["dispatched_at"], j["id"])
            for j in jobs
            if j["resource"] == resource and j["status"] == "queued" and in_flight(j)
        )
        taken = plain_order(jobs, now, {resource: len(jobs)}, {})
        by_id = {j["id"]: j for j in jobs}
        keys = []
        owned: Counter[str] = Counter(flying)
        for job_id in taken:
            job = by_id[job_id]
            keys.append((job["priority_rank"], owned[job["owner_id"]], *place(job)[1:]))
            owned[job["owner_id"]] += 1
        for job in jobs:
            if job["resource"] != resource or job["status"] != "queued":
                continue
            if job.get("dispatched_at") is not None:
                key = (job["priority_rank"], job["dispatched_at"], job["id"])
                better = sum(
                    1
                    for j in jobs
                    if j["resource"] == resource
                    and not in_flight(j)
                    and is_due(j, now)
                    and j["priority_rank"] < job["priority_rank"]
                )
                found[job["id"]] = min(horizon, bisect_left(handed, key) + better)
                continue
            own = sum(
                1
                for j in jobs
                if j["owner_id"] == job["owner_id"]
                and j["resource"] == resource
                and is_due(j, now)
                and place(j) < place(job)
            )
            mine = (job["priority_rank"], flying[job["owner_id"]] + own, *place(job)[1:])
            found[job["id"]] = min(horizon, len(handed) + bisect_left(keys, mine))
    return found


def store(url: str, owners: list[Row], jobs: list[Row]) -> None:
    with session_scope(url) as session:
        session.execute(delete(Job))
        session.execute(delete(Owner))
        session.execute(insert(Owner), [{**o, "webhook_secret": "whsec_x"} for o in owners])
        if jobs:
            session.execute(insert(Job), jobs)


@pytest.mark.usefixtures("small_pages")
def test_choose_and_positions_follow_the_rules_at_any_depth(db_url: str) -> None:
    settings = get_settings()
    for seed in range(40):
        owners, jobs = make_queue(seed)
        store(db_url, owners, jobs)
        room = {"cpu": random.Random(seed).randint(1, 12), "gpu": 3}
        caps = {o["id"]: o["max_running"] for o in owners}
        with session_scope(db_url) as session:
            now = utcnow()
            picked = choose(session, settings, room)
            page = list(session.scalars(select(Job)))
            positions = queue_positions(session, page)
        assert picked == plain_order(jobs, now, room, caps), f"seed {seed}"
        assert positions == plain_positions(jobs, now, position.HORIZON), f"seed {seed}"
