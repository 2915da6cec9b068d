"""The webhook outbox: a message is a row, stored with the change it tells of.

A message is a :class:`~longplay.store.models.WebhookDelivery` row. :func:`stage`, a
``staged`` hook, adds it in the same transaction that changed the job, and hands it
to a worker once that transaction commits; :func:`sweep` (beat) hands out again what
is due and was not sent (a lost message, a dead worker), so a committed message is
never lost. Progress messages come from :class:`ProgressWebhooks` at a bounded rate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from longplay.jobs.hooks import Announcement, Transaction
from longplay.jobs.webhooks import relay
from longplay.settings import Settings, get_settings
from longplay.store.db import session_scope
from longplay.store.models import (
    Job,
    JobStatus,
    WebhookDelivery,
    new_id,
    utcnow,
)
from longplay.store.queries import outputs_of
from longplay.store.views import JobPublic

log = logging.getLogger(__name__)

OPTIONAL_EVENTS = frozenset({"started", "progress"})
"""Events sent only when the submitter asked for them in ``callback_events``."""
FINAL_EVENTS = frozenset(
    {
        s.value
        for s in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED)
    }
)
WEBHOOK_EVENT = {"running": "started"}
"""Announcements whose webhook is named otherwise (``job.started`` when a run starts)."""

PENDING, SENDING, DELIVERED, FAILED = "pending", "sending", "delivered", "failed"
SUPERSEDED = "superseded"
"""A progress or started message not delivered yet when its job ended (waiting, or
waiting for its retry); it never will be: the final message says more, and comes last."""
SUPERSEDED_BY_THE_END = ("progress", "started")


def wants(job: Job, event_name: str) -> bool:
    """Whether the job's submitter gets a webhook for this event (no I/O)."""
    if not job.callback_url:
        return False
    if event_name in OPTIONAL_EVENTS:
        return event_name in (job.callback_events or [])
    return event_name in FINAL_EVENTS


def stage(tx: Transaction, announcement: Announcement) -> None:
    """The hooks' subscriber: store the webhook an announcement calls for, if any, in
    the announcing transaction, and hand it to a worker once that commits."""
    name = WEBHOOK_EVENT.get(announcement.event, announcement.event)
    if name not in FINAL_EVENTS and name not in OPTIONAL_EVENTS:
        return
    job = tx.job(announcement.job_id)  # the callback fields never change: any copy will do
    if job is None or not wants(job, name):
        return
    job_id = announcement.job_id
    delivery_id = add(tx.session, job_id, name)
    if delivery_id is not None:
        tx.after_commit(lambda: relay.send(delivery_id, job_id))


def add(
    session: Session,
    job_id: str,
    event_name: str,
    *,
    progress: Mapping[str, Any] | None = None,
) -> str | None:
    """Add a delivery of ``job.<event_name>`` if the job's submitter wants one; its id.

    The job is read in ``session`` (the transaction that changed it), so the message
    shows the change. ``progress`` is the reporter's latest snapshot, fresher than the
    store. A final event supersedes the job's progress messages not sent yet.
    """
    job = session.get(Job, job_id)  # the callback fields never change: any copy will do
    if job is None or not wants(job, event_name):
        return None
    fresh = session.get(Job, job_id, populate_existing=True)
    if fresh is None:
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
                WebhookDelivery.event.in_(SUPERSEDED_BY_THE_END),
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
    return delivery.id


def job_data(session: Session, job: Job) -> dict[str, Any]:
    """The job as ``GET /v1/jobs/{id}`` shows it (outputs included once completed)."""
    outputs = outputs_of(session, job.id) if job.status == JobStatus.COMPLETED.value else None
    data = JobPublic.of(job, outputs=outputs).model_dump(mode="json")
    data.pop("queue_position", None)
    data.pop("stalled", None)
    return data


class ProgressWebhooks:
    """Sends a running job's progress at a bounded rate: at most one message per
    ``interval`` seconds and per whole percent gained, none at 100 % (the final
    message says that)."""

    def __init__(
        self, job_id: str, *, interval: float, clock: Callable[[], float] = time.monotonic
    ):
        self._job_id = job_id
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
            with session_scope() as session:
                delivery_id = add(session, self._job_id, "progress", progress=snapshot)
        except Exception as exc:  # a progress message is not worth failing the job for
            log.warning(
                "job %s: progress webhook not stored: %s",
                self._job_id,
                exc,
                extra={"job_id": self._job_id},
            )
            return
        if delivery_id is not None:
            relay.send(delivery_id, self._job_id)


def progress_webhooks(job: Job, settings: Settings) -> ProgressWebhooks | None:
    """A :class:`ProgressWebhooks` if the submitter asked for progress, else None."""
    if not wants(job, "progress"):
        return None
    return ProgressWebhooks(job.id, interval=settings.webhooks.progress_interval)


def sweep(*, limit: int = 500) -> int:
    """Hand out pending deliveries due for a while that no task seems to carry."""
    settings = get_settings()
    due = utcnow() - timedelta(seconds=settings.webhooks.sweep_interval)
    with session_scope() as session:
        found = session.execute(
            select(WebhookDelivery.id, WebhookDelivery.job_id)
            .where(
                WebhookDelivery.status.in_([PENDING, SENDING]),
                WebhookDelivery.next_attempt_at <= due,
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        ).all()
    for delivery_id, job_id in found:
        relay.send(delivery_id, job_id)
    return len(found)
