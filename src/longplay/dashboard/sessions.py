"""Signed-in browsers: an opaque token in a cookie, the session itself in Redis.

The cookie holds 256 random bits and nothing else. Redis keeps, under the token's
SHA-256, the SHA-256 of the API key that signed in (the form the store keeps keys in)
and the session's CSRF token, for :data:`SESSION_SECONDS` after the last page. So a
stolen cookie jar shows no key, a revoked key ends its sessions at the next request,
every API process behind a load balancer sees the same sessions, and signing out
deletes the one record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from longplay import keys
from longplay.jobs.outages import storage_full
from longplay.redis_client import get_redis
from longplay.store.models import ApiKey, Owner
from longplay.store.owners import hash_secret, owner_for_key

COOKIE = "longplay_session"
LOGIN_COOKIE = "longplay_login"
"""Before sign-in: the CSRF token the sign-in form must send back (double submit)."""
SESSION_SECONDS = 12 * 3600
"""A session lapses this long after its last use."""
_PREFIX = f"{keys.PREFIX}:dashboard:session:"


class SignInNeeded(Exception):
    """No session, or one whose key was revoked: the browser should sign in."""


class BadCsrf(Exception):
    """A form that changes something came without this session's CSRF token."""


@dataclass(frozen=True)
class Viewer:
    """Who a signed-in browser acts for, and the token its forms must carry."""

    owner: Owner
    csrf: str


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _record_key(token: str) -> str:
    return _PREFIX + hashlib.sha256(token.encode()).hexdigest()


def sign_in(session: Session, api_key: str) -> tuple[str, Owner] | None:
    """A new session for a live ``api_key``: its cookie token and the owner; None for a
    key the store does not know (or revoked)."""
    owner = owner_for_key(session, api_key)
    if owner is None:
        return None
    token = new_token()
    record = {"key": hash_secret(api_key), "csrf": new_token()}
    get_redis().set(_record_key(token), json.dumps(record), ex=SESSION_SECONDS)
    return token, owner


def sign_out(token: str | None) -> None:
    if token:
        get_redis().delete(_record_key(token))


def viewer(session: Session, token: str | None) -> Viewer:
    """The session's owner, its lifetime renewed; :class:`SignInNeeded` if there is none."""
    if not token:
        raise SignInNeeded
    client = get_redis()
    try:
        raw = client.getex(_record_key(token), ex=SESSION_SECONDS)
    except redis.ResponseError as exc:  # Redis refuses writes while its disk is full:
        if not storage_full(exc):  # the session is read, and renewed by a later page
            raise
        raw = client.get(_record_key(token))
    if raw is None:
        raise SignInNeeded
    record = json.loads(raw)
    owner = session.scalar(
        select(Owner)
        .join(ApiKey)
        .where(ApiKey.secret_hash == record["key"], ApiKey.revoked_at.is_(None))
    )
    if owner is None:  # the key was revoked since: the session goes with it
        client.delete(_record_key(token))
        raise SignInNeeded
    return Viewer(owner=owner, csrf=str(record["csrf"]))


def check_csrf(expected: str, sent: object) -> None:
    """Raise :class:`BadCsrf` unless ``sent`` is ``expected`` (in constant time)."""
    if not (
        isinstance(sent, str)
        and sent
        and expected
        and hmac.compare_digest(sent.encode(), expected.encode())
    ):
        raise BadCsrf
