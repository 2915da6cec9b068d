"""The hooks' three points against a real Redis: a unit's announcements go to Redis in
one pipeline, and nothing a subscriber or Redis does after the commit raises."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
import redis
from conftest import Stack
from redis.client import Pipeline

from longplay.jobs.hooks import Announcement, Hooks


@pytest.fixture
def client(database_kind: str, make_stack: Callable[[], Stack]) -> Iterator[redis.Redis]:
    if database_kind != "sqlite":
        pytest.skip("the hooks reach Redis, never the store: one database is enough")
    connection = redis.Redis.from_url(make_stack().redis_url)
    yield connection
    connection.close()


class Pipelines:
    """Makes the hooks' pipelines on ``client`` and keeps each, to count them."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.made: list[Pipeline] = []

    def __call__(self) -> Pipeline:
        pipe = self.client.pipeline(transaction=False)
        self.made.append(pipe)
        return pipe


def counter(pipe: Pipeline, announcement: Announcement) -> None:
    pipe.hincrby("seen", announcement.event, 1)


def test_a_units_announcements_go_in_one_pipeline_then_are_told(client: redis.Redis) -> None:
    pipelines = Pipelines(client)
    hooks = Hooks(pipeline=pipelines)
    told: list[tuple[str, int]] = []
    hooks.subscribe(sent=counter)
    # A told subscriber runs after the pipeline: it sees what was sent.
    hooks.subscribe(told=lambda a: told.append((a.event, int(client.hget("seen", a.event) or 0))))

    hooks.tell(Announcement("running", "job_1"), Announcement("progress", "job_1"))

    assert len(pipelines.made) == 1
    assert client.hgetall("seen") == {b"running": b"1", b"progress": b"1"}
    assert told == [("running", 1), ("progress", 1)]


def test_a_failing_subscriber_is_skipped_and_the_rest_still_sent(
    client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = Hooks(pipeline=Pipelines(client))

    def broken(pipe: Pipeline, announcement: Announcement) -> None:
        raise ValueError("a bug in a subscriber")

    hooks.subscribe(sent=broken)
    hooks.subscribe(sent=counter)
    with caplog.at_level(logging.ERROR):
        hooks.tell(Announcement("completed", "job_2"))

    assert client.hget("seen", "completed") == b"1"
    assert "a subscriber to 'completed' failed" in caplog.text


def test_a_redis_that_does_not_answer_loses_the_sends_not_the_told(
    client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    gone = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    hooks = Hooks(pipeline=lambda: gone.pipeline(transaction=False))
    told: list[str] = []
    hooks.subscribe(sent=counter)
    hooks.subscribe(told=lambda a: told.append(a.event))

    with caplog.at_level(logging.WARNING):
        hooks.tell(Announcement("failed", "job_3"), Announcement("queued", "job_4"))

    assert told == ["failed", "queued"]
    assert "job job_3: 'failed' (and 1 more) not sent to Redis" in caplog.text


def test_sent_subscribers_need_a_pipeline() -> None:
    with pytest.raises(ValueError, match="no Redis pipeline"):
        Hooks().subscribe(sent=counter)
