"""Viewer tokens: one job made readable to a browser for a while, without a key.

A front end that shows a job's progress and plays its result should not hold its
owner's API key, which can do anything the owner can. The owner's backend asks for a
viewer token of one job instead and hands that to the browser: it reads the job, its
live events and its outputs, nothing else, and expires. Like a key, it is shown once
and stored only as a hash.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from longplay.store.models import ApiKey, Job, ViewerToken, new_id, utcnow
from longplay.store.owners import hash_secret

TOKEN_PREFIX = "lpv_"


def is_viewer_token(text: str) -> bool:
    """Whether a credential is a viewer token (else it is taken as an API key)."""
    return text.startswith(TOKEN_PREFIX)


def create_viewer_token(
    session: Session, job: Job, key: str, *, seconds: float
) -> tuple[str, ViewerToken]:
    """A new token for ``job``, made with the live API key ``key`` and good for
    ``seconds`` while that key lives; the secret is returned once."""
    made_with = session.scalar(select(ApiKey.id).where(ApiKey.secret_hash == hash_secret(key)))
    if made_with is None:
        raise ValueError("a viewer token is made with a live API key")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ViewerToken(
        id=new_id("vtk"),
        job_id=job.id,
        key_id=made_with,
        secret_hash=hash_secret(secret),
        expires_at=utcnow() + timedelta(seconds=seconds),
    )
    session.add(token)
    return secret, token


def job_of_token(session: Session, secret: str) -> Job | None:
    """The job a token that has not expired reads; None for an unknown or expired one,
    one whose job was deleted (the token went with it), or one whose key was revoked."""
    return session.scalar(
        select(Job)
        .join(ViewerToken, ViewerToken.job_id == Job.id)
        .join(ApiKey, ApiKey.id == ViewerToken.key_id)
        .where(
            ViewerToken.secret_hash == hash_secret(secret),
            ViewerToken.expires_at > utcnow(),
            ApiKey.revoked_at.is_(None),
        )
    )
