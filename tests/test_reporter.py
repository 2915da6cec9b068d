"""The progress reporter against a real database and Redis: bounded writes, changes
published at a bounded rate with none lost for good, and the store write as the
cancellation checkpoint."""

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
from longplay.jobs.progress import EVENT_BURST, ProgressReporter
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
    published = stream_of(deployment, job_id)
    # The step's start and a burst of changes as they came, then 20 a second: 40 in 2 s.
    items = [e["step_details"]["item"] for e in published[1:]]
    assert items[: EVENT_BURST - 1] == list(range(1, EVENT_BURST)), items
    assert items == sorted(set(items)) and items[-1] >= 975, items
    assert EVENT_BURST + 36 <= len(published) <= EVENT_BURST + 42, len(published)
    reporter.end_step()  # the step's end goes out at once, with its last details
    last = stream_of(deployment, job_id)[-1]
    assert last["progress"] == 100.0 and last["step_details"]["item"] == 1000
    with session_scope(deployment.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.current_step == "work" and job.progress > 90


def stream_of(deployment: Stack, job_id: str) -> list[dict[str, object]]:
    stream = redis.Redis.from_url(deployment.redis_url).xrange(keys.events_stream(job_id))
    return [json.loads(fields[b"data"]) for _id, fields in stream]


def test_a_change_held_back_goes_out_with_the_next_report_or_the_steps_end(
    deployment: Stack,
) -> None:
    """More reports at once than the rate limit lets through: the last is sent with
    the next report after a pause, and the step's end sends its last details."""
    job_id = running_job(deployment.database_url)
    clock = Clock()
    step = Step("work", noop)
    reporter = ProgressReporter(job_id, "w", [step], write_interval=0.5, clock=clock)
    reporter.start_step(step)
    for item in range(1, 41):  # forty reports in a fortieth of a second
        clock.now += 0.0006
        reporter.advance(item, 80, item=item)
    before = [e["step_details"].get("item") for e in stream_of(deployment, job_id)]
    # The start and a burst (the start took one of its events); the rest waits.
    assert before == [None, *range(1, EVENT_BURST)], before
    clock.now += 5  # a quiet second or more
    reporter.advance(41, 80, item=41)
    clock.now += 0.0006
    reporter.advance(42, 80, item=42)  # within the burst the pause gave back
    reporter.end_step()
    sent = stream_of(deployment, job_id)
    assert [e["step_details"].get("item") for e in sent] == [*before, 41, 42, 42], sent
    assert sent[-1]["progress"] == 100.0


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


def test_a_change_left_unwritten_is_written_once_the_interval_is_up(deployment: Stack) -> None:
    """What the heartbeat does for a step that reported just after a write and then
    runs a long call: the change waits out the interval, then is written."""
    job_id = running_job(deployment.database_url)
    clock = Clock()
    step = Step("work", noop)
    reporter = ProgressReporter(job_id, "w", [step], write_interval=0.5, clock=clock)
    reporter.start_step(step)  # just after the claim's write: kept, not written
    clock.now += 0.2
    reporter.advance(3, 10, turn=3)

    def stored() -> tuple[str | None, dict[str, object]]:
        with session_scope(deployment.database_url) as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job.current_step, dict(job.step_details)

    assert stored() == (None, {}) and reporter.wake.is_set()
    assert reporter.unwritten_due_in() == pytest.approx(0.3)
    assert reporter.write_unwritten() is None, "not due yet"
    clock.now += 0.3
    assert reporter.write_unwritten() is True
    assert stored() == ("work", {"turn": 3, "done": 3, "total": 10})
    assert reporter.unwritten_due_in() is None and reporter.write_unwritten() is None
    clock.now += 0.1
    reporter.advance(4, 10, turn=4)  # kept again, then the job is cancelled
    with session_scope(deployment.database_url) as session:
        assert lifecycle.transition(session, job_id, JobStatus.CANCELLED)
    clock.now += 0.5
    assert reporter.write_unwritten() is False, "the job is no longer ours"
