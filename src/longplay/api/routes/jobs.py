"""Jobs: submit, follow, list, cancel, delete."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Header, Query, Request, Response, status
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from longplay.api.deps import OwnerDep, SessionDep
from longplay.api.schemas import (
    AttemptPublic,
    JobCreate,
    JobList,
    RetryMany,
    RetryManyResult,
    RetrySkipped,
)
from longplay.api.uploads import store_upload
from longplay.jobs import refusals, service, submission
from longplay.settings import get_settings
from longplay.store.models import Job, JobStatus, Owner, Priority
from longplay.store.views import JobPublic

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
DEDUPLICATED_HEADER = "Longplay-Deduplicated"

SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["kind"],
                    "properties": {
                        "kind": {"type": "string"},
                        "params": {"type": "string", "description": "JSON object"},
                        "priority": {"type": "string", "enum": [p.value for p in Priority]},
                        "inputs": {"type": "array", "items": {"type": "string"}},
                        "run_at": {"type": "string", "format": "date-time"},
                        "deadline": {"type": "string", "format": "date-time"},
                        "dedupe": {"type": "boolean"},
                        "callback_url": {"type": "string", "format": "uri"},
                        "callback_events": {"type": "array", "items": {"type": "string"}},
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    },
                }
            },
        },
    }
}


def present(session: Session, job: Job, *, with_position: bool = True) -> JobPublic:
    """A job as clients see it; its queue position costs a few queries, so a fresh
    submission (whose position is its place at the end of the queue) leaves it out."""
    return present_page(session, [job], with_position=with_position)[0]


def present_page(
    session: Session, jobs: Sequence[Job], *, with_position: bool = True
) -> list[JobPublic]:
    """Jobs as clients see them, with a bounded number of queries for the whole page."""
    positions = service.queue_positions(session, jobs) if with_position else {}
    completed = [j for j in jobs if j.status == JobStatus.COMPLETED.value]
    outputs = service.outputs_of_many(session, completed)  # only these show outputs
    return [
        JobPublic.of(
            job,
            queue_position=positions.get(job.id),
            outputs=outputs.get(job.id),
        )
        for job in jobs
    ]


async def _read_submission(request: Request) -> tuple[JobCreate, list[UploadFile]]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=get_settings().api.max_inputs_per_job)
        uploads = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
        raw_params = form.get("params") or "{}"
        try:
            params = json.loads(str(raw_params))
        except json.JSONDecodeError as exc:
            raise refusals.Invalid(f"params is not valid JSON: {exc}") from exc
        fields: dict[str, Any] = {
            "kind": form.get("kind"),
            "params": params,
            "inputs": [str(v) for v in form.getlist("inputs")],
        }
        for name in ("priority", "run_at", "deadline", "dedupe", "callback_url"):
            if form.get(name):
                fields[name] = form.get(name)
        if form.getlist("callback_events"):
            fields["callback_events"] = [str(v) for v in form.getlist("callback_events")]
    elif content_type.startswith("application/json"):
        try:
            fields = json.loads(await request.body())
        except json.JSONDecodeError as exc:
            raise refusals.Invalid(f"body is not valid JSON: {exc}") from exc
        uploads = []
    else:
        raise refusals.Invalid("send application/json or multipart/form-data")
    try:
        return JobCreate.model_validate(fields), uploads
    except ValidationError as exc:
        raise refusals.Invalid(
            "bad job submission",
            exc.errors(include_url=False, include_input=False, include_context=False),
        ) from exc


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses={
        status.HTTP_200_OK: {
            "model": JobPublic,
            "description": "With `dedupe`: an earlier completed job of yours with the same "
            "kind, parameters and input bytes; nothing new was stored or run.",
            "headers": {
                DEDUPLICATED_HEADER: {
                    "description": "`true`: this is an earlier job, not a new one.",
                    "schema": {"type": "string", "enum": ["true"]},
                }
            },
        },
        status.HTTP_429_TOO_MANY_REQUESTS: {
            "description": "Over your queued-jobs cap or submit rate; nothing was stored.",
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before submitting again.",
                    "schema": {"type": "integer"},
                }
            },
        },
    },
    openapi_extra=SUBMIT_BODY,
    max_body_size=get_settings().api.max_upload_bytes + 1024 * 1024,
)
async def submit_job(
    request: Request,
    response: Response,
    background: BackgroundTasks,
    session: SessionDep,
    owner: OwnerDep,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=200, description="Send the same key again to get the same job back."),
    ] = None,
) -> JobPublic:
    """Submit a job: JSON naming uploaded artifacts, or multipart with the files."""
    body, uploads = await _read_submission(request)
    job, deduplicated = await run_in_threadpool(
        _submit, session, owner, body, uploads, idempotency_key
    )
    if deduplicated:
        response.status_code = status.HTTP_200_OK
        response.headers[DEDUPLICATED_HEADER] = "true"
    else:  # after the answer went out: the submit's latency does not wait for the broker
        background.add_task(submission.admit_submitted, job.run_at, job.deadline)
    return job


def _submit(
    session: Session,
    owner: Owner,
    body: JobCreate,
    uploads: list[UploadFile],
    idempotency_key: str | None,
) -> tuple[JobPublic, bool]:
    stored = [store_upload(session, owner, upload) for upload in uploads]
    submitted = submission.submit_job(
        session,
        owner=owner,
        kind_name=body.kind,
        params=body.params,
        input_ids=body.inputs,
        priority=body.priority,
        uploaded=stored,
        idempotency_key=idempotency_key,
        run_at=body.run_at,
        deadline=body.deadline,
        dedupe=body.dedupe,
        callback_url=str(body.callback_url) if body.callback_url else None,
        callback_events=list(body.callback_events),
        admit=False,
    )
    return present(session, submitted.job, with_position=False), submitted.deduplicated


@router.get("", response_model=JobList)
def list_jobs(
    session: SessionDep,
    owner: OwnerDep,
    status_: Annotated[list[JobStatus] | None, Query(alias="status")] = None,
    kind: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
    all_owners: Annotated[bool, Query(description="Every owner's jobs (admin keys).")] = False,
) -> JobList:
    """List your jobs, newest first; filter by status and kind, page with ``cursor``."""
    page = service.list_jobs(
        session,
        owner=owner,
        status=status_ or (),
        kind=kind,
        limit=limit,
        cursor=cursor,
        all_owners=all_owners,
    )
    return JobList(items=present_page(session, page.jobs), next_cursor=page.next_cursor)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, session: SessionDep, owner: OwnerDep) -> JobPublic:
    """One job: status, progress, step, ETA; its queue position or its results."""
    return present(session, service.get_job(session, owner=owner, job_id=job_id))


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: str, session: SessionDep, owner: OwnerDep) -> JobPublic:
    """Cancel a queued job, or stop a running one at its next progress checkpoint."""
    return present(session, service.cancel_job(session, owner=owner, job_id=job_id))


@router.post("/retry", response_model=RetryManyResult)
def retry_jobs(body: RetryMany, session: SessionDep, owner: OwnerDep) -> RetryManyResult:
    """Retry many failed jobs at once; the others are listed with the reason."""
    outcome = service.retry_jobs(session, owner=owner, job_ids=body.ids)
    return RetryManyResult(
        retried=outcome.retried,
        skipped=[RetrySkipped(id=job_id, reason=reason) for job_id, reason in outcome.skipped],
    )


@router.post("/{job_id}/retry", response_model=JobPublic)
def retry_job(job_id: str, session: SessionDep, owner: OwnerDep) -> JobPublic:
    """Run a failed job again; it resumes after the last step it finished."""
    return present(session, service.retry_job(session, owner=owner, job_id=job_id))


@router.get("/{job_id}/attempts", response_model=list[AttemptPublic])
def job_attempts(job_id: str, session: SessionDep, owner: OwnerDep) -> list[AttemptPublic]:
    """Each run of the job: its worker, times, outcome and error."""
    return [
        AttemptPublic.model_validate(a)
        for a in service.attempts_of(session, owner=owner, job_id=job_id)
    ]


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_job(job_id: str, session: SessionDep, owner: OwnerDep) -> Response:
    """Delete a finished job with its results and the files uploaded with it."""
    service.delete_job(session, owner=owner, job_id=job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
