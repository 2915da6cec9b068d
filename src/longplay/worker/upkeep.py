"""Beat's rounds (admission, the reaper, the sweeps, cleanup) while the store or Redis
does not answer: one line each, not a traceback of a hundred lines every few seconds.
The next round tries again; nothing a round does is lost by skipping one."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import redis
from sqlalchemy.exc import InterfaceError, OperationalError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from longplay.store.db import driver_message

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

STORE_DOWN = (OperationalError, InterfaceError, PoolTimeout)
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


def round_of_upkeep(work: Callable[P, R]) -> Callable[P, R | None]:
    """``work``, returning None (after a warning) where the store or Redis is away."""

    @functools.wraps(work)
    def run(*args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return work(*args, **kwargs)
        except (*STORE_DOWN, *REDIS_DOWN) as exc:
            part = "Redis" if isinstance(exc, REDIS_DOWN) else "the store"
            said = driver_message(exc) if isinstance(exc, StatementError) else str(exc)
            log.warning(
                "%s: skipped, %s did not answer (%s: %s); the next round tries again",
                work.__name__,
                part,
                type(exc).__name__,
                " ".join(said.split())[:300],
            )
            return None

    return run
