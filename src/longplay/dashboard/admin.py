"""Pages for admin keys: the worker processes (what each has loaded and last ran), the
queues (broker queues, held jobs, what admission hands over next) and the owners (tier,
limits, jobs running and waiting).

An owner who is not an admin gets the same 404 as for a page that does not exist.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from longplay.api.routes.meta import read_workers
from longplay.dashboard.sessions import Viewer
from longplay.dashboard.web import PageRoute, as_viewer, render
from longplay.jobs import refusals
from longplay.jobs.admission.limits import limits_of
from longplay.jobs.admission.overview import queues
from longplay.redis_client import get_redis
from longplay.store.models import Job, JobStatus, Owner

COUNTED = (JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.WAITING)

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _admin(session: Session, viewer: Viewer) -> Viewer:
    if not viewer.owner.is_admin:
        raise refusals.NotFound("no such page")
    return viewer


@router.get("/admin/workers", response_class=HTMLResponse)
async def workers_page(request: Request) -> Response:
    """Every live worker process (as ``GET /v1/workers`` lists them)."""
    viewer = await as_viewer(request, _admin)
    workers = await run_in_threadpool(read_workers)
    return render(request, "workers.html", {"workers": workers}, viewer=viewer)


@router.get("/admin/queues", response_class=HTMLResponse)
async def queues_page(request: Request) -> Response:
    """Messages in each broker queue, the jobs admission holds per resource and per
    owner, and the ones it hands over next."""

    def page(session: Session, viewer: Viewer) -> dict[str, Any]:
        _admin(session, viewer)
        return {"viewer": viewer, "queues": queues(session, get_redis())}

    found = await as_viewer(request, page)
    return render(request, "queues.html", {"queues": found["queues"]}, viewer=found["viewer"])


def _owners(session: Session) -> list[dict[str, Any]]:
    """Each owner with its limits and how many of its jobs run, wait to run and wait
    for other jobs (one grouped count; the limits as admission applies them).

    A query of its own until an admin route in the API computes the same."""
    counts: dict[tuple[str, str], int] = {
        (owner_id, status): count
        for owner_id, status, count in session.execute(
            select(Job.owner_id, Job.status, func.count())
            .where(Job.status.in_([s.value for s in COUNTED]))
            .group_by(Job.owner_id, Job.status)
        )
    }
    return [
        {
            "owner": owner,
            "limits": limits_of(owner),
            **{s.value: counts.get((owner.id, s.value), 0) for s in COUNTED},
        }
        for owner in session.scalars(select(Owner).order_by(Owner.name))
    ]


@router.get("/admin/owners", response_class=HTMLResponse)
async def owners_page(request: Request) -> Response:
    """Every owner: tier, limits, and its jobs running, queued and waiting."""

    def page(session: Session, viewer: Viewer) -> tuple[Viewer, list[dict[str, Any]]]:
        return _admin(session, viewer), _owners(session)

    viewer, owners = await as_viewer(request, page)
    return render(request, "owners.html", {"owners": owners}, viewer=viewer)
