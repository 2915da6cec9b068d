"""Sending webhook messages: one attempt at a time, with retries and their backoff.

A receiver that does not answer 2xx is tried again with exponential backoff and
jitter (or after its ``Retry-After`` on 429 and 503) up to ``webhook_max_attempts``;
a 4xx other than 408 and 429, or a redirect, ends the delivery at once.

Only ``http`` and ``https`` URLs are sent to, and only to public addresses or the
networks the operator allows (:mod:`.addresses`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from longplay.http_time import parse_retry_after
from longplay.jobs.unit import tell
from longplay.jobs.webhooks.addresses import Network, RefusedAddress, client_for
from longplay.jobs.webhooks.outbox import (
    DELIVERED,
    FAILED,
    FINAL_EVENTS,
    PENDING,
    SENDING,
    SUPERSEDED,
    SUPERSEDED_BY_THE_END,
)
from longplay.jobs.webhooks.signing import encode, headers_for, secrets_signing
from longplay.settings import Settings, get_settings
from longplay.store.db import affected, session_scope
from longplay.store.models import Job, Owner, WebhookDelivery, utcnow

log = logging.getLogger(__name__)

SCHEMES = ("http", "https")
HOLD = 0.5
"""Seconds a final message waits while an earlier one about its job is on the wire."""
SAID_BYTES = 1024
"""Of an answer other than a 2xx, the bytes read to say what it said."""
EARLY_TOLERANCE = timedelta(seconds=0.25)
"""A retry message may arrive this much before its time (clocks differ) and still go."""


@dataclass(frozen=True)
class Answer:
    """How one attempt went: the receiver's status code, or the error that stopped it."""

    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    refused: bool = False
    """Not sent: the URL's host is not an address webhooks may go to."""

    @property
    def accepted(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def final(self) -> bool:
        """Trying again cannot help: a client error (but 408, 429), a redirect, or an
        address webhooks may not go to."""
        code = self.status_code
        return self.refused or (
            code is not None
            and (300 <= code < 400 or (400 <= code < 500 and code not in (408, 429)))
        )


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    allowed: Sequence[Network] = (),
) -> Answer:
    """One POST, to a public address or one in ``allowed``; never raises for what the
    receiver or the network does."""
    if httpx.URL(url).scheme not in SCHEMES:
        return Answer(error="only http and https callback URLs are sent to")
    try:
        with (
            client_for(url, allowed, timeout=timeout) as client,
            client.stream(
                "POST", url, content=body, headers=dict(headers), follow_redirects=False
            ) as response,
        ):
            # A 2xx says all; another answer's first bytes say why. No more is read:
            # a receiver's answer may be large, or never end.
            said = b"" if response.is_success else _start_of(response)
    except RefusedAddress as exc:
        return Answer(error=f"not sent: {exc}", refused=True)
    except httpx.HTTPError as exc:
        return Answer(error=f"{type(exc).__name__}: {exc}"[:500])
    error = None if response.is_success else _refused(response, said)
    retry_after = (
        parse_retry_after(response.headers.get("retry-after"))
        if response.status_code in (429, 503)
        else None
    )
    return Answer(status_code=response.status_code, error=error, retry_after=retry_after)


def _start_of(response: httpx.Response) -> bytes:
    """Up to :data:`SAID_BYTES` of the answer's body, as it comes (decoded)."""
    said = b""
    for chunk in response.iter_bytes():
        said += chunk
        if len(said) >= SAID_BYTES:
            break
    return said[:SAID_BYTES]


def _refused(response: httpx.Response, body: bytes) -> str:
    """What an answer other than a 2xx said: its code, the start of its body on one
    line, and where a redirect pointed (it is not followed)."""
    said = " ".join(body.decode(response.encoding or "utf-8", "replace")[:200].split())
    text = f"HTTP {response.status_code}" + (f": {said}" if said else "")
    if response.has_redirect_location:
        where = response.headers["location"][:500]
        text += f"; redirects are not followed: use the address it points to ({where})"
    return text


