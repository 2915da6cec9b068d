"""A flow's side of its jobs' announcements: one event stream, and its end.

Every announcement about a job of a flow is appended, with its stage's name, to the
flow's own Redis stream (the API follows it as it follows a job's, resumable by
``Last-Event-ID``). When a job of a flow ends, the flow ends if it was the last one:
``finished_at`` is set under a lock on the flow's row, so two jobs ending at once
cannot both end it, and the flow's webhook is stored with that change (the outbox).
Should that end be lost (the process died after the last job's change committed), beat's
:func:`sweep` ends the flows whose jobs have all ended, the same way and so only once.
A stage of an ended flow that is retried opens it again (:func:`reopen`): it then ends
anew, with a new ``flow_ended`` event and webhook, once its stages have all ended again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import redis
from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from longplay import keys
from longplay.framework import get_kind
from longplay.jobs import events
from longplay.jobs.dependencies import ENDINGS, SWEEP_AT_MOST, UNENDED, OpenUnit
from longplay.jobs.hooks import Announcement, Transaction
from longplay.jobs.webhooks import outbox, relay
from longplay.redis_client import get_redis
from longplay.settings import get_settings
from longplay.store.db import affected, session_scope
from longplay.store.models import Flow, Job, WebhookDelivery, new_id, utcnow
from longplay.store.queries import outputs_of_many
from longplay.store.views import FlowPublic, FlowStatus, JobPublic

log = logging.getLogger(__name__)

FLOW_ENDED = "flow_ended"
"""The last event of a flow's stream; its ``status`` says how it ended."""


def kind_steps(kinds: Iterable[str]) -> dict[str, int]:
    """Each kind's number of steps (a stage's weight in its flow's progress)."""
    found: dict[str, int] = {}
    for name in kinds:
        kind = get_kind(name)
        found[name] = len(kind.steps) if kind is not None else 1
    return found


@lru_cache(maxsize=4096)
def flow_of(job_id: str) -> tuple[str, str] | None:
    """The flow and stage of a job, or None; both never change, so they are kept."""
    with session_scope() as session:
        row = session.execute(select(Job.flow_id, Job.stage).where(Job.id == job_id)).first()
    if row is None or row.flow_id is None:
        return None
    return row.flow_id, row.stage or ""


def flow_view(session: Session, flow: Flow) -> FlowPublic:
    """The flow as ``GET /v1/flows/{id}`` shows it, read in ``session``."""
    jobs = list(
        session.scalars(select(Job).where(Job.flow_id == flow.id).order_by(Job.created_at, Job.id))
    )
    outputs = outputs_of_many(session, [j.id for j in jobs if j.status == "completed"])
    shown = [JobPublic.of(j, outputs=outputs.get(j.id)) for j in jobs]
    return FlowPublic.of(flow, shown, kind_steps(j.kind for j in jobs))


def copy(announcement: Announcement) -> None:
    """The hooks' subscriber that copies a flow job's announcement to the flow's stream.

    It hears all of a unit's announcements before :func:`end` hears the first (the
    hooks run one subscriber over them all, then the next): a flow cancelled whole ends
    its stages in one unit, and its end must come after every stage's cancel."""
    found = _flow_and_stage(announcement)
    if found is not None:
        flow_id, stage = found
        data = announcement.data
        _append(
            flow_id, {**_event(announcement.event, announcement.job_id), "stage": stage, **data}
        )


def end(announcement: Announcement, *, open_unit: OpenUnit) -> None:
    """The hooks' subscriber that ends a flow once the job that ended was its last."""
    found = _flow_and_stage(announcement) if announcement.event in ENDINGS else None
    if found is not None:
        ended = _end_if_last(found[0], announcement.job_id, open_unit)
        if ended is not None:
            _announce_end(found[0], ended, open_unit)


def _flow_and_stage(announcement: Announcement) -> tuple[str, str] | None:
    job = announcement.job
    if job is None:
        return flow_of(announcement.job_id)
    # The announcer's copy says, without a query.
    return None if job.flow_id is None else (job.flow_id, job.stage or "")


def sweep(open_unit: OpenUnit, *, limit: int = SWEEP_AT_MOST) -> int:
    """Beat's safety net: end the flows still running whose jobs have all ended; how
    many this call ended."""
    with open_unit() as unit:
        session = unit.session
        open_flows = (
            select(Flow.id)
            .where(
                Flow.finished_at.is_(None),
                exists().where(Job.flow_id == Flow.id),
                ~exists().where(Job.flow_id == Flow.id, Job.status.in_(UNENDED)),
            )
            .order_by(Flow.created_at, Flow.id)
            .limit(limit)
        )
        found = list(session.scalars(open_flows))
    ended = 0
    for flow_id in found:
        with open_unit() as unit:
            last = unit.session.scalar(
                select(Job.id)
                .where(Job.flow_id == flow_id)
                .order_by(Job.finished_at.desc().nulls_last(), Job.id.desc())
                .limit(1)
            )
        if last is None:
            continue
        end = _end_if_last(flow_id, last, open_unit)
        if end is not None:
            _announce_end(flow_id, end, open_unit)
            ended += 1
    return ended


