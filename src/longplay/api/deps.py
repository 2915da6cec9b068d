"""The caller's API key, and store work done for it off the event loop.

Every route that reads or writes the store does it in one call of :func:`as_owner`
(or :func:`in_store`): a worker thread opens a session, checks the key, does the
work, commits and gives the connection back before the answer goes out. A request
that uploads files has its key checked in a call of its own first
(:func:`check_key`), so that no file of a wrong key is copied and probed. No request
holds a pooled connection while it waits for anything else (a thread, the body, the
client), and at most :func:`store_slots` calls run at once per process, fewer than
the pool has connections, so a crowd of requests waits in the event loop, cheaply,
instead of in the pool, where they would time out with 500s.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, partial
from typing import Annotated, TypeVar

import anyio
from anyio import CapacityLimiter
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from longplay.api import standing
from longplay.store.db import get_engine, session_scope
from longplay.store.models import Owner
from longplay.store.owners import owner_for_key
from longplay.store.viewer_tokens import is_viewer_token

T = TypeVar("T")

bearer = HTTPBearer(auto_error=False, description="An API key from `longplay keys create`.")


TOKEN_CANNOT = (
    "a viewer token reads its one job (the job, its events and its outputs); "
    "this needs an API key, as 'Authorization: Bearer <key>'"
)
"""A viewer token sent to a route it does not open, as a Bearer token or ``?token=``."""
KEY_IN_URL = "?token= takes a viewer token; send an API key as a Bearer token"
"""Anything else in ``?token=``: a key in a URL ends up in logs, histories and Referer
headers, so none is taken there."""


def unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"}
    )


async def api_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    request: Request,
) -> str:
    """The key the request sent; whether it is valid is checked with the store work."""
    if credentials is None and (token := request.query_params.get("token")):
        raise unauthorized(TOKEN_CANNOT if is_viewer_token(token) else KEY_IN_URL)
    if credentials is None:
        raise unauthorized(
            "send an API key as 'Authorization: Bearer <key>' (longplay keys create makes one)"
        )
    return credentials.credentials


KeyDep = Annotated[str, Depends(api_key)]


@cache
def store_slots() -> CapacityLimiter:
    """How many store calls this process runs at once: the pool's steady size, so the
    overflow connections stay free for health checks and the odd long upload."""
    size = getattr(get_engine().pool, "size", lambda: 5)()
    return CapacityLimiter(max(1, size))


def _run(work: Callable[[Session], T]) -> T:
    with session_scope() as session:
        return work(session)


async def in_store(work: Callable[[Session], T]) -> T:
    """Run ``work(session)`` in a worker thread, in one transaction committed at the end."""
    return await anyio.to_thread.run_sync(partial(_run, work), limiter=store_slots())


def authenticate(session: Session, key: str) -> Owner:
    if is_viewer_token(key):
        raise unauthorized(TOKEN_CANNOT)
    owner = owner_for_key(session, key)
    if owner is None:
        raise unauthorized("this API key is not valid (unknown or revoked)")
    return owner


async def check_key(key: str) -> None:
    """Refuse a wrong key before the request's files are read: it gets a 401, not an
    answer about the files (413, 422), and costs no upload's copying and probing. The
    route's own store call checks it again, as every one does; a JSON body, at most
    ``LONGPLAY_MAX_JSON_BYTES``, is not worth the second call."""
    await in_store(lambda session: authenticate(session, key))


async def _checked_key(key: KeyDep) -> str:
    await check_key(key)
    return key


UploaderKeyDep = Annotated[str, Depends(_checked_key)]
"""The API key of a route whose body is always files: checked before they are read."""


async def key_holds(key: str) -> bool:
    """Whether a key a stream was opened with is still live (:mod:`.standing`)."""
    return await standing.holds(
        key, lambda: in_store(lambda session: owner_for_key(session, key) is not None)
    )


async def as_owner(key: str, work: Callable[[Session, Owner], T]) -> T:
    """Check the key and run ``work(session, owner)`` in the same store call."""
    return await in_store(lambda session: work(session, authenticate(session, key)))
