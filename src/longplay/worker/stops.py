"""Celery's lines about a pool process longplay ended on purpose, as one line each.

A cancelled job whose step reaches no checkpoint within ``LONGPLAY_CANCEL_GRACE`` has
its process ended (:func:`longplay.jobs.endings.end_stuck_process`, with
:data:`~longplay.jobs.endings.EXIT_CANCEL_OVERDUE`). Celery takes that for a crash and
writes two ERRORs, "Process … exited with 'exitcode 75'" and "Task handler raised
error: WorkerLostError(…)" with its traceback, for what was an owner pressing Cancel
(the job's own line says why the process was ended). Any other exit code is a crash,
and keeps its lines as they are.
"""

from __future__ import annotations

import logging

from longplay.jobs.endings import EXIT_CANCEL_OVERDUE

_EXIT = f"exitcode {EXIT_CANCEL_OVERDUE}"


class EndedOnPurpose(logging.Filter):
    """Makes a line about a process ended with :data:`EXIT_CANCEL_OVERDUE` one INFO
    line without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or _EXIT not in record.getMessage():
            return True
        record.msg = (
            "a pool process ended on purpose (%s): its job was cancelled and did "
            "not stop within LONGPLAY_CANCEL_GRACE; Celery starts a new one"
        )
        record.args = (_EXIT,)
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def quiet_ended_processes() -> None:
    """In the worker: the pool's line (billiard's logger) and the task's (Celery's)."""
    for name in ("multiprocessing", "celery.worker.request"):
        logging.getLogger(name).addFilter(EndedOnPurpose())
