"""Hooks: the one place where the side effects of a job's changes hang.

Every change to a job is a unit of work (:mod:`longplay.jobs.unit`) that announces
what happened (``queued``, ``running``, ``completed`` ...). Subscribers listen at two
points, in the manner of Dramatiq's middleware; both do nothing until one subscribes:

- ``staged(tx, announcement)``: inside the transaction that made the change, before
  it commits. A subscriber that must not lose its message (the webhook outbox) adds
  its rows here, so they commit or roll back with the change, and asks
  ``tx.after_commit`` for the work that may only start once they are stored.
- ``told(announcement)``: after the commit. Live events, metrics, logs. Announcements
  that change no row (progress, notes) are only told.

A told subscriber that raises is logged and skipped: the change is already stored,
and telling it must not fail the request or the job that made it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session

from longplay.store.models import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Announcement:
    """Something that happened to a job: an event name and the event's fields."""

    event: str
    job_id: str
    data: Mapping[str, Any] = field(default_factory=dict)


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
Told = Callable[[Announcement], None]


class Hooks:
    """A registry of subscribers to job announcements."""

    def __init__(self) -> None:
        self._staged: list[Staged] = []
        self._told: list[Told] = []

    def subscribe(self, *, staged: Staged | None = None, told: Told | None = None) -> None:
        """Add a subscriber at either point (or both)."""
        if staged is not None:
            self._staged.append(staged)
        if told is not None:
            self._told.append(told)

    def stage(self, tx: Transaction, announcement: Announcement) -> None:
        """Run the ``staged`` subscribers; one that raises rolls the change back."""
        for subscriber in self._staged:
            subscriber(tx, announcement)

    def tell(self, announcement: Announcement) -> None:
        """Run the ``told`` subscribers; one that raises is logged and skipped."""
        for subscriber in self._told:
            try:
                subscriber(announcement)
            except Exception:
                log.exception(
                    "job %s: a subscriber to %r failed", announcement.job_id, announcement.event
                )
