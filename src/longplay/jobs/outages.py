"""Which errors mean a part of the service did not answer now (the store, Redis), to
wait out, rather than a fault of the service, to fix: the API (a 503 to retry), the
dashboard's pages and beat's rounds in the worker (skipped till the next) tell them
apart the same way, and each says an outage in one line, not a traceback: a store
that is down for a minute would otherwise write one per request, or per round.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from longplay.redis_client import REDIS_DOWN as REDIS_DOWN
from longplay.redis_client import redis_away

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
    types as an outage, but waiting mends neither: those are None."""
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
