"""Webhooks: signed POSTs to a job's ``callback_url`` when it starts, progresses and ends.

A message is a :class:`~longplay.store.models.WebhookDelivery` row, added by
:func:`enqueue` in the same transaction that changes the job, and handed to the
``longplay.deliver_webhook`` task once that transaction commits; a beat sweep
hands out again whatever is due and was not sent (a lost message, a dead worker),
so a committed delivery is never lost. Messages are signed as the Standard
Webhooks spec says (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``)
with the owner's ``whsec_`` secret. A receiver that does not answer 2xx is tried
again with exponential backoff and jitter (or after its ``Retry-After`` on 429 and
503) up to ``webhook_max_attempts``; a 4xx other than 408 and 429, or a redirect,
ends the delivery at once.

Only ``http`` and ``https`` URLs are sent to; private and loopback addresses are
not refused, so a deployment that takes callback URLs from untrusted owners should
send its workers' outbound traffic through a filtering proxy (``HTTPS_PROXY``).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import and_, event, or_, select, update
from sqlalchemy.orm import Session

from longplay import __version__
from longplay.config import Settings, get_settings
from longplay.store.db import affected, session_scope
from longplay.store.models import (
    Artifact,
    ArtifactRole,
    Job,
    JobStatus,
    Owner,
    WebhookDelivery,
    new_id,
    new_webhook_secret,
    utcnow,
)

log = logging.getLogger(__name__)

OPTIONAL_EVENTS = frozenset({"started", "progress"})
"""Events sent only when the submitter asked for them in ``callback_events``."""
FINAL_EVENTS = frozenset(
    {
        s.value
        for s in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED)
    }
)
SECRET_PREFIX = "whsec_"
SCHEMES = ("http", "https")

PENDING, SENDING, DELIVERED, FAILED = "pending", "sending", "delivered", "failed"
SUPERSEDED = "superseded"
"""A progress message not sent yet when its job ended; it never will be."""
HOLD = 0.5
"""Seconds a final message waits while an earlier one about its job is on the wire."""

_AFTER_COMMIT = "longplay.webhooks.after_commit"
EARLY_TOLERANCE = timedelta(seconds=0.25)
"""A retry message may arrive this much before its time (clocks differ) and still go."""


# -- signing (Standard Webhooks, symmetric) ------------------------------------------


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


# -- making messages -----------------------------------------------------------------


def wants(job: Job, event_name: str) -> bool:
    """Whether the job's submitter gets a webhook for this event (no I/O)."""
    if not job.callback_url:
        return False
    if event_name in OPTIONAL_EVENTS:
        return event_name in (job.callback_events or [])
    return event_name in FINAL_EVENTS


