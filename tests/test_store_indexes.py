"""The jobs table's indexes: the migrations build what the models declare, on SQLite and
PostgreSQL, and go down and up again; on PostgreSQL, the queries that must stay fast at
depth (admission, positions, a page of jobs, beat's upkeep) have an index to use."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from conftest import create_database, drop_database
from sqlalchemy import event, insert, inspect, select, text
from sqlalchemy.engine import Engine

from longplay.jobs import flow_events, service
from longplay.jobs.admission import choice, rounds
from longplay.jobs.admission.choice import choose
from longplay.jobs.admission.position import queue_positions
from longplay.jobs.unit import unit_of_work
from longplay.settings import get_settings
from longplay.store.db import alembic_config, get_engine, session_scope
from longplay.store.models import Base, Flow, Job, JobStatus, Owner, utcnow

Shape = dict[str, tuple[tuple[str, ...], bool, str | None]]
"""Indexes by name: columns, unique, the partial index's condition."""


@pytest.fixture
def db_url(database_kind: str, tmp_path: Path) -> Iterator[str]:
    url = create_database(database_kind, tmp_path)
    yield url
    drop_database(url)


def declared(model: type[Base] = Job) -> Shape:
    shape: Shape = {}
    for index in model.__table__.indexes:
        where = index.dialect_options["postgresql"]["where"]
        shape[str(index.name)] = (
            tuple(c.name for c in index.columns),
            bool(index.unique),
            None if where is None else str(where),
        )
    return shape


def built(url: str, table: str = "jobs") -> Shape:
    engine = get_engine(url)
    shape: Shape = {}
    for index in inspect(engine).get_indexes(table):
        options: dict[str, Any] = index.get("dialect_options", {})
        where = options.get("postgresql_where", options.get("sqlite_where"))
        shape[str(index["name"])] = (
            tuple(str(c) for c in index["column_names"]),
            bool(index["unique"]),
            None if where is None else str(where).strip("()"),
        )
    engine.dispose()
    return shape


def statistics(url: str) -> list[str]:
    """The extended statistics on jobs (PostgreSQL; none on SQLite)."""
    engine = get_engine(url)
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT stxname FROM pg_statistic_ext WHERE stxrelid = 'jobs'::regclass")
        )
        return [str(name) for name in found.scalars()]


def test_migrations_build_the_declared_indexes_down_and_up(db_url: str) -> None:
    expected = ["jobs_status_resource"] if db_url.startswith("postgresql") else []
    assert built(db_url) == declared()
    assert built(db_url, "flows") == declared(Flow)
    assert declared(Flow)["ix_flows_open"] == (("created_at", "id"), False, "finished_at IS NULL")
    assert statistics(db_url) == expected
    config = alembic_config(db_url)
    command.downgrade(config, "0003")
    before = built(db_url)
    assert before["ix_jobs_owner_status"] == (("owner_id", "status"), False, None)
    assert "ix_jobs_queue_owner" not in before and "ix_jobs_run_at" not in before
    assert statistics(db_url) == []
    command.upgrade(config, "head")
    assert built(db_url) == declared()
    assert built(db_url, "flows") == declared(Flow)
    assert statistics(db_url) == expected


@contextlib.contextmanager
def selects(engine: Engine, naming: str) -> Iterator[list[tuple[str, Any]]]:
    """The SELECT statements containing ``naming`` that ``engine`` sends in the block,
    with their parameters."""
    sent: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if naming in statement and statement.lstrip().startswith("SELECT"):
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def plans(engine: Engine, table: str, statements: list[tuple[str, Any]]) -> list[str]:
    """PostgreSQL's plan of each statement, ``table`` analysed and sequential scans
    priced out."""
    with engine.connect() as conn:
        conn.execute(text(f"ANALYZE {table}"))
        conn.execute(text("SET enable_seqscan = off"))
        return [
            "\n".join(conn.exec_driver_sql("EXPLAIN " + statement, parameters).scalars())
            for statement, parameters in statements
        ]


