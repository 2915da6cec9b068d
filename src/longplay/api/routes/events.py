"""Live job events as Server-Sent Events, resumable with ``Last-Event-ID``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from longplay.api.deps import in_store
from longplay.api.errors import errors
from longplay.api.followers import (
    READ_BLOCK_MS,
    STOP,
    EventHub,
    Follower,
    entry_key,
    is_stream_id,
)
from longplay.api.readers import Reader, ReaderDep, as_reader, reader_holds
from longplay.jobs import refusals, service
from longplay.jobs.events import TERMINAL_EVENTS, make_event
from longplay.store.models import Job, JobStatus
from longplay.store.views import ErrorPublic

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


async def owned_job_id(job_id: str, credential: ReaderDep) -> str:
    """Checked before the stream starts, so another owner's job is a plain 404; an API
    key, or a viewer token of this job."""

    def read(session: Session, reader: Reader) -> str:
        reader.check_job(job_id)
        return service.get_job(session, owner=reader.owner, job_id=job_id).id

    return await as_reader(credential, read)


async def resume_after(
    last_event_id: Annotated[
        str | None,
        Header(description="An event's `id`: the stream resumes after that event."),
    ] = None,
) -> str:
    """Where the stream starts: after the ``Last-Event-ID`` a reconnecting client
    sends, or at the beginning. Anything but an event's id is refused, before the
    stream starts (Redis would refuse it mid-stream)."""
    if not last_event_id:
        return "0-0"
    if not is_stream_id(last_event_id):
        problem = "must be an event's id, such as 1718000000000-0"
        raise refusals.Invalid(
            f"the Last-Event-ID header {problem}",
            [{"loc": ["header", "last-event-id"], "msg": problem, "type": "last_event_id"}],
        )
    return last_event_id


ResumeAfter = Annotated[str, Depends(resume_after)]


class StreamEnded(Exception):
    """A client resumes after its stream's last event: there is nothing more to send.
    Answered ``204``, which tells ``EventSource`` to stop reconnecting."""


ENDED_RESPONSE: dict[int | str, dict[str, Any]] = {
    204: {"description": "Resumed after the stream's last event: nothing more will come."}
}


async def refuse_past_the_end(
    request: Request,
    stream_of: str,
    after: str,
    last: Collection[str],
    ended: Callable[[], Awaitable[bool]],
) -> None:
    """Raise :class:`StreamEnded` if ``after`` is the id of an end (one of ``last``), or
    of the stream's last event where that is an end, or past all the stream holds (an
    end sent from the store, see :func:`past_the_stream`), and the store says it has
    ``ended()`` (a job retried since its end runs on). A browser resumes after the
    last event it had, and without a ``204`` it would reconnect every few seconds for
    ever, sent the end each time. (Tokens a reply had in flight may follow its end in
    the stream.)"""
    # Read first, resuming or not: a Redis that does not answer is a 503 to retry here,
    # before the stream's 200 is sent (then it could only end empty).
    hub = _hub(request)
    found = await hub.last_event(stream_of)
    if after == "0-0":
        return
    if found is None or entry_key(after) > entry_key(found[0]):
        at_end = True
    elif after == found[0]:
        at_end = found[1] in last
    else:
        at_end = await hub.event_type(stream_of, after) in last
    if at_end and await ended():
        raise StreamEnded


async def past_the_stream(hub: EventHub, stream_of: str) -> str:
    """The id of an end sent from the store because the stream lacks it (the stream
    expired, or Redis lost it): just past the stream's last event, or ``0-1`` where
    there is none. A client resuming after it is past everything the stream holds,
    which :func:`refuse_past_the_end` answers with a ``204`` once the end is real."""
    found = await hub.last_event(stream_of)
    if found is None:
        return "0-1"
    ms, seq = entry_key(found[0])
    return f"{ms}-{seq + 1}"


async def _job_resume(
    job_id: Annotated[str, Depends(owned_job_id)], after: ResumeAfter, request: Request
) -> str:
    async def ended() -> bool:
        return (await _end_in_store(job_id))[0]

    await refuse_past_the_end(request, job_id, after, TERMINAL_EVENTS, ended)
    return after


def _hub(request: Request) -> EventHub:
    hub: EventHub = request.app.state.event_hub
    return hub


def _public(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored error as clients see it (no server paths in its message)."""
    return None if error is None else ErrorPublic.told(error).model_dump()


async def _end_in_store(job_id: str) -> tuple[bool, dict[str, Any] | None]:
    """Whether the store says the job has ended (or is gone), with its last event."""
    job = await in_store(lambda session: session.get(Job, job_id))
    if job is None:
        return True, None
    if not JobStatus(job.status).finished:
        return False, None
    return True, make_event(
        job.status, job.id, status=job.status, progress=job.progress, error=_public(job.error)
    )


async def next_entries(hub: EventHub, follower: Follower) -> list[tuple[str, bytes]]:
    """The entries to send next: the stream after the cursor when the follower fell
    behind, else what the hub hands over within the block time (maybe nothing)."""
    if hub.stopping:
        return []
    if follower.behind:
        return await hub.backlog(follower)
    try:
        entry = await asyncio.wait_for(follower.queue.get(), READ_BLOCK_MS / 1000)
    except TimeoutError:
        return []
    return [] if entry is STOP else [entry]


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={**ENDED_RESPONSE, **errors(401, 404)},
)
async def job_events(
    job_id: Annotated[str, Depends(owned_job_id)],
    after: Annotated[str, Depends(_job_resume)],
    credential: ReaderDep,
    request: Request,
) -> AsyncIterator[ServerSentEvent]:
    """Follow a job live: queued, running, progress…, then completed, failed or cancelled.

    Each event's ``id`` resumes the stream after it (``Last-Event-ID``). The stream
    ends after the job's last event; resuming after that event is a ``204``. A stream
    whose key is revoked ends within seconds.
    """
    hub = _hub(request)
    async with hub.follow(job_id, after) as follower:
        while not await request.is_disconnected() and await reader_holds(credential):
            entries = await next_entries(hub, follower)
            if hub.stopping:
                return  # the client resumes on the next process, from its last id
            for entry_id, data in entries:
                if not follower.is_new(entry_id):
                    continue
                follower.cursor = entry_id
                event = json.loads(data)
                yield ServerSentEvent(data=event, event=event["type"], id=entry_id)
                if event["type"] in TERMINAL_EVENTS:
                    return
            if entries:
                continue
            try:
                ended, final = await _end_in_store(job_id)
            except SQLAlchemyError:  # an outage ends no stream: the next round asks again
                continue
            if ended:  # the stream is gone or its last event was lost: the store has the end
                if final is not None:
                    past = await past_the_stream(hub, job_id)
                    yield ServerSentEvent(data=final, event=final["type"], id=past)
                return
