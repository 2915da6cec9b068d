"""What a page loads besides itself, with the session cookie instead of a bearer key
(neither ``EventSource`` nor ``<audio>`` can send one): the live events of the jobs a
page shows, and an artifact's bytes.

``GET /live?job=…&job=…`` follows several jobs in one Server-Sent Events stream, so a
list of twenty running jobs costs one connection, not twenty (browsers allow six per
host). Each job is followed by the API's own event hub, from the start of its stream:
a page that opens late or reconnects gets the whole history again, and the script
drops entries it has seen by their ids. When every job has ended the stream says
``end`` and the script closes it, so the browser does not reconnect.

A job the viewer cannot see (deleted since the page was drawn, or never theirs) is
ended at once with a ``deleted`` event, and the others are followed as usual: a
browser reconnecting after one job of a list was deleted must not lose the whole
list to a 404 (``EventSource`` does not retry one).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from longplay.api import content, standing
from longplay.api.deps import in_store
from longplay.api.followers import EventHub
from longplay.api.routes.events import next_entries
from longplay.dashboard import sessions
from longplay.dashboard.sessions import Viewer
from longplay.dashboard.web import PageRoute, as_viewer, session_token
from longplay.jobs import refusals, service
from longplay.jobs.events import TERMINAL_EVENTS, make_event
from longplay.store import files
from longplay.store.models import Artifact, Job, JobStatus
from longplay.store.views import ErrorPublic

router = APIRouter(route_class=PageRoute, include_in_schema=False)
MAX_FOLLOWED = 50


async def _ended(job_id: str) -> dict[str, Any] | None:
    """The job's last event, from the store, if it has ended (or is gone)."""
    job = await in_store(lambda session: session.get(Job, job_id))
    if job is None:
        return make_event("deleted", job_id)
    if not JobStatus(job.status).finished:
        return None
    error = ErrorPublic.told(job.error).model_dump() if job.error else None
    return make_event(job.status, job.id, status=job.status, progress=job.progress, error=error)


async def _follow(hub: EventHub, job_id: str, out: asyncio.Queue[dict[str, Any]]) -> None:
    """Put the job's events on ``out`` (each with its stream ``id``) until it ends."""
    async with hub.follow(job_id, "0-0") as follower:
        while not hub.stopping:
            entries = await next_entries(hub, follower)
            for entry_id, data in entries:
                if not follower.is_new(entry_id):
                    continue
                follower.cursor = entry_id
                event = json.loads(data)
                await out.put({**event, "id": entry_id})
            # An ending followed by more (a failed job retried) is not the end.
            if entries and json.loads(entries[-1][1])["type"] in TERMINAL_EVENTS:
                return
            if entries:
                continue
            try:
                final = await _ended(job_id)
            except SQLAlchemyError:  # an outage ends no stream: the next round asks again
                continue
            if final is not None:
                await out.put(final)
                return


async def followed(
    request: Request, job: Annotated[list[str], Query(max_length=MAX_FOLLOWED)]
) -> dict[str, bool]:
    """The jobs named, each with whether the viewer may follow it (checked before the
    stream starts, in one store call); the others are told as deleted, so another
    owner's job looks the same as one that is gone."""

    def visible(session: Session, viewer: Viewer) -> dict[str, bool]:
        found = session.execute(
            select(Job.id).where(Job.id.in_(set(job)), Job.owner_id == viewer.owner.id)
        )
        mine = set(found.scalars())
        return {j: j in mine for j in dict.fromkeys(job)}

    return await as_viewer(request, visible)


async def _still_signed_in(request: Request) -> bool:
    """Whether the viewer who opened the stream has not signed out (nor had the key
    revoked) since (:mod:`longplay.api.standing`)."""
    token = session_token(request) or ""

    def signed_in(session: Session) -> bool:
        try:
            sessions.viewer(session, token)
        except sessions.SignInNeeded:
            return False
        return True

    return await standing.holds(f"session:{token}", lambda: in_store(signed_in))


@router.get("/live", response_class=EventSourceResponse)
async def live(
    request: Request, job_ids: Annotated[dict[str, bool], Depends(followed)]
) -> AsyncIterator[ServerSentEvent]:
    """Events of your jobs named by ``job``; ``end`` once every one has ended."""
    hub: EventHub = request.app.state.event_hub
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for gone in (j for j, mine in job_ids.items() if not mine):
        queue.put_nowait(make_event("deleted", gone))
    tasks = [asyncio.create_task(_follow(hub, j, queue)) for j, mine in job_ids.items() if mine]
    try:
        while not all(t.done() for t in tasks) or not queue.empty():
            if hub.stopping or await request.is_disconnected():
                return  # stopping: the page reconnects to the next process
            if not await _still_signed_in(request):
                return
            try:
                event = await asyncio.wait_for(queue.get(), 1.0)
            except TimeoutError:
                for task in tasks:  # a follower that broke: its error, not a silent stall
                    if task.done() and (problem := task.exception()) is not None:
                        raise problem from None
                continue
            yield ServerSentEvent(data=event)
        if not hub.stopping:  # the followers stopped with the process, not with their jobs
            yield ServerSentEvent(data={"type": "end"}, event="end")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@router.get("/files/{artifact_id}", response_class=Response)
async def file(request: Request, artifact_id: str) -> Response:
    """An artifact's bytes for a player or a download link (Range, ETag, as the API)."""
    artifact: Artifact = await as_viewer(
        request,
        lambda session, viewer: service.get_artifact(
            session, owner=viewer.owner, artifact_id=artifact_id
        ),
    )
    path = files.path_of(artifact)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise refusals.NotFound(f"the file of artifact {artifact_id} is gone") from None
    response = content.file_response(
        request,
        path,
        size=size,
        etag=f'"{artifact.sha256}"',
        media_type=artifact.media_type,
        name=artifact.name,
    )
    response.headers.update(files.SERVED_FILE_HEADERS)
    return response
