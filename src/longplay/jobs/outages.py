"""Which errors mean a part of the service did not answer now (the store, Redis), or
a disk is full (:func:`storage_full`), to wait out, rather than a fault of the
service, to fix: the API (a 503, or a 507, to retry), the dashboard's pages and beat's
rounds (skipped till the next) tell them apart the same way, and each says an outage
in one line, not a traceback: a store that is down for a minute would otherwise write
one per request, or per round.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3

import redis
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from longplay.keys import STORE_FULL
from longplay.redis_client import REDIS_DOWN as REDIS_DOWN
from longplay.redis_client import get_quick_redis, redis_away

STORE_DOWN = (OperationalError, InterfaceError, PoolTimeout)
"""What the database raises when it may not answer: refused or dropped connections, a
lock held too long (SQLite), a pool with no connection free in time (see
:func:`part_down` for which of them are that)."""
SQLITE_DOWN = (
    "database is locked",
    "unable to open database file",
    "disk I/O error",
    "readonly database",
)
"""SQLite's words for a store that does not answer now (one that cannot be written
mends once its files can be, see ``store.db``); its other OperationalErrors ("no such
table") are faults to fix, not to wait out."""


def _store_down(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if isinstance(exc.orig, sqlite3.Error):
        return any(words in str(exc.orig) for words in SQLITE_DOWN)
    return isinstance(exc, OperationalError)  # PostgreSQL: refused, dropped, timed out


def part_down(exc: BaseException) -> str | None:
    """The part that did not answer ("the store", "Redis"), or None where ``exc`` is
    not an outage. A wrong Redis password or a missing table is raised as the same
    types as an outage, but waiting mends neither: those are None. Nor is a full disk
    (:func:`storage_full`; PostgreSQL raises it as an OperationalError, as it does a
    dropped connection): a person mends that, in minutes, not a retry in seconds."""
    if storage_full(exc):
        return None
    if isinstance(exc, STORE_DOWN):
        return "the store" if _store_down(exc) else None
    if redis_away(exc):
        return "Redis"
    return None


def said(exc: BaseException) -> str:
    """What an outage said, for its one line: the driver's error type and the first
    line of its message (SQLAlchemy's own text adds the statement and its values)."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first = (str(cause).strip().splitlines() or [""])[0][:200]
    return f"{type(cause).__name__}: {first}"


FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""A disk with no space left, or a quota used up."""
STORAGE_FULL = "the service's storage is full"
"""What a request that needed to write is told while the disk of the data folder (or
the database's) is full: the operator's to mend, after which the request passes."""


def storage_full(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised from, says a disk is full: a file
    written (``ENOSPC``), SQLite ("database or disk is full"), PostgreSQL (``53100``,
    ``disk_full``) or Redis, which refuses writes while it cannot write its
    append-only file (``MISCONF``)."""
    seen: set[int] = set()
    at: BaseException | None = exc
    while at is not None and id(at) not in seen:
        seen.add(id(at))
        if _full(at):
            return True
        at = at.__cause__ or at.__context__
    return False


def _full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return True
    if isinstance(exc, DBAPIError):
        exc = exc.orig if exc.orig is not None else exc
    if isinstance(exc, sqlite3.OperationalError):
        return "database or disk is full" in str(exc)
    if getattr(exc, "sqlstate", None) == "53100":  # psycopg's DiskFull
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("MISCONF")


STORE_FULL_FOR_S = 60
"""Seconds ``/healthz`` says the storage is full after the database last refused a write
for it."""


def note_store_full(exc: BaseException) -> None:
    """Where ``exc`` is the database refusing a write for a full disk, mark it for
    ``/healthz`` for :data:`STORE_FULL_FOR_S` (:data:`~longplay.keys.STORE_FULL`): the
    database's disk may be another machine's, which no process here can measure, and
    it still answers reads, as the health check does."""
    if not (isinstance(exc, DBAPIError) and storage_full(exc)):
        return
    with contextlib.suppress(redis.RedisError):  # Redis's own full disk: /healthz sees it
        get_quick_redis().set(STORE_FULL, said(exc), ex=STORE_FULL_FOR_S)


def why_to_wait(exc: BaseException) -> str | None:
    """Why work that raised ``exc`` waits to be tried again, in a few words: a full disk
    (marked for ``/healthz`` where it is the database's), a part that did not answer;
    None for a fault, which no wait mends."""
    if storage_full(exc):
        note_store_full(exc)
        return "the disk is full"
    if (part := part_down(exc)) is not None:
        return f"{part} did not answer"
    return None
