"""Signing webhook messages as Standard Webhooks says, and the owner's secret.

Each message carries ``webhook-id`` (the same on every retry), ``webhook-timestamp``
(the attempt's) and ``webhook-signature``: ``v1,`` and a base64 HMAC-SHA256 over
``{id}.{timestamp}.{body}`` keyed with the owner's ``whsec_`` secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from longplay import __version__
from longplay.store.models import Owner, new_webhook_secret, utcnow

SECRET_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret: the bytes the base64 part encodes."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: ``v1,`` and base64 of HMAC-SHA256 over
    ``{msg_id}.{timestamp}.{body}``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers_for(
    secret: str,
    msg_id: str,
    body: bytes,
    *,
    timestamp: int | None = None,
    also: Sequence[str] = (),
) -> dict[str, str]:
    """Every header of one attempt; the timestamp is the attempt's, not the event's.
    ``also``: other secrets that sign it too (the one before a recent rotation), each a
    signature of its own in the header, space-separated, as Standard Webhooks allows."""
    ts = int(time.time()) if timestamp is None else timestamp
    signatures = [sign(s, msg_id, ts, body) for s in (secret, *also)]
    return {
        "content-type": "application/json",
        "user-agent": f"longplay/{__version__}",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(signatures),
    }


def secrets_signing(owner: Owner, now: datetime, overlap: float) -> tuple[str, list[str]]:
    """The owner's secret, and the one before it while it still signs (within
    ``overlap`` seconds of the rotation)."""
    previous, rotated = owner.previous_webhook_secret, owner.webhook_secret_rotated_at
    if previous and rotated is not None and now - rotated < timedelta(seconds=overlap):
        return owner.webhook_secret, [previous]
    return owner.webhook_secret, []


def previous_signs_until(owner: Owner, overlap: float) -> datetime | None:
    """When the secret before the last rotation stops signing; None if it no longer does."""
    rotated = owner.webhook_secret_rotated_at
    if not owner.previous_webhook_secret or rotated is None:
        return None
    until = rotated + timedelta(seconds=overlap)
    return until if until > utcnow() else None


def encode(payload: Mapping[str, Any]) -> bytes:
    """The exact body bytes that are signed and sent (compact JSON)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def rotate_secret(session: Session, owner: Owner) -> str:
    """Give the owner a new signing secret, committed; messages sent from now on are
    signed with it, and with the one it replaces for a while (:func:`secrets_signing`)."""
    owner.previous_webhook_secret = owner.webhook_secret
    owner.webhook_secret = new_webhook_secret()
    owner.webhook_secret_rotated_at = utcnow()
    session.commit()
    return owner.webhook_secret
