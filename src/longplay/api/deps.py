"""Typed dependencies: a database session and the owner of the request's API key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from longplay.store.db import session_scope
from longplay.store.models import Owner
from longplay.store.owners import owner_for_key

bearer = HTTPBearer(auto_error=False, description="An API key from `longplay keys create`.")


def get_session() -> Iterator[Session]:
    with session_scope() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_owner(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Owner:
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "send an API key as 'Authorization: Bearer <key>' (longplay keys create makes one)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    owner = owner_for_key(session, credentials.credentials)
    if owner is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "this API key is not valid (unknown or revoked)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return owner


OwnerDep = Annotated[Owner, Depends(get_owner)]
