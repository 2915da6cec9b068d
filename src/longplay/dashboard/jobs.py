"""The jobs list, a job's page with its actions, and the failed jobs.

Each route is one store call through the jobs service, presented by the JSON API's
own presenters (:func:`longplay.api.routes.jobs.present_page`): the page shows what
``GET /v1/jobs`` answers, nothing computed twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from longplay.api.routes.jobs import present, present_page
from longplay.api.schemas import AttemptPublic, WebhookDeliveryPublic
from longplay.dashboard.results import previews
from longplay.dashboard.sessions import Viewer
from longplay.dashboard.web import (
    PageRoute,
    as_viewer,
    changing,
    failed_for_good,
    render,
    see_other,
    shorten,
    taken_from,
)
from longplay.framework import get_kind
from longplay.framework.errors import same_result_again
from longplay.framework.kinds import all_kinds
from longplay.jobs import refusals, service
from longplay.store.models import Artifact, Job, JobStatus
from longplay.store.views import JobPublic, OutputRef

TEXT_PARAMS = ("topic", "text", "instructions")
"""Parameters whose words say what a job without input files is about."""
JOB_ID = re.compile(r"job_[0-9a-f]{1,40}")
"""What a job's id looks like (``models.new_id``)."""

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
    deleted: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """Your jobs, newest first, filtered by status and kind, a page at a time; with
    ``deleted``, a notice that that job was deleted (where Delete lands)."""
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
        shown = present_page(session, found.jobs)
        return {
            "viewer": viewer,
            "jobs": shown,
            "reads": _reads(session, viewer, shown),
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
            "reads": found["reads"],
            "statuses": [s.value for s in JobStatus],
            "kinds": _kind_names(),
            "status_filter": status_ or "",
            "kind_filter": kind or "",
            "newest_url": "/jobs?" + urlencode(filters) if cursor else None,
            "older_url": older,
            # Only a job's id: the notice must not say what a crafted link wants.
            "deleted": deleted if deleted and JOB_ID.fullmatch(deleted) else None,
        },
        viewer=found["viewer"],
    )


def _reads(session: Session, viewer: Viewer, jobs: list[JobPublic]) -> dict[str, str]:
    """What each job reads, in a few words, by id, so that rows of one kind tell apart:
    its first input file's name (one query for the page), the output of another job it
    takes, or the start of the text or topic it was given."""
    ids = [i for job in jobs for i in job.inputs[:1] if isinstance(i, str)]
    names = service.artifact_names(session, owner=viewer.owner, artifact_ids=ids)
    said: dict[str, str] = {}
    for job in jobs:
        first = job.inputs[0] if job.inputs else None
        if isinstance(first, str):
            what = names.get(first, "")
        elif isinstance(first, OutputRef):
            what = f"{taken_from(first)} of {first.job}"
        else:
            what = next((str(job.params[k]) for k in TEXT_PARAMS if job.params.get(k)), "")
        more = len(job.inputs) - 1
        said[job.id] = shorten(what) + (f" and {more} more" if more > 0 else "")
    return said


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
                AttemptPublic.of(a)
                for a in service.attempts_of(session, owner=viewer.owner, job_id=job.id)
            ],
            "deliveries": [
                WebhookDeliveryPublic.model_validate(d)
                for d in service.deliveries_of(session, owner=viewer.owner, job_id=job.id)
            ],
            "previews": previews(outputs),
            "inputs": _inputs(session, viewer, shown.inputs),
            "taken": [i for i in shown.inputs if isinstance(i, OutputRef)],
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
    return see_other("/jobs?" + urlencode({"deleted": job_id}))