def reopen(tx: Transaction, flow_id: str) -> None:
    """A stage of the flow is queued or waiting again (a retry), in ``tx``: if the flow
    had ended, it is running again, so that it ends again when its stages have.

    Its end (``finished_at``, ``ended_as``) clears with the retry's change. The
    ``flow_ended`` events its stream holds now are read before the commit (so only the
    old ones) and deleted after it: a client that follows the stream from its start
    reads on to the new end instead of stopping at the old one.
    """
    reopened = tx.session.execute(
        update(Flow)
        .where(Flow.id == flow_id, Flow.finished_at.is_not(None))
        .values(finished_at=None, ended_as=None)
        .execution_options(synchronize_session=False)
    )
    if not affected(reopened):
        return
    events.drop_after_commit(tx, keys.events_stream(flow_id), frozenset({FLOW_ENDED}))


def _event(event_type: str, job_id: str | None) -> dict[str, Any]:
    return {"type": event_type, "job_id": job_id, "at": datetime.now(UTC).isoformat()}


@dataclass(frozen=True)
class Ending:
    """How a flow ended, as this process ended it."""

    status: str
    progress: float
    finished_at: datetime
    """The flow's ``finished_at`` as this end set it: a retry clears it, another end
    sets another."""


def _announce_end(flow_id: str, end: Ending, open_unit: OpenUnit) -> None:
    """Append the flow's ``flow_ended``, and take it back if the flow is no longer the
    one this end ended: a retry reopened it between the end's commit and this append.
    The retry removes the ends it finds in the stream (:func:`reopen`), but it looked
    before this one was there; followers must not stop at it."""
    event = {**_event(FLOW_ENDED, None), "flow_id": flow_id, "status": end.status}
    entry = _append(flow_id, {**event, "progress": end.progress})
    if entry is None:
        return
    with open_unit() as unit:
        now = unit.session.scalar(select(Flow.finished_at).where(Flow.id == flow_id))
    if now != end.finished_at:  # both aware (UTCDateTime): cleared, or ended anew
        events.delete_entries(keys.events_stream(flow_id), [entry])


def _end_if_last(flow_id: str, job_id: str, open_unit: OpenUnit) -> Ending | None:
    """End the flow if every job of it ended; how it ended, if this call ended it."""
    with open_unit() as unit:
        session = unit.session
        # Locks the row: a second job ending at once waits here, then sees this one ended.
        locked = session.execute(
            update(Flow)
            .where(Flow.id == flow_id, Flow.finished_at.is_(None))
            .values(callback_url=Flow.callback_url)
            .execution_options(synchronize_session=False)
        )
        if not affected(locked):
            return None
        flow = session.get(Flow, flow_id, populate_existing=True)
        if flow is None:
            return None
        view = flow_view(session, flow)
        if view.status == FlowStatus.RUNNING:
            return None
        # When its last stage ended, as the view showed it while this end was recorded.
        finished = flow.finished_at = view.finished_at = view.finished_at or utcnow()
        flow.ended_as = view.status.value
        if flow.callback_url:
            delivery_id = _add_webhook(session, flow, job_id, view)
            unit.after_commit(lambda: relay.send(delivery_id, job_id))
    return Ending(view.status.value, view.progress, finished)


def _add_webhook(session: Session, flow: Flow, job_id: str, view: FlowPublic) -> str:
    """The flow's one webhook, ``flow.<status>``, stored with the change that ended it
    (as a message about the job that ended last, whose owner's secret signs it)."""
    now = utcnow()
    event = f"flow.{view.status.value}"
    delivery = WebhookDelivery(
        id=new_id("msg"),
        job_id=job_id,
        event=event,
        url=flow.callback_url,
        payload={"type": event, "timestamp": now.isoformat(), "data": view.model_dump(mode="json")},
        status=outbox.PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(delivery)
    return delivery.id


def keep_flow_webhooks(session: Session, job_id: str, flow_id: str) -> None:
    """Before ``job_id`` is deleted: its flow's webhook not delivered yet, stored as a
    message about it (:func:`_add_webhook`), goes on as one about another stage of the
    flow, which outlives this one. With no stage left, the flow goes, and it too."""
    other = session.scalar(
        select(Job.id)
        .where(Job.flow_id == flow_id, Job.id != job_id)
        .order_by(Job.finished_at.desc(), Job.id)
        .limit(1)
    )
    if other is None:
        return
    session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.job_id == job_id,
            WebhookDelivery.event.startswith("flow."),
            WebhookDelivery.status.in_([outbox.PENDING, outbox.SENDING]),
        )
        .values(job_id=other)
        .execution_options(synchronize_session=False)
    )


def _append(flow_id: str, event: dict[str, Any]) -> bytes | None:
    """Append to the flow's stream; the entry's id, or None where Redis did not take it
    (a lost live event is acceptable: the store has it) or the flow, or the job the
    event is about, was deleted (:func:`events.forget_job`: a late event of either must
    not bring their data back)."""
    stream = keys.events_stream(flow_id)
    ttl = get_settings().retention.event_retention_seconds
    try:
        about = [flow_id, *([event["job_id"]] if event.get("job_id") else [])]
        entry: Any = events.append(get_redis(), stream, event, about=about, ttl=ttl)
    except redis.RedisError as exc:
        log.warning("could not publish %s event for flow %s: %s", event["type"], flow_id, exc)
        return None
    return None if entry is None else _as_bytes(entry)


def _as_bytes(entry: Any) -> bytes:
    return entry if isinstance(entry, bytes) else str(entry).encode()
