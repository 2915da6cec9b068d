"""Live job events as Server-Sent Events, resumable with ``Last-Event-ID``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import redis
import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, Header, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from longplay import keys
from longplay.api.deps import OwnerDep, SessionDep
from longplay.jobs import service
from longplay.jobs.events import make_event
from longplay.settings import get_settings
from longplay.store.db import session_scope
from longplay.store.models import Job, JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled", "stopped", "expired"})
BLOCK_MS = 5000


def _job_status(job_id: str) -> Job | None:
    with session_scope() as session:
        return session.get(Job, job_id)


def _final_event(job: Job) -> dict[str, Any]:
    return make_event(job.status, job.id, status=job.status, progress=job.progress, error=job.error)


def owned_job_id(job_id: str, session: SessionDep, owner: OwnerDep) -> str:
    """Checked before the stream starts, so another owner's job is a plain 404."""
    found = service.get_job(session, owner=owner, job_id=job_id).id
    # The request's session lives as long as the stream (hours, maybe): give its
    # connection back to the pool now, or a few dozen followers starve the API.
    session.commit()
    return found


@router.get("/{job_id}/events", response_class=EventSourceResponse)
async def job_events(
    job_id: Annotated[str, Depends(owned_job_id)],
    request: Request,
    last_event_id: Annotated[str | None, Header()] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Follow a job live: queued, running, progress…, then completed, failed or cancelled.

    Each event's ``id`` resumes the stream after it (``Last-Event-ID``). The stream
    ends after the job's last event.
    """
    # The socket must outwait the blocking read (redis-py's default timeout is 5 s).
    client = aioredis.Redis.from_url(
        get_settings().effective_redis_url, socket_timeout=BLOCK_MS / 1000 + 10
    )
    stream = keys.events_stream(job_id)
    cursor = last_event_id or "0-0"
    try:
        while not await request.is_disconnected():
            try:
                batch: Any = await client.xread({stream: cursor}, count=100, block=BLOCK_MS)
            except redis.RedisError:  # Redis is restarting: the store still knows the end
                await asyncio.sleep(1)
                batch = None
            entries = batch[0][1] if batch else []
            for entry_id, fields in entries:
                cursor = entry_id.decode()
                event = json.loads(fields[b"data"])
                yield ServerSentEvent(data=event, event=event["type"], id=cursor)
                if event["type"] in TERMINAL_EVENTS:
                    return
            if not entries:
                current = await run_in_threadpool(_job_status, job_id)
                if current is None:
                    return
                if JobStatus(current.status).finished:
                    # The stream is gone or its last event was lost: the store has the end.
                    yield ServerSentEvent(data=_final_event(current), event=current.status)
                    return
    finally:
        await client.aclose()
