"""Owners and their API keys; a key is shown once and stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets
import unicodedata

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from longplay.store.models import ApiKey, Owner, new_id, utcnow

KEY_PREFIX = "lp_"
KEY_BYTES = 32
"""The random bytes of a key, written after :data:`KEY_PREFIX` in URL-safe base64."""
KEY_LENGTH = len(KEY_PREFIX) + -(-KEY_BYTES * 4 // 3)
"""The characters of a whole key (46): the prefix and its bytes in unpadded base64."""
PREFIX_LENGTH = 10
"""A key's first characters, kept in the clear to name it in lists and to revoke it."""
LONGEST_PREFIX = KEY_LENGTH // 2
"""The most characters a key's start given to :func:`revoke_key` may have. A longer
text is a whole key, perhaps mistyped (a character lost or doubled), not a start:
only :data:`PREFIX_LENGTH` characters of a start can be checked, so taking such a
text as one would revoke whichever live key begins as it does."""


def hash_secret(secret: str) -> str:
    # Keys are 256-bit random tokens, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def owner_name(name: str) -> str:
    """An owner's name as it is stored: in NFC, so ``équipe`` typed composed (most
    systems) or decomposed (macOS) names one owner."""
    return unicodedata.normalize("NFC", name)


def find_owner(session: Session, name: str) -> Owner | None:
    """The owner of that name in either spelling (:func:`owner_name`), or None. An owner
    stored before names were normalised is found by its own spelling as well."""
    stored = owner_name(name)
    found = session.scalars(select(Owner).where(Owner.name.in_({stored, name}))).all()
    return min(found, key=lambda owner: owner.name != stored, default=None)


def get_or_create_owner(session: Session, name: str, *, is_admin: bool = False) -> Owner:
    owner = find_owner(session, name)
    if owner is None:
        owner = Owner(id=new_id("own"), name=owner_name(name), is_admin=is_admin)
        session.add(owner)
        session.flush()
    return owner


def create_key(session: Session, owner: Owner, *, label: str = "") -> str:
    """Make a new key for ``owner``; the returned secret is not stored anywhere."""
    secret = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
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


def is_whole_key(text: str) -> bool:
    """Whether a key given to :func:`revoke_key` is taken whole (matched exactly, by
    its hash) rather than as a key's start: it is longer than :data:`LONGEST_PREFIX`."""
    return len(text) > LONGEST_PREFIX


def revoke_key(session: Session, owner: Owner, key: str) -> bool:
    """Revoke the owner's live key given whole, or by its start: its first
    :data:`PREFIX_LENGTH` characters or more, up to :data:`LONGEST_PREFIX` (as much of
    it as ``keys list`` shows, or was copied). A longer text is a whole key
    (:func:`is_whole_key`) and revokes only the key that is exactly it, never one that
    merely begins as it does: a mistyped key revokes nothing. False when no live key
    of the owner's is the one given. Raises ValueError for fewer characters, which
    could name another key."""
    if len(key) < PREFIX_LENGTH:
        raise ValueError(f"give the key, or at least its first {PREFIX_LENGTH} characters")
    live = select(ApiKey).where(ApiKey.owner_id == owner.id, ApiKey.revoked_at.is_(None))
    if is_whole_key(key):
        found = session.scalar(live.where(ApiKey.secret_hash == hash_secret(key)))
    else:
        found = session.scalar(live.where(ApiKey.prefix == key[:PREFIX_LENGTH]))
    if found is None:
        return False
    found.revoked_at = utcnow()
    return True
