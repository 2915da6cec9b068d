"""Attempt rows: one per run of a job, numbered 1, 2, 3 … per job, closed with how the
run ended (completed, retrying, failed, cancelled, lost or requeued).

A run that a stopping worker sends back to the queue costs the job no attempt (its
``attempts`` count stays), but it has a row of its own: the numbers count runs.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from longplay.store.models import JobAttempt, utcnow

# Built once (building a statement costs more than running it) on the table itself:
# no ORM objects are needed for these rows.
_rows = cast(Table, JobAttempt.__table__)
DIED = {
    "code": "worker_lost",
    "message": "the worker process running it died (killed, out of memory, or a crash "
    "in a model or a native library); it was run again",
    "retryable": True,
}
"""The error of a run found open by the next one: its process never closed it."""
_LOST = (
    update(_rows)
    .where(_rows.c.job_id == bindparam("of_job"), _rows.c.finished_at.is_(None))
    .values(finished_at=bindparam("at"), outcome="lost", error=DIED)
)
# The next number is worked out in the INSERT itself; only the claimer of the run adds
# a row, so no two can race for one number.
_OPEN = (
    insert(_rows)
    .values(
        job_id=bindparam("of_job"),
        attempt=select(func.coalesce(func.max(_rows.c.attempt), 0) + 1)
        .where(_rows.c.job_id == bindparam("of_job"))
        .scalar_subquery(),
        worker=bindparam("by"),
        started_at=bindparam("at"),
    )
    .returning(_rows.c.attempt)
)
_CLOSE = (
    update(_rows)
    .where(
        _rows.c.job_id == bindparam("of_job"),
        _rows.c.worker == bindparam("by"),
        _rows.c.finished_at.is_(None),
    )
    .values(finished_at=bindparam("at"), outcome=bindparam("how"))
)
_CLOSE_WITH_ERROR = _CLOSE.values(error=bindparam("why"))


def open_attempt(session: Session, job_id: str, worker: str, *, after_lost: bool) -> int:
    """Add the row of a run that ``worker`` just started; its number. With
    ``after_lost``, an earlier run whose process died left its row open: it is closed
    as ``lost`` first, with the error :data:`DIED`."""
    connection = session.connection()
    params = {"of_job": job_id, "by": worker, "at": utcnow()}
    if after_lost:
        connection.execute(_LOST, params)
    return int(connection.execute(_OPEN, params).scalar_one())


def close_attempt(
    session: Session,
    job_id: str,
    worker: str,
    outcome: str,
    error: dict[str, Any] | None = None,
) -> None:
    """Close this worker's open attempt at the job with how it ended."""
    params = {"of_job": job_id, "by": worker, "at": utcnow(), "how": outcome, "why": error}
    session.connection().execute(_CLOSE if error is None else _CLOSE_WITH_ERROR, params)
