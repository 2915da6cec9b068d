"""One Redis client per process, for events and health checks."""

from __future__ import annotations

import os

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from longplay.settings import get_settings

_client: tuple[int, redis.Redis] | None = None

REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
"""What redis-py raises when Redis may not answer (see :func:`redis_away`)."""


def redis_away(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis did not answer now, to wait out. A wrong password is
    raised as a kind of ``ConnectionError`` too, but waiting does not mend it."""
    return isinstance(exc, REDIS_DOWN) and not isinstance(exc, redis.AuthenticationError)


def get_redis() -> redis.Redis:
    """The process's Redis client; a forked child gets its own, never its parent's."""
    global _client
    if _client is None or _client[0] != os.getpid():
        url = get_settings().effective_redis_url
        client = redis.Redis.from_url(
            url, socket_timeout=30, socket_connect_timeout=5, health_check_interval=30
        )
        _client = (os.getpid(), client)
    return _client[1]


_quick: tuple[int, redis.Redis] | None = None
QUICK_TIMEOUT = 1.0


def get_quick_redis() -> redis.Redis:
    """A client that gives up fast: one try, one-second timeouts. For health checks and
    liveness marks, which must answer "down" rather than wait for Redis to come back."""
    global _quick
    if _quick is None or _quick[0] != os.getpid():
        client = redis.Redis.from_url(
            get_settings().effective_redis_url,
            socket_timeout=QUICK_TIMEOUT,
            socket_connect_timeout=QUICK_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        _quick = (os.getpid(), client)
    return _quick[1]