def backoff(attempts: int, settings: Settings) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: four times longer
    each time from ``webhook_retry_base``, with ±25 % jitter, capped."""
    delay = settings.webhooks.retry_base * 4 ** (attempts - 1)
    return min(settings.webhooks.retry_max, delay * random.uniform(0.75, 1.25))


def deliver(delivery_id: str) -> float | None:
    """Make one attempt at a due delivery. Returns the seconds until the next attempt,
    or None when there is none to schedule (delivered, given up, not due, or being
    sent by another worker)."""
    settings = get_settings()
    now = utcnow()
    with session_scope() as session:
        # Claim it (or take over one whose sender died mid-attempt): while it is being
        # sent, next_attempt_at holds the attempt's lease, so nobody else sends it.
        claimed = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                or_(
                    and_(
                        WebhookDelivery.status == PENDING,
                        or_(
                            WebhookDelivery.next_attempt_at.is_(None),
                            WebhookDelivery.next_attempt_at <= now + EARLY_TOLERANCE,
                        ),
                    ),
                    and_(WebhookDelivery.status == SENDING, WebhookDelivery.next_attempt_at <= now),
                ),
            )
            .values(
                status=SENDING,
                next_attempt_at=now + timedelta(seconds=settings.webhooks.timeout + 30),
            )
            .execution_options(synchronize_session=False)
        )
        if not affected(claimed):
            return None
        row = session.get(WebhookDelivery, delivery_id)
        if row is None:
            return None
        if row.event in FINAL_EVENTS and _other_on_the_wire(session, row, now):
            row.status, row.next_attempt_at = PENDING, now + timedelta(seconds=HOLD)
            return HOLD
        if row.event in SUPERSEDED_BY_THE_END and _ended_since(session, row):
            # Its job ended while it was on the wire (the end superseded only the
            # messages waiting then): nothing but the final after the end.
            row.status, row.next_attempt_at = SUPERSEDED, None
            return None
        owner = session.scalar(
            select(Owner).join(Job, Job.owner_id == Owner.id).where(Job.id == row.job_id)
        )
        if owner is None:
            return None
        secret, also = secrets_signing(owner, now, settings.webhooks.secret_overlap)
        url, payload, attempts, job_id = row.url, row.payload, row.attempts + 1, row.job_id
    body = encode(payload)
    answer = post(
        url,
        body,
        headers_for(secret, delivery_id, body, also=also),
        timeout=settings.webhooks.timeout,
        allowed=settings.webhooks.allowed_networks,
    )
    delay: float | None = None
    values: dict[str, Any] = {
        "attempts": attempts,
        "last_status_code": answer.status_code,
        "last_error": answer.error,
        "next_attempt_at": None,
    }
    if answer.accepted:
        values.update(status=DELIVERED, delivered_at=utcnow())
    elif answer.final or attempts >= settings.webhooks.max_attempts:
        values.update(status=FAILED)
    else:
        delay = (
            min(answer.retry_after, settings.webhooks.retry_max)
            if answer.retry_after is not None
            else backoff(attempts, settings)
        )
        values.update(status=PENDING, next_attempt_at=utcnow() + timedelta(seconds=delay))
    with session_scope() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == SENDING)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    # Told (not stored): the job's event stream and the metrics hear how the attempt went.
    tell(
        "webhook",
        job_id,
        delivery_id=delivery_id,
        webhook_event=payload.get("type"),
        delivery_attempt=attempts,
        outcome="retrying" if delay is not None else values["status"],
        status_code=answer.status_code,
    )
    outcome = values.get("status", f"retry in {delay:.1f}s" if delay is not None else "")
    log.info(
        "webhook %s (%s) attempt %d: %s -> %s",
        delivery_id,
        payload.get("type"),
        attempts,
        answer.status_code or answer.error,
        outcome,
        extra={"job_id": job_id},
    )
    return delay


def _ended_since(session: Session, row: WebhookDelivery) -> bool:
    """Whether a final message of ``row``'s job was made after ``row`` was."""
    return bool(
        session.scalar(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.job_id == row.job_id,
                WebhookDelivery.event.in_(FINAL_EVENTS),
                WebhookDelivery.created_at >= row.created_at,
            )
            .limit(1)
        )
    )


def _other_on_the_wire(session: Session, row: WebhookDelivery, now: datetime) -> bool:
    """Whether another message about the same job is being sent right now (so that
    the final message arrives after it); one whose sender died holds it no longer
    than that attempt's lease."""
    return bool(
        session.scalar(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.job_id == row.job_id,
                WebhookDelivery.status == SENDING,
                WebhookDelivery.next_attempt_at > now,
                WebhookDelivery.id != row.id,
            )
            .limit(1)
        )
    )
