"""Beat's rounds (admission, the reaper, the sweeps, cleanup) while the store or Redis
does not answer, or a disk is full: one line each, not a traceback of a hundred lines
every few seconds. The next round tries again; nothing a round does is lost by skipping
one. What is not an outage (a missing table, a wrong Redis password) is raised as before."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from longplay.jobs.outages import said, why_to_wait

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def round_of_upkeep(work: Callable[P, R]) -> Callable[P, R | None]:
    """``work``, returning None (after a warning) where the store or Redis is away, or
    a disk is full."""

    @functools.wraps(work)
    def run(*args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return work(*args, **kwargs)
        except Exception as exc:
            why = why_to_wait(exc)
            if why is None:
                raise
            log.warning(
                "%s: skipped, %s (%s); the next round tries again", work.__name__, why, said(exc)
            )
            return None

    return run