def fill(url: str) -> str:
    """A few owners with queued, running, handed-over, scheduled and finished jobs; the
    name of the owner to list."""
    now = utcnow()
    owners = [{"id": f"own_{n}", "name": f"owner-{n}", "webhook_secret": "x"} for n in range(6)]
    jobs = []
    for n in range(3000):
        at = now - timedelta(minutes=3000 - n)
        status = ("queued", "queued", "queued", "running", "completed")[n % 5]
        jobs.append(
            {
                "id": f"job_{n:04d}",
                "owner_id": f"own_{n % 6}",
                "kind": "sleep",
                "status": status,
                "priority_rank": n % 3,
                "resource": ("cpu", "gpu")[n % 7 == 0],
                "created_at": at,
                # Handed over just now: none counts as lost with the broker.
                "dispatched_at": now if status != "queued" or n % 11 == 0 else None,
                "run_at": now + timedelta(hours=1) if n % 13 == 0 else None,
                "retry_at": now + timedelta(minutes=5) if n % 17 == 0 else None,
                "deadline": now + timedelta(days=1) if n % 19 == 0 else None,
            }
        )
    with session_scope(url) as session:
        session.execute(insert(Owner), owners)
        session.execute(insert(Job), jobs)
    return "owner-1"


@pytest.mark.parametrize("database_kind", ["postgresql"], indirect=True)
def test_the_queries_that_must_scale_use_the_indexes(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every SELECT on jobs that admission, queue positions, a page of jobs and beat's
    upkeep send, planned with sequential scans priced out: none scans the table, and
    between them they use every index but deduplication's and flows'."""
    name = fill(db_url)
    # Small pages, so that admission also reads by owner and one owner's line.
    monkeypatch.setattr(choice, "PAGE", 4)
    monkeypatch.setattr(choice, "WALK_AT_MOST", 8)
    monkeypatch.setenv("LONGPLAY_DATABASE_URL", db_url)  # beat's upkeep uses the settings'
    get_settings.cache_clear()
    engine = get_engine(db_url)
    try:
        with selects(engine, "jobs") as statements:
            with session_scope(db_url) as session:
                owner = session.scalars(select(Owner).where(Owner.name == name)).one()
                choose(session, get_settings(), {"cpu": 8, "gpu": 2})
                first = service.list_jobs(session, owner=owner, limit=20)
                service.list_jobs(session, owner=owner, limit=20, cursor=first.next_cursor)
                queued = service.list_jobs(session, owner=owner, status=[JobStatus.QUEUED])
                queue_positions(session, queued.jobs)
                rounds.next_due(session)
            rounds.sweep_deadlines()
            rounds.recover_lost()
    finally:
        get_settings.cache_clear()
    assert len(statements) >= 10
    used = set()
    for (statement, _), plan in zip(statements, plans(engine, "jobs", statements), strict=True):
        assert "Seq Scan on jobs" not in plan, f"{statement}\n{plan}"
        used.update(re.findall(r"(?:using|on) (ix_jobs_\w+)", plan))
    wanted = {str(i.name) for i in Job.__table__.indexes if str(i.name).startswith("ix_jobs_")}
    # Deduplication's and a flow's (its jobs, by flow) serve other queries.
    assert wanted - {"ix_jobs_content_key", "ix_jobs_flow_id"} <= used, sorted(wanted - used)


@pytest.mark.parametrize("database_kind", ["postgresql"], indirect=True)
def test_beats_flow_sweep_reads_the_open_flows_from_their_index(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Of 3000 flows, the 6 not ended yet: beat's sweep finds them through the partial
    index that holds only those, not by reading every flow ever made."""
    now = utcnow()
    flows = [
        {
            "id": f"flow_{n:04d}",
            "owner_id": "own_0",
            "created_at": now - timedelta(minutes=n),
            "finished_at": None if n % 500 == 0 else now,
        }
        for n in range(3000)
    ]
    with session_scope(db_url) as session:
        session.execute(insert(Owner), [{"id": "own_0", "name": "o", "webhook_secret": "x"}])
        session.execute(insert(Flow), flows)
    monkeypatch.setenv("LONGPLAY_DATABASE_URL", db_url)
    get_settings.cache_clear()
    engine = get_engine(db_url)
    try:
        with selects(engine, "FROM flows") as statements:
            assert flow_events.sweep(unit_of_work) == 0  # none has a job, so none can end
    finally:
        get_settings.cache_clear()
    assert statements
    for plan in plans(engine, "flows", statements):
        assert "Seq Scan on flows" not in plan and "ix_flows_open" in plan, plan
