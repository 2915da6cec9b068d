"""Hooks: the one place where the side effects of a job's changes hang.

Every change to a job is a unit of work (:mod:`longplay.jobs.unit`) that announces
what happened (``queued``, ``running``, ``completed`` ...). Subscribers listen at three
points, in the manner of Dramatiq's middleware; each does nothing until one subscribes:

- ``staged(tx, announcement)``: inside the transaction that made the change, before
  it commits. A subscriber that must not lose its message (the webhook outbox) adds
  its rows here, so they commit or roll back with the change, and asks
  ``tx.after_commit`` for the work that may only start once they are stored.
- ``sent(pipe, announcement)``: after the commit, for subscribers that only write to
  Redis (live events, metrics, asks for admission): each adds its commands to one
  pipeline, sent in one round trip for all of a unit's announcements. Three round
  trips per change were most of what a short job cost its worker.
- ``told(announcement)``: after the commit and the pipeline, for the rest (a flow's
  end, dependents). Announcements that change no row (progress, notes) are only sent
  and told.

A sent or told subscriber that raises is logged and skipped, and a pipeline Redis
refuses is logged and lost: the change is already stored, and telling it must not fail
the request or the job that made it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
from redis.client import Pipeline
from sqlalchemy.orm import Session

from longplay.store.models import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Announcement:
    """Something that happened to a job: an event name and the event's fields.

    ``job`` is the announcer's own copy of the job, when it holds one (the runner's, the
    new job at submit): subscribers read what never changes (its kind, flow, times of
    this run) from it instead of selecting the row again, which on a busy worker was a
    query per job per subscriber."""

    event: str
    job_id: str
    data: Mapping[str, Any] = field(default_factory=dict)
    job: Job | None = field(default=None, compare=False, repr=False)


class Transaction(Protocol):
    """What a ``staged`` subscriber sees of the unit of work."""

    @property
    def session(self) -> Session: ...

    def job(self, job_id: str) -> Job | None:
        """The job as the unit knows it: a copy its caller already holds, else read in
        the session. Good for fields that never change (its callback); the session has
        the job as the change left it."""

    def after_commit(self, work: Callable[[], None]) -> None: ...


Staged = Callable[[Transaction, Announcement], None]
Sent = Callable[[Pipeline, Announcement], None]
Told = Callable[[Announcement], None]


class Hooks:
    """A registry of subscribers to job announcements. ``pipeline`` makes the Redis
    pipeline the ``sent`` subscribers share (one per :meth:`tell`)."""

    def __init__(self, pipeline: Callable[[], Pipeline] | None = None) -> None:
        self._pipeline = pipeline
        self._staged: list[Staged] = []
        self._sent: list[Sent] = []
        self._told: list[Told] = []

    def subscribe(
        self,
        *,
        staged: Staged | None = None,
        sent: Sent | None = None,
        told: Told | None = None,
    ) -> None:
        """Add a subscriber at any of the points."""
        if staged is not None:
            self._staged.append(staged)
        if sent is not None:
            if self._pipeline is None:
                raise ValueError("these hooks have no Redis pipeline for sent subscribers")
            self._sent.append(sent)
        if told is not None:
            self._told.append(told)

    def stage(self, tx: Transaction, announcement: Announcement) -> None:
        """Run the ``staged`` subscribers; one that raises rolls the change back."""
        for subscriber in self._staged:
            subscriber(tx, announcement)

    def tell(self, *announcements: Announcement) -> None:
        """Send the ``sent`` subscribers' commands in one pipeline, then run each
        ``told`` subscriber in turn over all the announcements, in their order: a
        subscriber sees what the ones before it did with the whole unit. Failures are
        logged and skipped."""
        if self._sent and self._pipeline is not None and announcements:
            self._send(self._pipeline, announcements)
        for subscriber in self._told:
            for announcement in announcements:
                try:
                    subscriber(announcement)
                except Exception:
                    _failed(announcement)

    def _send(
        self, pipeline: Callable[[], Pipeline], announcements: tuple[Announcement, ...]
    ) -> None:
        try:
            pipe = pipeline()
            for announcement in announcements:
                for subscriber in self._sent:
                    try:
                        subscriber(pipe, announcement)
                    except redis.RedisError:
                        raise
                    except Exception:
                        _failed(announcement)
            if len(pipe):
                pipe.execute()
        except redis.RedisError as exc:
            first = announcements[0]
            log.warning(
                "job %s: %r (and %d more) not sent to Redis (live events, metrics, "
                "admission asks lost; the store has the change): %s",
                first.job_id,
                first.event,
                len(announcements) - 1,
                exc,
            )


def _failed(announcement: Announcement) -> None:
    log.exception("job %s: a subscriber to %r failed", announcement.job_id, announcement.event)