def enqueue(
    session: Session | None,
    job: Job | str,
    event_name: str,
    *,
    progress: Mapping[str, Any] | None = None,
) -> str | None:
    """Add a delivery of ``job.<event_name>`` for ``job`` if its submitter wants one.

    In ``session`` (the transaction that changed the job; it is read back there, so
    the message shows the change), or in a transaction of its own with None. The
    message is handed to a worker once that transaction commits. ``job`` is a row
    (its callback fields, even stale, let most calls end here without a query) or an
    id. ``progress`` is the reporter's latest snapshot, fresher than the store.
    Returns the delivery id. A final event supersedes the job's progress messages
    not sent yet.
    """
    if isinstance(job, Job) and not wants(job, event_name):
        return None
    if session is None:
        with session_scope() as own:
            return enqueue(own, job, event_name, progress=progress)
    job_id = job.id if isinstance(job, Job) else job
    fresh = session.get(Job, job_id, populate_existing=True)
    if fresh is None or not wants(fresh, event_name):
        return None
    data = job_data(session, fresh)
    if progress is not None:
        data.update(
            progress=progress["progress"],
            current_step=progress["step"],
            step_details=progress["step_details"],
            eta_seconds=progress["eta_seconds"],
        )
    if event_name in FINAL_EVENTS:
        session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.job_id == fresh.id,
                WebhookDelivery.event == "progress",
                WebhookDelivery.status == PENDING,
            )
            .values(status=SUPERSEDED, next_attempt_at=None)
            .execution_options(synchronize_session=False)
        )
    now = utcnow()
    delivery = WebhookDelivery(
        id=new_id("msg"),
        job_id=fresh.id,
        event=event_name,
        url=fresh.callback_url,
        payload={"type": f"job.{event_name}", "timestamp": now.isoformat(), "data": data},
        status=PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(delivery)
    session.info.setdefault(_AFTER_COMMIT, []).append(delivery.id)
    return delivery.id


def job_data(session: Session, job: Job) -> dict[str, Any]:
    """The job as ``GET /v1/jobs/{id}`` shows it (outputs included once completed)."""
    from longplay.api.schemas import JobPublic

    outputs = (
        list(
            session.scalars(
                select(Artifact)
                .where(Artifact.job_id == job.id, Artifact.role == ArtifactRole.OUTPUT.value)
                .order_by(Artifact.created_at, Artifact.id)
            )
        )
        if job.status == JobStatus.COMPLETED.value
        else None
    )
    data = JobPublic.of(job, outputs=outputs).model_dump(mode="json")
    data.pop("queue_position", None)
    return data


@event.listens_for(Session, "after_commit")
def _send_committed(session: Session) -> None:
    for delivery_id in session.info.pop(_AFTER_COMMIT, ()):
        send(delivery_id)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


def send(delivery_id: str, *, countdown: float | None = None) -> None:
    """Hand a committed delivery to a worker (upkeep queue); the sweep covers a failure."""
    from longplay import keys
    from longplay.queue.app import DELIVER_WEBHOOK, celery_app

    try:
        celery_app.send_task(
            DELIVER_WEBHOOK, args=[delivery_id], queue=keys.UPKEEP_QUEUE, countdown=countdown
        )
    except Exception as exc:  # the broker blinked: the sweep sends it later
        log.warning("webhook %s: not handed to a worker (%s); the sweep will", delivery_id, exc)


class ProgressWebhooks:
    """Sends a running job's progress at a bounded rate: at most one message per
    ``interval`` seconds and per whole percent gained, none at 100 % (the final
    message says that)."""

    def __init__(self, job: Job, *, interval: float, clock: Callable[[], float] = time.monotonic):
        self._job = job
        self._interval = interval
        self._clock = clock
        self._last_at: float | None = None
        self._last_percent = -1

    def offer(self, snapshot: Mapping[str, Any]) -> None:
        percent = int(snapshot["progress"])
        if percent >= 100 or percent <= self._last_percent:
            return
        now = self._clock()
        if self._last_at is not None and now - self._last_at < self._interval:
            return
        self._last_at, self._last_percent = now, percent
        try:
            enqueue(None, self._job, "progress", progress=snapshot)
        except Exception as exc:  # a progress message is not worth failing the job for
            log.warning("job %s: progress webhook not stored: %s", self._job.id, exc)


def progress_webhooks(job: Job, settings: Settings) -> ProgressWebhooks | None:
    """A :class:`ProgressWebhooks` if the submitter asked for progress, else None."""
    if not wants(job, "progress"):
        return None
    return ProgressWebhooks(job, interval=settings.webhook_progress_interval)


# -- sending -------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """How one attempt went: the receiver's status code, or the error that stopped it."""

    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None

    @property
    def accepted(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def final(self) -> bool:
        """Trying again cannot help: a client error (but 408, 429) or a redirect."""
        code = self.status_code
        return code is not None and (
            300 <= code < 400 or (400 <= code < 500 and code not in (408, 429))
        )


def post(url: str, body: bytes, headers: Mapping[str, str], *, timeout: float) -> Answer:
    """One POST; never raises for what the receiver or the network does."""
    if httpx.URL(url).scheme not in SCHEMES:
        return Answer(error="only http and https callback URLs are sent to")
    try:
        response = httpx.post(
            url, content=body, headers=dict(headers), timeout=timeout, follow_redirects=False
        )
    except httpx.HTTPError as exc:
        return Answer(error=f"{type(exc).__name__}: {exc}"[:500])
    error = None
    if not 200 <= response.status_code < 300:
        error = f"HTTP {response.status_code}: {response.text[:200]}"
    retry_after = (
        parse_retry_after(response.headers.get("retry-after"))
        if response.status_code in (429, 503)
        else None
    )
    return Answer(status_code=response.status_code, error=error, retry_after=retry_after)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def backoff(attempts: int, settings: Settings) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: four times longer
    each time from ``webhook_retry_base``, with ±25 % jitter, capped."""
    delay = settings.webhook_retry_base * 4 ** (attempts - 1)
    return min(settings.webhook_retry_max, delay * random.uniform(0.75, 1.25))


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
                next_attempt_at=now + timedelta(seconds=settings.webhook_timeout + 30),
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
        secret = session.scalar(
            select(Owner.webhook_secret)
            .join(Job, Job.owner_id == Owner.id)
            .where(Job.id == row.job_id)
        )
        if secret is None:
            return None
        url, payload, attempts = row.url, row.payload, row.attempts + 1
    body = encode(payload)
    answer = post(
        url, body, headers_for(secret, delivery_id, body), timeout=settings.webhook_timeout
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
    elif answer.final or attempts >= settings.webhook_max_attempts:
        values.update(status=FAILED)
    else:
        delay = (
            min(answer.retry_after, settings.webhook_retry_max)
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
    outcome = values.get("status", f"retry in {delay:.1f}s" if delay is not None else "")
    log.info(
        "webhook %s (%s) attempt %d: %s -> %s",
        delivery_id,
        payload.get("type"),
        attempts,
        answer.status_code or answer.error,
        outcome,
    )
    return delay


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


def sweep(*, limit: int = 500) -> int:
    """Hand out pending deliveries due for a while that no task seems to carry."""
    settings = get_settings()
    due = utcnow() - timedelta(seconds=settings.webhook_sweep_interval)
    with session_scope() as session:
        ids = list(
            session.scalars(
                select(WebhookDelivery.id)
                .where(
                    WebhookDelivery.status.in_([PENDING, SENDING]),
                    WebhookDelivery.next_attempt_at <= due,
                )
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit)
            )
        )
    for delivery_id in ids:
        send(delivery_id)
    return len(ids)


# -- the owner's side ----------------------------------------------------------------


def deliveries_of(session: Session, *, owner: Owner, job_id: str) -> list[WebhookDelivery]:
    """The webhook messages about one of the owner's jobs, oldest first."""
    from longplay.jobs.service import get_job

    job = get_job(session, owner=owner, job_id=job_id)
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.job_id == job.id)
            .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
        )
    )


def rotate_secret(session: Session, owner: Owner) -> str:
    """Give the owner a new signing secret; messages sent from now on use it."""
    owner.webhook_secret = new_webhook_secret()
    session.flush()
    return owner.webhook_secret
