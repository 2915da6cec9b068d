"""The store side of a step's items (``fanout_items``): planned, stopped with their job.

:mod:`longplay.jobs.fanout` runs the items; this module only writes their rows, so the
unit of work can stop a job's items in the same transaction that ends the job.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, exists, insert, literal, select, update
from sqlalchemy.orm import Session

from longplay.jobs.hooks import Announcement, Transaction
from longplay.store.db import affected, session_scope
from longplay.store.models import FanOutItem, Job, JobStatus, utcnow

PENDING, RUNNING, DONE, FAILED, CANCELLED = "pending", "running", "done", "failed", "cancelled"
RUN_ENDS = frozenset({"failed", "cancelled", "expired", "retrying", "requeued"})
"""Announcements after which no process of the job's run may go on with its items. Not
``completed``: a run completes only after every ``map`` it made returned, that is with
every item done, or stopped by the step that gave up on them."""


class Planner:
    """Stores a step's items one by one as the step makes them, each at once, so other
    processes can take it while the step makes the next.

    Items an earlier run of the job stored keep what they got done for as long as the
    new run makes the same ones in the same order (those it left unfinished are taken
    up again); from the first that differs, the earlier run's are dropped."""

    def __init__(self, job_id: str, step: str, function: str) -> None:
        self.where = (FanOutItem.job_id == job_id, FanOutItem.step == step)
        self.job_id, self.step, self.function = job_id, step, function
        with session_scope() as session:
            stored = session.execute(
                select(FanOutItem.function, FanOutItem.item)
                .where(*self.where)
                .order_by(FanOutItem.position)
            ).all()
        self.stored: list[tuple[str, Any]] = [(f, i) for f, i in stored]
        self.count = 0
        """Items stored so far."""
        self._same = True
        """Whether every item so far is the one the earlier run stored at its place."""

    def add(self, item: Any) -> bool:
        """Store the next item (a JSON value), if the job still runs; whether it does.

        A new item's check and insert are one statement, so an item made after the job
        was cancelled is never stored (the cancel stopped every item there was); while
        the earlier run's items are still being matched, the check comes first, so a
        cancelled job's items are neither taken up again nor dropped."""
        position, self.count = self.count, self.count + 1
        running = exists().where(Job.id == self.job_id, Job.status == JobStatus.RUNNING.value)
        with session_scope() as session:
            if self._same:
                if not session.scalar(select(running)):
                    return False
                if self.stored[position : position + 1] == [(self.function, item)]:
                    session.execute(
                        update(FanOutItem)
                        .where(
                            *self.where,
                            FanOutItem.position == position,
                            FanOutItem.status.in_([FAILED, CANCELLED]),
                        )
                        .values(
                            status=PENDING, worker=None, lease_until=None, fraction=0.0, error=None
                        )
                        .execution_options(synchronize_session=False)
                    )
                    return True
                self._same = False
                session.execute(
                    delete(FanOutItem).where(*self.where, FanOutItem.position >= position)
                )
            columns = FanOutItem.__table__.c
            values = select(
                literal(self.job_id, columns.job_id.type),
                literal(self.step, columns.step.type),
                literal(position, columns.position.type),
                literal(self.function, columns.function.type),
                literal(item, columns.item.type),
            ).where(running)
            stored = session.execute(
                insert(FanOutItem).from_select(
                    ["job_id", "step", "position", "function", "item"], values
                )
            )
            return bool(affected(stored))

    def finish(self) -> None:
        """The step made its last item: drop any the earlier run stored beyond it."""
        if self._same and len(self.stored) > self.count:
            with session_scope() as session:
                session.execute(
                    delete(FanOutItem).where(*self.where, FanOutItem.position >= self.count)
                )


def cancel(session: Session, job_id: str, step: str | None = None) -> None:
    """The items of the job (of one step) not done stop: a process running one finds it
    no longer its own at its next progress report, and keeps nothing."""
    where = [FanOutItem.job_id == job_id, FanOutItem.status.in_([PENDING, RUNNING])]
    if step is not None:
        where.append(FanOutItem.step == step)
    session.execute(
        update(FanOutItem)
        .where(*where)
        .values(status=CANCELLED, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def stop_with_job(tx: Transaction, announcement: Announcement) -> None:
    """The hook's ``staged`` subscriber: a run that ends (cancelled, failed, going to be
    retried, ...) stops its items in the same transaction, whichever process ends it."""
    if announcement.event in RUN_ENDS:
        cancel(tx.session, announcement.job_id)
