"""Whether the key (or dashboard session) a live stream was opened with still holds.

A stream is checked once, when it opens, like any request; but it may stay open for
hours. So each stream asks again as it goes, and ends once its key has been revoked
or its session signed out: the client's reconnect then gets a ``401`` (or the sign-in
page), which ``EventSource`` does not retry. Many streams share one key (a product's
backend follows all its jobs with one), so the store is asked at most once every
:data:`RECHECK_SECONDS` per key in each API process, however many streams it has.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import SQLAlchemyError

RECHECK_SECONDS = 15.0
"""How long a revoked key's open streams may go on (plus a stream's idle wait)."""

_confirmed: dict[str, float] = {}
"""A credential's digest → when the store last said it holds (monotonic seconds)."""


async def holds(credential: str, check: Callable[[], Awaitable[bool]]) -> bool:
    """Whether ``credential`` still holds: from the last answer if it is recent, else
    from ``check()``. A store that does not answer ends no stream (the next call asks
    again): an outage is not a revocation."""
    digest = hashlib.sha256(credential.encode()).hexdigest()
    now = time.monotonic()
    if now - _confirmed.get(digest, -RECHECK_SECONDS) < RECHECK_SECONDS:
        return True
    try:
        held = await check()
    except SQLAlchemyError:
        return True
    if not held:
        _confirmed.pop(digest, None)
        return False
    _confirmed[digest] = now
    for old in [d for d, at in _confirmed.items() if now - at >= RECHECK_SECONDS]:
        del _confirmed[old]  # keys not asked about lately: the dict stays small
    return True
