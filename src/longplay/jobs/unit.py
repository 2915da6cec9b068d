"""Units of work: change a job, commit, then announce.

A service call, an admission round or a step of the runner that changes a job does it
in one :class:`UnitOfWork`: rows change in its session, :meth:`UnitOfWork.announce`
says what happened, and :meth:`UnitOfWork.commit` commits and only then tells the
subscribers. Nothing is told about a change that rolled back.

:data:`HOOKS` is the process's registry, with longplay's own subscribers: the webhook
outbox (staged with the change) and the live event streams (told after it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from longplay.jobs import events
from longplay.jobs.hooks import Announcement, Hooks
from longplay.jobs.webhooks import outbox
from longplay.store.db import session_scope

log = logging.getLogger(__name__)

HOOKS = Hooks()
HOOKS.subscribe(staged=outbox.stage)
HOOKS.subscribe(told=events.tell)


class UnitOfWork:
    """One transaction over jobs and what it announces once committed."""

    def __init__(self, session: Session, hooks: Hooks = HOOKS) -> None:
        self._session = session
        self._hooks = hooks
        self._told: list[Announcement] = []
        self._after: list[Callable[[], None]] = []

    @property
    def session(self) -> Session:
        return self._session

    def announce(self, event: str, job_id: str, **data: Any) -> None:
        """Say what happened to a job in this unit; staged now, told after the commit."""
        announcement = Announcement(event, job_id, data)
        self._hooks.stage(self, announcement)
        self._told.append(announcement)

    def after_commit(self, work: Callable[[], None]) -> None:
        """Run ``work`` once this unit committed (never if it rolls back)."""
        self._after.append(work)

    def commit(self) -> None:
        """Commit, then run the after-commit work and tell every announcement. Neither
        can undo the commit: a failure there is logged, and the rest still runs."""
        self._session.commit()
        told, self._told = self._told, []
        after, self._after = self._after, []
        for work in after:
            try:
                work()
            except Exception:
                log.exception("work after a commit failed")
        for announcement in told:
            self._hooks.tell(announcement)

    def rollback(self) -> None:
        """Undo the changes; their announcements are dropped."""
        self._session.rollback()
        self._told.clear()
        self._after.clear()


@contextmanager
def unit_of_work() -> Iterator[UnitOfWork]:
    """A unit in a session of its own: committed (and told) when the block ends
    normally, rolled back when it raises."""
    with session_scope() as session:
        unit = UnitOfWork(session)
        try:
            yield unit
        except BaseException:
            unit.rollback()
            raise
        unit.commit()


def tell(event: str, job_id: str, **data: Any) -> None:
    """Announce something that changed no row (progress, a note): told at once."""
    HOOKS.tell(Announcement(event, job_id, data))
