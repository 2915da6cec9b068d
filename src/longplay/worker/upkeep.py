"""Beat's rounds (admission, the reaper, the sweeps, cleanup) while the store or Redis
does not answer, or a disk is full: one line each, not a traceback of a hundred lines
every few seconds. The next round tries again; nothing a round does is lost by skipping
one. What is not an outage (a missing table, a wrong Redis password) is raised as before."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from longplay.jobs.outages import (
    REDIS_DOWN,
    STORE_DOWN,
    note_store_full,
    part_down,
    said,
    storage_full,
)

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
            why = _why_skipped(exc)
            if why is None:
                raise
            log.warning(
                "%s: skipped, %s (%s); the next round tries again", work.__name__, why, said(exc)
            )
            return None

    return run


def _why_skipped(exc: Exception) -> str | None:
    """Why a round that raised ``exc`` waits for the next: a full disk (Redis refuses
    writes then), a part that did not answer; None for a fault."""
    if storage_full(exc):
        note_store_full(exc)
        return "the disk is full"
    if isinstance(exc, (*STORE_DOWN, *REDIS_DOWN)) and (part := part_down(exc)) is not None:
        return f"{part} did not answer"
    return None
