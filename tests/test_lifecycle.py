"""Guarded transitions on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import create_database, drop_database

from longplay.jobs import lifecycle
from longplay.store.db import session_scope
from longplay.store.models import Job, JobStatus, utcnow
from longplay.store.owners import get_or_create_owner


@pytest.fixture
def db_url(database_kind: str, tmp_path: Path) -> Iterator[str]:
    url = create_database(database_kind, tmp_path)
    yield url
    drop_database(url)


def new_job(url: str, **values: object) -> str:
    """A queued job that admission handed to the broker (unless ``values`` say otherwise)."""
    values.setdefault("dispatched_at", utcnow())
    with session_scope(url) as session:
        owner = get_or_create_owner(session, "alice")
        job = Job(id=f"job_{utcnow().timestamp()}", owner_id=owner.id, kind="sleep", **values)
        session.add(job)
    return job.id


def status_of(url: str, job_id: str) -> str:
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.status


def test_claim_happens_once(db_url: str) -> None:
    job_id = new_job(db_url)
    lease = timedelta(seconds=60)
    with session_scope(db_url) as session:
        assert lifecycle.claim(session, job_id, worker="w1", lease=lease)
    with session_scope(db_url) as session:
        assert not lifecycle.claim(session, job_id, worker="w2", lease=lease)
    assert status_of(db_url, job_id) == "running"


def test_lapsed_lease_can_be_taken_over(db_url: str) -> None:
    job_id = new_job(db_url)
    with session_scope(db_url) as session:
        lifecycle.claim(session, job_id, worker="w1", lease=timedelta(seconds=60))
    with session_scope(db_url) as session:
        assert lifecycle.claim(session, job_id, worker="w2", lease=timedelta(seconds=-1))
    with session_scope(db_url) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.worker == "w2" and job.attempts == 2
        # The first worker no longer holds it and cannot finish it.
        assert not lifecycle.transition(session, job_id, JobStatus.COMPLETED, worker="w1")


def test_cancelled_never_completes(db_url: str) -> None:
    job_id = new_job(db_url)
    with session_scope(db_url) as session:
        lifecycle.claim(session, job_id, worker="w1", lease=timedelta(seconds=60))
    with session_scope(db_url) as session:
        assert lifecycle.transition(session, job_id, JobStatus.CANCELLED)
    with session_scope(db_url) as session:
        assert not lifecycle.transition(session, job_id, JobStatus.COMPLETED, worker="w1")
        assert not lifecycle.transition(session, job_id, JobStatus.QUEUED)
    assert status_of(db_url, job_id) == "cancelled"


def test_completed_is_final(db_url: str) -> None:
    job_id = new_job(db_url)
    with session_scope(db_url) as session:
        lifecycle.claim(session, job_id, worker="w1", lease=timedelta(seconds=60))
        assert lifecycle.transition(session, job_id, JobStatus.COMPLETED, worker="w1")
    with session_scope(db_url) as session:
        for target in (JobStatus.CANCELLED, JobStatus.FAILED, JobStatus.RUNNING):
            assert not lifecycle.transition(session, job_id, target)
        assert not lifecycle.claim(session, job_id, worker="w2", lease=timedelta(seconds=-1))


def test_held_or_overdue_jobs_are_not_claimed(db_url: str) -> None:
    lease = timedelta(seconds=60)
    held = new_job(db_url, dispatched_at=None)  # waiting for its turn or its retry
    overdue = new_job(db_url, deadline=utcnow() - timedelta(seconds=1))
    with session_scope(db_url) as session:
        assert not lifecycle.claim(session, held, worker="w1", lease=lease)
        assert not lifecycle.claim(session, overdue, worker="w1", lease=lease)
    with session_scope(db_url) as session:
        assert lifecycle.transition(session, overdue, JobStatus.EXPIRED)
        assert not lifecycle.transition(session, overdue, JobStatus.QUEUED)
    assert status_of(db_url, held) == "queued"
    assert status_of(db_url, overdue) == "expired"
