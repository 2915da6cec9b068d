"""What one admission round reads: a round runs for every job queued or ended, so it
must read a few rows whatever the depth of the queue, not a page of hundreds.

The worst everyday case is one owner's deep backlog with jobs in flight (a batch
submitted at once): no row of the walk decides, since a job not read yet might belong
to an owner with nothing in flight, and the round turns to one probe per waiting owner.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import create_database, drop_database
from sqlalchemy import insert

from longplay.jobs.admission import choice
from longplay.jobs.admission.choice import Waiting, choose, flying_per_owner
from longplay.jobs.admission.pump import room_and_flying
from longplay.settings import get_settings
from longplay.store.db import session_scope
from longplay.store.models import Job, Owner, utcnow

BACKLOG = 1_000


@pytest.fixture
def db_url(database_kind: str, tmp_path: Path) -> Iterator[str]:
    url = create_database(database_kind, tmp_path)
    yield url
    drop_database(url)


def backlog(url: str) -> None:
    """Owner ``big``: 1,000 held jobs, two running, one handed to the broker; owner
    ``late`` (a cap of one): one held job, younger than all of them."""
    start = utcnow() - timedelta(hours=1)
    owners = [
        {"id": "own_big", "name": "big", "webhook_secret": "whsec_x"},
        {"id": "own_late", "name": "late", "webhook_secret": "whsec_x", "max_running": 1},
    ]

    def job(n: int, owner: str, **values: Any) -> dict[str, Any]:
        return {
            "id": f"job_{n:05d}",
            "owner_id": owner,
            "kind": "sleep",
            "status": "queued",
            "priority_rank": 1,
            "resource": "cpu",
            "created_at": start + timedelta(seconds=n),
            "dispatched_at": None,
            **values,
        }

    jobs = [job(n, "own_big") for n in range(3, BACKLOG + 3)]
    jobs += [job(n, "own_big", status="running", dispatched_at=start) for n in (0, 1)]
    jobs.append(job(2, "own_big", dispatched_at=start))
    jobs.append(job(BACKLOG + 10, "own_late"))
    with session_scope(url) as session:
        session.execute(insert(Owner), owners)
        session.execute(insert(Job), jobs)


def test_a_round_reads_a_few_rows_of_a_deep_backlog(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backlog(db_url)
    read: list[int] = []
    fetch = Waiting._fetch

    def counted(self: Waiting, statement: Any, **values: object) -> Any:
        rows = fetch(self, statement, **values)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(Waiting, "_fetch", counted)
    settings = get_settings()
    with session_scope(db_url) as session:
        free, flying = room_and_flying(session, settings, {"cpu": 4})
        assert flying == flying_per_owner(session) == {"own_big": 3}
        assert free == {"cpu": settings.admission.dispatch_ahead + 2 - 1}
        picked = choose(session, settings, {"cpu": 4}, flying)
    # The newcomer first (nothing in flight), then the backlog oldest first; the
    # newcomer's cap of one keeps its line to one job.
    assert picked == ["job_01010", "job_00003", "job_00004", "job_00005"]
    # The walk up to its limit, then one probe per waiting owner: never the queue.
    assert sum(read) <= choice.ROUND_WALK_AT_MOST + 2 < BACKLOG // 4, read
