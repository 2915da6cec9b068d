"""Owners and their API keys; a key is shown once and stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from longplay.store.models import ApiKey, Owner, new_id, utcnow

KEY_PREFIX = "lp_"
PREFIX_LENGTH = 10
"""A key's first characters, kept in the clear to name it in lists and to revoke it."""


def hash_secret(secret: str) -> str:
    # Keys are 256-bit random tokens, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def get_or_create_owner(session: Session, name: str, *, is_admin: bool = False) -> Owner:
    owner = session.scalar(select(Owner).where(Owner.name == name))
    if owner is None:
        owner = Owner(id=new_id("own"), name=name, is_admin=is_admin)
        session.add(owner)
        session.flush()
    return owner


def create_key(session: Session, owner: Owner, *, label: str = "") -> str:
    """Make a new key for ``owner``; the returned secret is not stored anywhere."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiKey(
            id=new_id("key"),
            owner_id=owner.id,
            prefix=secret[:PREFIX_LENGTH],
            secret_hash=hash_secret(secret),
            label=label,
        )
    )
    session.flush()
    return secret


# Built once: every request asks it, and building the expression costs more than running it.
_OWNER_OF_KEY = (
    select(Owner)
    .join(ApiKey)
    .where(ApiKey.secret_hash == bindparam("secret_hash"), ApiKey.revoked_at.is_(None))
)


def owner_for_key(session: Session, secret: str) -> Owner | None:
    """The owner a live key belongs to, or None for an unknown or revoked key."""
    return session.scalar(_OWNER_OF_KEY, {"secret_hash": hash_secret(secret)})


def live_keys(session: Session, owner: Owner) -> list[ApiKey]:
    """The owner's keys not revoked, oldest first (their prefixes name them)."""
    return list(
        session.scalars(
            select(ApiKey)
            .where(ApiKey.owner_id == owner.id, ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.created_at, ApiKey.id)
        )
    )


def revoke_key(session: Session, owner: Owner, key: str) -> bool:
    """Revoke the owner's live key given whole, or by its first :data:`PREFIX_LENGTH`
    characters or more (as much of it as was copied); False when no live key of the
    owner's is that one. Raises ValueError for fewer characters, which could name
    another key."""
    if len(key) < PREFIX_LENGTH:
        raise ValueError(f"give the key, or at least its first {PREFIX_LENGTH} characters")
    live = select(ApiKey).where(ApiKey.owner_id == owner.id, ApiKey.revoked_at.is_(None))
    found = session.scalar(live.where(ApiKey.secret_hash == hash_secret(key))) or session.scalar(
        live.where(ApiKey.prefix == key[:PREFIX_LENGTH])
    )
    if found is None:
        return False
    found.revoked_at = utcnow()
    return True
