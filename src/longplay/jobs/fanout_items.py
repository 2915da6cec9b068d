"""The store side of a step's items (``fanout_items``): planned, stopped with their job.

:mod:`longplay.jobs.fanout` runs the items; this module only writes their rows, so the
unit of work can stop a job's items in the same transaction that ends the job.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from longplay.jobs.hooks import Announcement, Transaction
from longplay.store.db import session_scope
from longplay.store.models import FanOutItem, utcnow

PENDING, RUNNING, DONE, FAILED, CANCELLED = "pending", "running", "done", "failed", "cancelled"
RUN_ENDS = frozenset({"failed", "cancelled", "expired", "retrying", "requeued"})
"""Announcements after which no process of the job's run may go on with its items. Not
``completed``: a run completes only after every ``map`` it made returned, that is with
every item done, or stopped by the step that gave up on them."""


def plan(job_id: str, step: str, function: str, items: list[Any]) -> None:
    """Store the step's items. The same items an earlier run of the job stored keep
    what they got done; those it left unfinished are taken up again."""
    where = (FanOutItem.job_id == job_id, FanOutItem.step == step)
    with session_scope() as session:
        stored = session.execute(
            select(FanOutItem.function, FanOutItem.item).where(*where).order_by(FanOutItem.position)
        ).all()
        if [(f, i) for f, i in stored] == [(function, item) for item in items]:
            session.execute(
                update(FanOutItem)
                .where(*where, FanOutItem.status.in_([FAILED, CANCELLED]))
                .values(status=PENDING, worker=None, lease_until=None, fraction=0.0, error=None)
                .execution_options(synchronize_session=False)
            )
            return
        session.execute(delete(FanOutItem).where(*where))
        session.add_all(
            FanOutItem(job_id=job_id, step=step, position=n, function=function, item=item)
            for n, item in enumerate(items)
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