@router.get("/failed", response_class=HTMLResponse)
async def failed_page(
    request: Request,
    kind: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
    retried: Annotated[int | None, Query(ge=0)] = None,
    skipped: Annotated[int | None, Query(ge=0)] = None,
    permanent: Annotated[int | None, Query(ge=0)] = None,
    unticked: Annotated[bool, Query()] = False,
) -> Response:
    """The failed jobs with their errors, a page at a time; retry a selection, or every
    failed job of the filter (on every page) that may pass another time. After a retry,
    a notice of what it did (``retried``, ``skipped``, ``permanent``), or with
    ``unticked`` that Retry selected had nothing ticked."""
    kind = kind or None

    def page(session: Session, viewer: Viewer) -> dict[str, Any]:
        found = _failed_jobs(session, viewer, kind, cursor or None)
        return {
            "viewer": viewer,
            "jobs": present_page(session, found.jobs, with_position=False),
            "next_cursor": found.next_cursor,
        }

    found = await as_viewer(request, page)
    permanent_here = sum(1 for job in found["jobs"] if failed_for_good(job.error))
    filters = {"kind": kind} if kind else {}
    older = (
        "/failed?" + urlencode({**filters, "cursor": found["next_cursor"]})
        if found["next_cursor"]
        else None
    )
    return render(
        request,
        "failed.html",
        {
            "jobs": found["jobs"],
            "kinds": _kind_names(),
            "kind_filter": kind or "",
            "retried": retried,
            "skipped": skipped,
            "permanent": permanent,
            "unticked": unticked,
            "permanent_here": permanent_here,
            "newest_url": "/failed?" + urlencode(filters) if cursor else None,
            "older_url": older,
        },
        viewer=found["viewer"],
    )


def _failed_jobs(
    session: Session, viewer: Viewer, kind: str | None, cursor: str | None
) -> service.Page:
    """A page of the viewer's failed jobs (of ``kind``, if given), newest first."""
    return service.list_jobs(
        session,
        owner=viewer.owner,
        status=[JobStatus.FAILED],
        kind=kind,
        limit=FAILED_PAGE_SIZE,
        cursor=cursor,
    )


def _permanent(job: Job) -> bool:
    """Whether the job failed for good: its error says running it again gives the same
    result (``retryable`` false: no notes found, not enough content), and no change of
    the service's settings mends it."""
    error = job.error or {}
    return same_result_again(error.get("retryable"), error.get("code"))


@dataclass
class _RetriedAll:
    """What "Retry all" did: the jobs queued again, those the service would not retry,
    and the permanent failures left as they are."""

    retried: int = 0
    skipped: int = 0
    permanent: int = 0


def _retry_failed_page(
    session: Session, viewer: Viewer, kind: str | None, cursor: str | None
) -> tuple[service.RetryOutcome, int, str | None]:
    """Retry one page of the viewer's failed jobs (of ``kind``, if given) but those
    that failed for good; how many those were, and the cursor of the next page."""
    found = _failed_jobs(session, viewer, kind, cursor)
    job_ids = [job.id for job in found.jobs if not _permanent(job)]
    outcome = service.retry_jobs(session, owner=viewer.owner, job_ids=job_ids)
    return outcome, len(found.jobs) - len(job_ids), found.next_cursor


async def _retry_every_failed(request: Request, kind: str | None, csrf: str) -> _RetriedAll:
    """Retry every failed job of ``kind`` (any, if None), on every page, that may pass
    another time: what a button that says "all" promises. A permanent failure is left
    and counted (it would only fail again). A page a transaction (each checking the
    form's ``csrf``), so a long history of failures never holds the store in one long
    write; the cursor walks back from the newest, so a job that fails again meanwhile
    is not retried twice."""
    done = _RetriedAll()
    cursor: str | None = None
    while True:
        outcome, permanent, cursor = await changing(
            request, partial(_retry_failed_page, kind=kind, cursor=cursor), csrf=csrf
        )
        done.retried += len(outcome.retried)
        done.skipped += len(outcome.skipped)
        done.permanent += permanent
        if cursor is None:
            return done


@router.post("/failed/retry")
async def retry_failed(
    request: Request,
    csrf: Annotated[str, Form(max_length=200)] = "",
    ids: Annotated[list[str] | None, Form(max_length=FAILED_PAGE_SIZE)] = None,
    every: Annotated[str, Form(max_length=10)] = "",
    kind: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    """Retry the ticked jobs, or with ``every`` every failed job of the page's filter
    that may pass another time; with neither, the page again saying what to do."""
    filters = {"kind": kind} if kind else {}
    if every:
        done = await _retry_every_failed(request, kind or None, csrf)
        counts = {"retried": done.retried, "skipped": done.skipped, "permanent": done.permanent}
    elif ids:
        chosen = list(ids)
        outcome = await changing(
            request,
            lambda session, viewer: service.retry_jobs(session, owner=viewer.owner, job_ids=chosen),
            csrf=csrf,
        )
        counts = {"retried": len(outcome.retried), "skipped": len(outcome.skipped)}
    else:
        counts = {"unticked": 1}
    return see_other("/failed?" + urlencode({**filters, **counts}))
