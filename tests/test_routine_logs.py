"""Beat's routine upkeep stays out of the INFO log; job lines and warnings stay in."""

from __future__ import annotations

import logging

from longplay.broker.app import ADMIT, REAP, RUN_JOB, QuietRoutine


def record(level: int, message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("celery.app.trace", level, __file__, 1, message, args, None)


def test_routine_upkeep_lines_are_dropped_and_the_rest_kept() -> None:
    quiet = QuietRoutine()
    assert not quiet.filter(record(logging.INFO, "Task %s[abc] succeeded in 0.01s", ADMIT))
    assert not quiet.filter(record(logging.INFO, "Scheduler: Sending due task reap (%s)", REAP))
    assert quiet.filter(record(logging.INFO, "Task %s[abc] received", RUN_JOB))
    assert quiet.filter(record(logging.ERROR, "Task %s[abc] raised: boom", REAP))
