"""Which errors mean a part of the service did not answer now (a 503 to retry) rather
than a fault of the service (a 500 to fix): the API's JSON and the dashboard's pages
tell them apart the same way.

An outage is logged as one line, not a traceback: a store that is down for a minute
would otherwise write a traceback per request.
"""

from __future__ import annotations

import logging
import sqlite3

import redis
from fastapi import Request
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger(__name__)

STORE_DOWN = (OperationalError, InterfaceError, PoolTimeout)
"""What the database raises when it may not answer: refused or dropped connections, a
lock held too long (SQLite), a pool with no connection free in time (see
:func:`part_down` for which of them are that)."""
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)
SQLITE_DOWN = (
    "database is locked",
    "unable to open database file",
    "disk I/O error",
    "readonly database",
)
"""SQLite's words for a store that does not answer now (one that cannot be written
mends once its files can be, see ``store.db``); its other OperationalErrors ("no such
table") are faults to fix, not to wait out."""
RETRY_AFTER = "2"
UNSTORABLE = (
    "the request has a value the database cannot take: a text with a NUL character "
    "(\\u0000), or a number out of range"
)
"""What a ``DataError`` no check caught before tells the client (a 422): the request's
fault, without the SQL or the value."""


def _store_down(exc: Exception) -> bool:
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
    if isinstance(exc, REDIS_DOWN) and not isinstance(exc, redis.AuthenticationError):
        return "Redis"
    return None


def log_outage(request: Request, part: str, exc: BaseException) -> None:
    """One line: the request, the part, the error's type and first line."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first = (str(cause).strip().splitlines() or [""])[0][:200]
    log.warning(
        "%s %s: %s did not answer (%s: %s)",
        request.method,
        request.url.path,
        part,
        type(cause).__name__,
        first,
    )
