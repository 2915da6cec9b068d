"""Units of work: change a job, commit, then announce.

A service call, an admission round or a step of the runner that changes a job does it
in one :class:`UnitOfWork`: rows change in its session, :meth:`UnitOfWork.announce`
says what happened, and :meth:`UnitOfWork.commit` commits and only then tells the
subscribers. Nothing is told about a change that rolled back.

:data:`HOOKS` is the process's registry, with longplay's own subscribers: the webhook
outbox and the end of a run's fan-out items (staged with the change); the live event
streams, the metrics and admission, which hears of the room a change freed (sent to
Redis in one round trip after it); flows and dependents (told after that).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from longplay.jobs import dependencies, events, fanout_items, flow_events, metrics
from longplay.jobs.admission import pump
from longplay.jobs.hooks import Announcement, Hooks
from longplay.jobs.webhooks import outbox
from longplay.redis_client import get_redis
from longplay.store.db import session_scope
from longplay.store.models import Job

log = logging.getLogger(__name__)

HOOKS = Hooks(pipeline=lambda: get_redis().pipeline(transaction=False))
HOOKS.subscribe(staged=outbox.stage)
HOOKS.subscribe(staged=fanout_items.stop_with_job)
HOOKS.subscribe(sent=events.send)
HOOKS.subscribe(sent=pump.send)
HOOKS.subscribe(sent=metrics.send)


class UnitOfWork:
    """One transaction over jobs and what it announces once committed."""

    def __init__(self, session: Session, hooks: Hooks = HOOKS) -> None:
        self._session = session
        self._hooks = hooks
        self._told: list[Announcement] = []
        self._after: list[Callable[[], None]] = []
        self._known: dict[str, Job] = {}

    @property
    def session(self) -> Session:
        return self._session

    def knows(self, job: Job) -> None:
        """Let subscribers read ``job`` (a copy the caller holds, say the runner's) for
        what never changes, instead of selecting it again: :meth:`job` returns it, and
        the announcements about it carry it."""
        self._known[job.id] = job

    def job(self, job_id: str) -> Job | None:
        """The job as this unit knows it: a copy handed to :meth:`knows`, else read in
        the session."""
        return self._known.get(job_id) or self._session.get(Job, job_id)

    def announce(self, event: str, job_id: str, **data: Any) -> None:
        """Say what happened to a job in this unit; staged now, told after the commit."""
        announcement = Announcement(event, job_id, data, self._known.get(job_id))
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
        self._hooks.tell(*told)

    def rollback(self) -> None:
        """Undo the changes; their announcements are dropped."""
        self._session.rollback()
        self._told.clear()
        self._after.clear()


@contextmanager
def unit_of_work(*, known: Job | None = None) -> Iterator[UnitOfWork]:
    """A unit in a session of its own: committed (and told) when the block ends
    normally, rolled back when it raises. ``known``: see :meth:`UnitOfWork.knows`."""
    with session_scope() as session:
        unit = UnitOfWork(session)
        if known is not None:
            unit.knows(known)
        try:
            yield unit
        except BaseException:
            unit.rollback()
            raise
        unit.commit()


# After the commit, in this order: a flow's stream hears every announcement, then its
# end is looked for, then the ended jobs' dependents are settled (whose cancellations
# are announced in turn).
HOOKS.subscribe(told=flow_events.copy)
HOOKS.subscribe(told=partial(flow_events.end, open_unit=unit_of_work))
HOOKS.subscribe(told=partial(dependencies.tell, open_unit=unit_of_work))


def tell(event: str, job_id: str, *, known: Job | None = None, **data: Any) -> None:
    """Announce something that changed no row (progress, a note): told at once.
    ``known``: the caller's copy of the job (see :attr:`Announcement.job`)."""
    HOOKS.tell(Announcement(event, job_id, data, known))
