"""Queue positions for a page of jobs: the order admission hands them over, in a number
of queries that does not grow with the page (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import create_database, drop_database
from sqlalchemy import event, select

from longplay.jobs.admission.position import queue_positions
from longplay.store.db import get_engine, session_scope
from longplay.store.models import Job, utcnow
from longplay.store.owners import get_or_create_owner


@pytest.fixture
def db_url(database_kind: str, tmp_path: Path) -> Iterator[str]:
    url = create_database(database_kind, tmp_path)
    yield url
    drop_database(url)


def add_jobs(url: str, plan: list[tuple[str, str, dict[str, object]]]) -> None:
    """Queued jobs ``(id, owner, values)``, created a second apart in the plan's order."""
    start = utcnow() - timedelta(hours=1)
    with session_scope(url) as session:
        owners = {name: get_or_create_owner(session, name).id for _, name, _ in plan}
        for n, (job_id, owner, values) in enumerate(plan):
            session.add(
                Job(
                    id=job_id,
                    owner_id=owners[owner],
                    kind="sleep",
                    created_at=start + timedelta(seconds=n),
                    **values,
                )
            )


def positions(url: str, ids: list[str] | None = None) -> tuple[dict[str, int], int]:
    """The positions of the queued jobs (all, or ``ids``) and the statements it took."""
    statements: list[str] = []
    engine = get_engine(url)

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    with session_scope(url) as session:
        query = select(Job) if ids is None else select(Job).where(Job.id.in_(ids))
        jobs = list(session.scalars(query))
        event.listen(engine, "before_cursor_execute", count)
        try:
            found = queue_positions(session, jobs)
        finally:
            event.remove(engine, "before_cursor_execute", count)
    return found, len(statements)


def test_positions_follow_the_order_of_admission(db_url: str) -> None:
    later = utcnow() + timedelta(hours=1)
    add_jobs(
        db_url,
        [
            ("job_a1", "ann", {}),
            ("job_a2", "ann", {}),
            ("job_a3", "ann", {}),
            ("job_c1", "cid", {"dispatched_at": utcnow()}),
            ("job_b1", "bob", {}),
            ("job_b2", "bob", {"run_at": later}),
            ("job_r1", "bob", {"status": "running"}),
        ],
    )
    found, _ = positions(db_url)
    # The job with the broker goes first; then turns: each owner's first held job (bob
    # has one running, so his first is his second turn), then ann's second, ...
    assert found == {
        "job_c1": 0,
        "job_a1": 1,
        "job_a2": 2,
        "job_b1": 3,
        "job_a3": 4,
        "job_b2": 5,  # not due yet: where it would stand if it were (turn 3, newest)
    }
    with session_scope(db_url) as session:
        one = session.get(Job, "job_b1")
        assert one is not None
        assert queue_positions(session, [one])[one.id] == 3


def test_a_better_priority_held_and_a_worse_one_with_the_broker_count_each_other(
    db_url: str,
) -> None:
    """The broker has a queue per priority, and a worker takes from the best one: a high
    job handed over as the next slot frees may start before a normal one already there,
    or after it. A position says how many may start first, so each counts the other."""
    now, later = utcnow(), utcnow() + timedelta(hours=1)
    add_jobs(
        db_url,
        [
            ("job_n1", "ann", {"dispatched_at": now}),
            ("job_l1", "cid", {"dispatched_at": now, "priority_rank": 2}),
            ("job_h1", "bob", {"priority_rank": 0}),
            ("job_h2", "bob", {"priority_rank": 0, "run_at": later}),
            ("job_m1", "ann", {}),
        ],
    )
    found, _ = positions(db_url)
    assert found == {
        "job_n1": 1,  # the high one, handed over as a slot frees, may go first
        "job_l1": 3,  # so may the high and the normal held ones; and n1
        "job_h1": 2,  # the two with the broker may go first
        "job_m1": 3,  # both with the broker, and h1
        "job_h2": 3,  # not due: where it would stand if it were, after bob's first
    }


def test_a_page_costs_the_same_few_queries_however_long(db_url: str) -> None:
    plan: list[tuple[str, str, dict[str, object]]] = [
        (f"job_{n:04d}", f"owner{n % 7}", {"dispatched_at": utcnow()} if n % 10 == 0 else {})
        for n in range(200)
    ]
    add_jobs(db_url, plan)
    small, small_cost = positions(db_url, [j for j, _, _ in plan[:5]])
    whole, whole_cost = positions(db_url)
    assert len(whole) == 200 and sorted(whole.values())[:3] == [0, 1, 2]
    assert {k: whole[k] for k in small} == small
    assert whole_cost <= 5 and small_cost <= 5
