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
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from longplay import __version__
from longplay.store.models import Owner, new_webhook_secret

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
    secret: str, msg_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """Every header of one attempt; the timestamp is the attempt's, not the event's."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "user-agent": f"longplay/{__version__}",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }


def encode(payload: Mapping[str, Any]) -> bytes:
    """The exact body bytes that are signed and sent (compact JSON)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def rotate_secret(session: Session, owner: Owner) -> str:
    """Give the owner a new signing secret, committed; messages sent from now on use it."""
    owner.webhook_secret = new_webhook_secret()
    session.commit()
    return owner.webhook_secret
