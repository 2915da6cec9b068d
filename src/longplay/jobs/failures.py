"""What an exception that ended a job's work means for the job: one rule for the job's
own process (:mod:`longplay.jobs.runner`) and for a process that helps with its items
(:mod:`longplay.jobs.fanout`), so that the same failure is retried, or not, wherever
it happens."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError, StatementError

from longplay.broker import SoftTimeLimitExceeded
from longplay.framework import JobError, JobKind, PermanentError, RetryableError
from longplay.jobs.outages import note_store_full, storage_full
from longplay.settings import get_settings
from longplay.store.db import driver_message
from longplay.store.models import Job

log = logging.getLogger(__name__)


STORAGE_ERRNOS = frozenset(
    {
        errno.ENOSPC,  # a full disk
        errno.EDQUOT,
        errno.EROFS,  # a disk remounted read-only after an error
        errno.EIO,
        errno.EACCES,  # the data folder's permissions, or an immutable file
        errno.EPERM,
        errno.EMFILE,  # out of file handles, for now
        errno.ENFILE,
    }
)
"""What the data folder (the file store, a job's scratch space) answers while it cannot
be written: the operator's to mend, after which the job passes; the job's own input
never causes these (it is read from the store)."""
ABOUT_A_PATH = frozenset({errno.EACCES, errno.EPERM})
"""Of those, the ones a kind's own code meets elsewhere as well (a file of its own
outside the data folder, a signal to another user's process): a storage fault only
where they name a path in the data folder, a bug of the kind's otherwise."""


def _storage_fault(exc: OSError) -> bool:
    """Whether ``exc`` says the data folder cannot be written now (see
    :data:`STORAGE_ERRNOS`): a full or read-only disk wherever it is met, a permission
    refused on a path in the data folder."""
    if exc.errno not in STORAGE_ERRNOS:
        return False
    if exc.errno not in ABOUT_A_PATH:
        return True
    data_dir = get_settings().data_dir.resolve()
    named = [n for n in (exc.filename, exc.filename2) if isinstance(n, str | bytes | os.PathLike)]
    return any(Path(os.fsdecode(n)).resolve().is_relative_to(data_dir) for n in named)


def job_error(job: Job, kind: JobKind[Any] | None, exc: Exception) -> JobError:
    """What ended a run (or one of its items), as the error its job is settled with:
    a database that did not answer and a process out of memory may pass (retryable),
    anything unforeseen is an ``internal_error`` (logged with its traceback)."""
    if isinstance(exc, JobError):
        return exc
    if isinstance(exc, MemoryError):
        return RetryableError("the worker ran out of memory", code="out_of_memory")
    if isinstance(exc, SoftTimeLimitExceeded):
        limit = kind.soft_time_limit if kind is not None else None
        return PermanentError(
            f"{job.kind} ran past its time limit of {limit:g} s and was stopped",
            code="time_limit",
        )
    if isinstance(exc, OperationalError):
        if storage_full(exc):  # waits the operator's minute, not a blip's seconds
            log.warning("job %s: the database's disk is full: %s", job.id, driver_message(exc))
            note_store_full(exc)
            return RetryableError(
                "the database's disk is full: the job is retried once space is freed",
                code="storage_unavailable",
            )
        return RetryableError(
            f"the database did not answer: {driver_message(exc)}", code="store_unavailable"
        )
    if isinstance(exc, OSError) and _storage_fault(exc):
        log.warning("job %s: its files could not be written: %s", job.id, exc)  # the path
        return RetryableError(
            f"the worker could not write its files: {exc.strerror}", code="storage_unavailable"
        )
    log.exception("job %s: unexpected error", job.id)
    if isinstance(exc, StatementError):  # its text holds the SQL and the job's values
        said = type(exc.orig if exc.orig is not None else exc).__name__
        return PermanentError(
            f"internal error: {said}: {driver_message(exc)}", code="internal_error"
        )
    return PermanentError(f"internal error: {type(exc).__name__}: {exc}", code="internal_error")
