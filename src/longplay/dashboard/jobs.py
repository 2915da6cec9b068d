"""The jobs list, a job's page with its actions, and the failed jobs.

Each route is one store call through the jobs service, presented by the JSON API's
own presenters (:func:`longplay.api.routes.jobs.present_page`): the page shows what
``GET /v1/jobs`` answers, nothing computed twice.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from longplay.api.routes.jobs import present, present_page
from longplay.api.schemas import AttemptPublic, WebhookDeliveryPublic
from longplay.dashboard.results import previews
from longplay.dashboard.sessions import Viewer
from longplay.dashboard.web import PageRoute, as_viewer, changing, render, see_other
from longplay.framework import get_kind
from longplay.framework.kinds import all_kinds
from longplay.jobs import refusals, service
from longplay.store.models import Artifact, JobStatus

router = APIRouter(route_class=PageRoute, include_in_schema=False)
PAGE_SIZE = 20
FAILED_PAGE_SIZE = 50
StatusFilter = Annotated[JobStatus | None, Query(alias="status")]


def _kind_names() -> list[str]:
    return sorted(k.name for k in all_kinds())


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_page(
    request: Request,
    status_: StatusFilter = None,
    kind: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """Your jobs, newest first, filtered by status and kind, a page at a time."""
    kind = kind or None

    def page(session: Session, viewer: Viewer) -> dict[str, Any]:
        found = service.list_jobs(
            session,
            owner=viewer.owner,
            status=[status_] if status_ else (),
            kind=kind,
            limit=PAGE_SIZE,
            cursor=cursor or None,
        )
        return {
            "viewer": viewer,
            "jobs": present_page(session, found.jobs),
            "next_cursor": found.next_cursor,
        }

    found = await as_viewer(request, page)
    filters = {k: v for k, v in (("status", status_), ("kind", kind)) if v}
    older = (
        "/jobs?" + urlencode({**filters, "cursor": found["next_cursor"]})
        if found["next_cursor"]
        else None
    )
    return render(
        request,
        "jobs.html",
        {
            "jobs": found["jobs"],
            "statuses": [s.value for s in JobStatus],
            "kinds": _kind_names(),
            "status_filter": status_ or "",
            "kind_filter": kind or "",
            "newest_url": "/jobs?" + urlencode(filters) if cursor else None,
            "older_url": older,
        },
        viewer=found["viewer"],
    )


def _inputs(session: Session, viewer: Viewer, inputs: list[Any]) -> list[Artifact]:
    """The uploaded files a job reads (not the outputs of other jobs it waits for)."""
    found = []
    for artifact_id in (i for i in inputs if isinstance(i, str)):
        try:
            found.append(service.get_artifact(session, owner=viewer.owner, artifact_id=artifact_id))
        except refusals.NotFound:
            continue  # deleted since
    return found


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: str) -> Response:
    """One job: progress and steps, the live event log, error, attempts, webhook
    deliveries, results, and the actions its status allows."""

    def page(session: Session, viewer: Viewer) -> dict[str, Any]:
        job = service.get_job(session, owner=viewer.owner, job_id=job_id)
        shown = present(session, job)
        completed = job.status == JobStatus.COMPLETED.value
        outputs = service.outputs_of_many(session, [job]).get(job.id, []) if completed else []
        return {
            "viewer": viewer,
            "job": shown,
            "done_steps": list(job.checkpoint.get("done", [])),
            "attempts": [
                AttemptPublic.model_validate(a)
                for a in service.attempts_of(session, owner=viewer.owner, job_id=job.id)
            ],
            "deliveries": [
                WebhookDeliveryPublic.model_validate(d)
                for d in service.deliveries_of(session, owner=viewer.owner, job_id=job.id)
            ],
            "previews": previews(outputs),
            "inputs": _inputs(session, viewer, shown.inputs),
        }

    found = await as_viewer(request, page)
    kind = get_kind(found["job"].kind)
    steps = [{"name": s.name, "weight": s.weight} for s in kind.steps] if kind else []
    viewer = found.pop("viewer")
    return render(request, "job.html", {**found, "steps": steps}, viewer=viewer)


@router.post("/jobs/{job_id}/cancel")
async def cancel(
    request: Request, job_id: str, csrf: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    await changing(
        request,
        lambda session, viewer: service.cancel_job(session, owner=viewer.owner, job_id=job_id),
        csrf=csrf,
    )
    return see_other(f"/jobs/{job_id}")


@router.post("/jobs/{job_id}/retry")
async def retry(
    request: Request, job_id: str, csrf: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    await changing(
        request,
        lambda session, viewer: service.retry_job(session, owner=viewer.owner, job_id=job_id),
        csrf=csrf,
    )
    return see_other(f"/jobs/{job_id}")


@router.post("/jobs/{job_id}/delete")
async def delete(
    request: Request, job_id: str, csrf: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    await changing(
        request,
        lambda session, viewer: service.delete_job(session, owner=viewer.owner, job_id=job_id),
        csrf=csrf,
    )
    return see_other("/jobs")


@router.get("/failed", response_class=HTMLResponse)
async def failed_page(
    request: Request,
    kind: Annotated[str | None, Query(max_length=40)] = None,
    retried: Annotated[int | None, Query(ge=0)] = None,
    skipped: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """The failed jobs with their errors; retry a selection or all of them."""
    kind = kind or None

    def page(session: Session, viewer: Viewer) -> dict[str, Any]:
        found = service.list_jobs(
            session,
            owner=viewer.owner,
            status=[JobStatus.FAILED],
            kind=kind,
            limit=FAILED_PAGE_SIZE,
        )
        return {"viewer": viewer, "jobs": present_page(session, found.jobs, with_position=False)}

    found = await as_viewer(request, page)
    return render(
        request,
        "failed.html",
        {
            "jobs": found["jobs"],
            "kinds": _kind_names(),
            "kind_filter": kind or "",
            "retried": retried,
            "skipped": skipped,
        },
        viewer=found["viewer"],
    )


@router.post("/failed/retry")
async def retry_failed(
    request: Request,
    csrf: Annotated[str, Form(max_length=200)] = "",
    ids: Annotated[list[str] | None, Form(max_length=FAILED_PAGE_SIZE)] = None,
    shown: Annotated[list[str] | None, Form(max_length=FAILED_PAGE_SIZE)] = None,
    every: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Retry the ticked jobs, or with ``every`` all the jobs the page showed."""
    chosen = list(shown or []) if every else list(ids or [])
    if not chosen:
        raise refusals.Invalid("tick at least one job to retry")

    def retry_many(session: Session, viewer: Viewer) -> service.RetryOutcome:
        return service.retry_jobs(session, owner=viewer.owner, job_ids=chosen)

    outcome = await changing(request, retry_many, csrf=csrf)
    return see_other(
        "/failed?" + urlencode({"retried": len(outcome.retried), "skipped": len(outcome.skipped)})
    )
