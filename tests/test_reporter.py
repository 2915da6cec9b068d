"""The progress reporter against a real database and Redis: bounded writes, every
change published, and the store write as the cancellation checkpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from conftest import Stack
from sqlalchemy import event

from longplay import keys, redis_client
from longplay import settings as config
from longplay.framework import JobCancelled, Step
from longplay.jobs import lifecycle
from longplay.jobs.progress import ProgressReporter
from longplay.store.db import get_engine, session_scope
from longplay.store.models import Job, JobStatus, utcnow
from longplay.store.owners import get_or_create_owner


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def deployment(
    database_kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    """A database and Redis this test process itself uses through the settings."""
    parts = Stack(tmp_path, database_kind)
    monkeypatch.setenv("LONGPLAY_DATABASE_URL", parts.database_url)
    monkeypatch.setenv("LONGPLAY_REDIS_URL", parts.redis_url)
    config.get_settings.cache_clear()
    monkeypatch.setattr(redis_client, "_client", None)
    yield parts
    parts.close()
    config.get_settings.cache_clear()


def running_job(url: str) -> str:
    with session_scope(url) as session:
        owner = get_or_create_owner(session, "alice")
        job = Job(
            id=f"job_{utcnow().timestamp()}",
            owner_id=owner.id,
            kind="sleep",
            dispatched_at=utcnow(),  # handed to the broker: claimable
        )
        session.add(job)
        session.flush()
        assert lifecycle.claim(session, job.id, worker="w", lease=timedelta(seconds=60))
    return job.id


def noop(_ctx: object) -> None:
    return None


def test_writes_are_bounded_and_events_complete(deployment: Stack) -> None:
    job_id = running_job(deployment.database_url)
    clock = Clock()
    step = Step("work", noop)
    reporter = ProgressReporter(job_id, "w", [step], write_interval=0.5, clock=clock)
    writes: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("UPDATE JOBS"):
            writes.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", count)
    try:
        reporter.start_step(step)
        for i in range(1, 1001):  # 1,000 items in 2 seconds of the reporter's clock
            clock.now += 0.002
            reporter.advance(i, 1000, item=i)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert 4 <= len(writes) <= 6, len(writes)
    stream = redis.Redis.from_url(deployment.redis_url).xrange(keys.events_stream(job_id))
    published = [json.loads(fields[b"data"]) for _id, fields in stream]
    assert len(published) == 1001  # the step's start, then every change
    assert [e["step_details"]["item"] for e in published[1:]] == list(range(1, 1001))
    assert published[-1]["progress"] == 100.0
    with session_scope(deployment.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.current_step == "work" and job.progress > 90


def test_cancel_is_seen_at_the_next_write(deployment: Stack) -> None:
    job_id = running_job(deployment.database_url)
    clock = Clock()
    step = Step("work", noop)
    reporter = ProgressReporter(job_id, "w", [step], write_interval=0.5, clock=clock)
    reporter.start_step(step)
    with session_scope(deployment.database_url) as session:
        assert lifecycle.transition(session, job_id, JobStatus.CANCELLED)
    reporter.advance(1, 10)  # within the write interval: no checkpoint yet
    clock.now += 1
    with pytest.raises(JobCancelled):
        reporter.advance(2, 10)
