"""Pages of an owner's jobs (``service.list_jobs``, behind ``GET /v1/jobs``): newest
first, ties of age broken by id, and a cursor continues right after the last item, with
and without a status filter, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import create_database, drop_database
from sqlalchemy import insert, select

from longplay.jobs import service
from longplay.store.db import session_scope
from longplay.store.models import Job, JobStatus, Owner, utcnow


@pytest.fixture
def db_url(database_kind: str, tmp_path: Path) -> Iterator[str]:
    url = create_database(database_kind, tmp_path)
    yield url
    drop_database(url)


def test_pages_follow_age_then_id_through_ties(db_url: str) -> None:
    now = utcnow()
    jobs = [
        {
            "id": f"job_{n:03d}",
            "owner_id": "own_a" if n % 4 else "own_b",
            "kind": "sleep",
            "status": ("queued", "completed", "failed")[n % 3],
            # Three jobs to a second: ages tie, ids decide.
            "created_at": now - timedelta(seconds=n // 3),
        }
        for n in range(40)
    ]
    with session_scope(db_url) as session:
        session.execute(
            insert(Owner),
            [{"id": o, "name": o, "webhook_secret": "x"} for o in ("own_a", "own_b")],
        )
        session.execute(insert(Job), jobs)
    for status in ((), (JobStatus.COMPLETED,), (JobStatus.QUEUED, JobStatus.FAILED)):
        expected = sorted(
            (j for j in jobs if j["owner_id"] == "own_a" and (not status or j["status"] in status)),
            key=lambda j: (j["created_at"], j["id"]),
            reverse=True,
        )
        seen: list[str] = []
        cursor = None
        with session_scope(db_url) as session:
            owner = session.scalars(select(Owner).where(Owner.id == "own_a")).one()
            while True:
                page = service.list_jobs(
                    session, owner=owner, status=status, limit=4, cursor=cursor
                )
                seen += [j.id for j in page.jobs]
                cursor = page.next_cursor
                if cursor is None:
                    break
        assert seen == [j["id"] for j in expected], status
