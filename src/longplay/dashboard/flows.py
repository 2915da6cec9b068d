"""A flow's page: its status, times and stages, live, and Cancel while it runs.

The page shows what ``GET /v1/flows/{id}`` answers: the same service call
(:func:`longplay.jobs.flows.flow_jobs`) presented by the API's own presenter
(:func:`longplay.api.routes.flows.present`), each stage's job as the jobs list draws it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from longplay.api.routes.flows import present
from longplay.dashboard.sessions import Viewer
from longplay.dashboard.web import PageRoute, as_viewer, changing, render, see_other
from longplay.jobs import flows
from longplay.store.views import FlowStatus

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/flows/{flow_id}", response_class=HTMLResponse)
async def flow_page(request: Request, flow_id: str) -> Response:
    """One flow: its status, when it was made and ended, and each stage's job with its
    status, queue position or the stages it waits for, progress and step."""

    def page(session: Session, viewer: Viewer) -> dict[str, Any]:
        shown = present(session, flows.flow_jobs(session, owner=viewer.owner, flow_id=flow_id))
        return {"viewer": viewer, "flow": shown}

    found = await as_viewer(request, page)
    flow = found["flow"]
    # A stage waits for other stages (named so) or, by their outputs, other jobs (by id).
    stage_of = {job.id: name for name, job in flow.stages.items()}
    waiting = {
        job.id: [stage_of.get(other, other) for other in job.waiting_for]
        for job in flow.stages.values()
    }
    return render(
        request,
        "flow.html",
        {"flow": flow, "waiting": waiting, "ended": flow.status != FlowStatus.RUNNING},
        viewer=found["viewer"],
    )


@router.post("/flows/{flow_id}/cancel")
async def cancel(
    request: Request, flow_id: str, csrf: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    """Cancel every stage that has not ended, as ``POST /v1/flows/{id}/cancel`` does."""
    await changing(
        request,
        lambda session, viewer: flows.cancel_flow(session, owner=viewer.owner, flow_id=flow_id),
        csrf=csrf,
    )
    return see_other(f"/flows/{flow_id}")
