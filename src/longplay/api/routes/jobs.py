"""Jobs: submit, follow, list, cancel, delete."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from longplay.api import bodies, uploads
from longplay.api.conditional import NOT_MODIFIED, json_revalidated
from longplay.api.deps import KeyDep, as_owner, check_key
from longplay.api.errors import errors
from longplay.api.openapi import json_body
from longplay.api.readers import Reader, ReaderDep, as_reader
from longplay.api.schemas import (
    AttemptPublic,
    CallbackEvent,
    JobCreate,
    JobCreateFields,
    JobList,
    RetryMany,
    RetryManyResult,
    RetrySkipped,
    job_create_model,
)
from longplay.framework import get_kind
from longplay.jobs import paging, refusals, service, submission
from longplay.settings import get_settings
from longplay.store.files import size_text
from longplay.store.models import Job, JobStatus, Owner
from longplay.store.views import JobPublic

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
DEDUPLICATED_HEADER = "Longplay-Deduplicated"
FORM_FIELDS = frozenset(
    {"kind", "params", "file", "inputs", "after", "priority", "run_at", "deadline", "dedupe"}
    | {"callback_url", "callback_events"}
)
"""The fields of a multipart submission; another is refused, as in a JSON one."""
MAX_AFTER = next(
    m.max_length for m in JobCreateFields.model_fields["after"].metadata if hasattr(m, "max_length")
)
"""The most jobs a submission may wait for."""

SUBMIT_BODY: dict[str, Any] = {
    # Read by hand (JSON or multipart); the schemas are the kinds' own, added to the
    # document by longplay.api.openapi, which fills this in.
    "requestBody": {"required": True, "content": {}}
}


def present(session: Session, job: Job, *, with_position: bool = True) -> JobPublic:
    """A job as clients see it; its queue position costs a few queries and its
    ``stalled`` a Redis read, so a fresh submission (whose position is its place at the
    end of the queue) leaves them out."""
    return present_page(session, [job], with_position=with_position)[0]


def present_page(
    session: Session, jobs: Sequence[Job], *, with_position: bool = True
) -> list[JobPublic]:
    """Jobs as clients see them, with a bounded number of queries for the whole page."""
    positions = service.queue_positions(session, jobs) if with_position else {}
    stalled = service.stalled(jobs) if with_position else {}
    completed = [j for j in jobs if j.status == JobStatus.COMPLETED.value]
    outputs = service.outputs_of_many(session, completed)  # only these show outputs
    waiting = service.waiting_for(
        session,
        [j.id for j in jobs if j.status == JobStatus.WAITING.value],
        known={j.id: j.status for j in jobs},
    )
    return [
        JobPublic.of(
            job,
            queue_position=positions.get(job.id),
            outputs=outputs.get(job.id),
            waiting_for=waiting.get(job.id),
            stalled=stalled.get(job.id),
        )
        for job in jobs
    ]


async def _read_submission(request: Request) -> tuple[JobCreate, dict[str, Any], list[UploadFile]]:
    """The submission checked against its kind's model (``params`` included), the
    parameters as sent, and the files uploaded with it."""
    media_type = bodies.media_type(request)
    raw: bytes | None = None
    if media_type == "multipart/form-data":
        fields, uploads = await _read_form(request)
    elif media_type == "application/json":
        fields, raw = await bodies.read_json_body(request)
        uploads = []
    else:
        raise refusals.Invalid(
            "send application/json or multipart/form-data",
            [{"loc": ["header", "content-type"], "msg": "unsupported", "type": "content_type"}],
        )
    body = _checked(fields, raw)
    return body, dict(fields.get("params") or {}), uploads


async def _read_form(request: Request) -> tuple[dict[str, Any], list[UploadFile]]:
    """A multipart submission's fields, as a JSON one has them, and its files. A field
    it does not have is refused, as a JSON one's is; ``params`` may come as a file part
    (``curl -F params=@options.json``) as well as a text one."""
    limits = get_settings().api
    within = uploads.within_limit(request, "a submission with files")
    form = await bodies.read_form(
        within,
        "a submission's",
        _form_parts(limits.max_inputs_per_job),
        max_part_size=limits.max_json_bytes,
        max_text_bytes=limits.max_json_bytes + bodies.FORM_TEXT_ALLOWANCE,
    )
    fields: dict[str, Any] = {
        "kind": form.get("kind"),
        "inputs": [str(v) for v in form.getlist("inputs")],
        "after": [str(v) for v in form.getlist("after")],
    }
    part = form.get("params")
    params = await part.read(limits.max_json_bytes + 1) if isinstance(part, UploadFile) else part
    if params and len(params) > limits.max_json_bytes:  # a text part is bounded by the form
        raise refusals.TooLarge(f"params may have at most {size_text(limits.max_json_bytes)}")
    if params:
        fields["params"] = bodies.parse_json(params, ("body", "params"))
    for name in ("priority", "run_at", "deadline", "dedupe", "callback_url"):
        if form.get(name):
            fields[name] = form.get(name)
    if form.getlist("callback_events"):
        fields["callback_events"] = [str(v) for v in form.getlist("callback_events")]
    return fields, [f for f in form.getlist("file") if isinstance(f, UploadFile)]


def _form_parts(max_inputs: int) -> dict[str, int]:
    """How many parts of each name a multipart submission may have: as many as its
    JSON form may hold values (``after`` as many as :class:`JobCreateFields` takes)."""
    repeated = {
        "file": max_inputs,
        "inputs": max_inputs,
        "after": MAX_AFTER,
        "callback_events": len(get_args(CallbackEvent)),
    }
    return {name: repeated.get(name, 1) for name in FORM_FIELDS}


def _checked(fields: Any, raw: bytes | None) -> JobCreate:
    """``fields`` validated by the model of the kind they name: strictly from the JSON
    body ``raw``; without one, from form fields (text, so converted), but for ``params``,
    JSON in a form as in a body and so held to its types as strictly."""
    if not isinstance(fields, dict):
        raise refusals.Invalid(
            "the body must be a JSON object",
            [{"loc": ["body"], "msg": "not an object", "type": "dict_type"}],
        )
    name = fields.get("kind")
    if name is None:
        problem = "missing: name the job kind; GET /v1/kinds lists the kinds"
        raise refusals.Invalid(
            f"kind {problem}", [{"loc": ["body", "kind"], "msg": problem, "type": "missing"}]
        )
    kind = get_kind(name) if isinstance(name, str) else None
    if kind is None:
        problem = f"unknown job kind {name!r}; GET /v1/kinds lists the kinds"
        raise refusals.Invalid(problem, [{"loc": ["body", "kind"], "msg": problem, "type": "kind"}])
    if isinstance(params := fields.get("params"), dict):
        submission.refuse_unknown_params(kind, params)
        if raw is None:
            try:
                kind.params_from_json(params)
            except ValidationError as exc:
                refused = bodies.refusal_of(exc, code="invalid_params", at=("body", "params"))
                raise refused from exc
    try:
        model = job_create_model(kind)
        return (
            model.model_validate(fields)
            if raw is None
            else model.model_validate_json(raw, strict=True)
        )
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False, include_context=False)
        code = "invalid_params" if all(p["loc"][:1] == ("params",) for p in problems) else None
        raise bodies.refusal_of(exc, code=code) from exc


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
        **errors(401, 404, 409, 413, 422, 429, 503),
    },
    openapi_extra=SUBMIT_BODY,
)
async def submit_job(
    request: Request,
    response: Response,
    key: KeyDep,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=200, description="Send the same key again to get the same job back."),
    ] = None,
) -> JobPublic:
    """Submit a job: JSON naming uploaded artifacts, or multipart with the files."""
    if bodies.media_type(request) == "multipart/form-data":
        await check_key(key)
    body, params, files = await _read_submission(request)
    kind = get_kind(body.kind)
    received = await run_in_threadpool(uploads.receive_all, files, kind) if files else []

    def submit(session: Session, owner: Owner) -> tuple[JobPublic, bool]:
        try:
            stored = [uploads.adopt(session, owner, r) for r in received]
        except BaseException:
            uploads.discard(received)
            raise
        submitted = submission.submit_job(
            session,
            owner=owner,
            kind_name=body.kind,
            params=params,
            input_ids=body.inputs,
            priority=body.priority,
            uploaded=stored,
            idempotency_key=idempotency_key or None,  # an empty header names no key
            run_at=body.run_at,
            deadline=body.deadline,
            dedupe=body.dedupe,
            callback_url=str(body.callback_url) if body.callback_url else None,
            callback_events=list(body.callback_events),
            admit=False,
            after=body.after,
        )
        if not submitted.deduplicated:  # committed and announced: a round is asked for
            submission.book_rounds(submitted.job.run_at, submitted.job.deadline)
        return present(session, submitted.job, with_position=False), submitted.deduplicated

    try:
        job, deduplicated = await as_owner(key, submit)
    except BaseException:
        uploads.discard(received)  # whatever was not moved into the store yet
        raise
    response.headers["Location"] = job.links.self
    if deduplicated:
        response.status_code = status.HTTP_200_OK
        response.headers[DEDUPLICATED_HEADER] = "true"
    return job


@router.get("", response_model=JobList, responses=errors(401, 403))
async def list_jobs(
    key: KeyDep,
    status_: Annotated[list[JobStatus] | None, Query(alias="status")] = None,
    kind: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None,
        Query(
            pattern=paging.CURSOR_PATTERN,
            description="The `next_cursor` of the page before; what it holds is not a contract.",
        ),
    ] = None,
    all_owners: Annotated[bool, Query(description="Every owner's jobs (admin keys).")] = False,
) -> JobList:
    """List your jobs, newest first; filter by status and kind, page with ``cursor``."""

    def page_of(session: Session, owner: Owner) -> JobList:
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

    return await as_owner(key, page_of)


@router.get("/{job_id}", response_model=JobPublic, responses={**NOT_MODIFIED, **errors(401, 404)})
async def get_job(job_id: str, request: Request, credential: ReaderDep) -> Response:
    """One job: status, progress, step, ETA; its queue position or its results. Takes
    an API key, or a viewer token of this job (then its links carry the token).

    The answer carries an `ETag`: a poller that sends it back in `If-None-Match` gets
    a `304` with no body while the job shows nothing new."""

    def read(session: Session, reader: Reader) -> JobPublic:
        reader.check_job(job_id)
        return reader.job(
            present(session, service.get_job(session, owner=reader.owner, job_id=job_id))
        )

    return json_revalidated(request, await as_reader(credential, read))


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=errors(401, 404, 409))
async def cancel_job(job_id: str, key: KeyDep) -> JobPublic:
    """Cancel a queued job, or stop a running one at its next progress checkpoint."""
    return await as_owner(
        key,
        lambda session, owner: present(
            session, service.cancel_job(session, owner=owner, job_id=job_id)
        ),
    )


@router.post(
    "/retry",
    response_model=RetryManyResult,
    responses=errors(401, 413, 422),
    openapi_extra=json_body(RetryMany),
)
async def retry_jobs(request: Request, key: KeyDep) -> RetryManyResult:
    """Retry many failed jobs (or ones queued to retry) at once; the others are listed
    with the reason."""
    _, raw = await bodies.read_json_body(request)
    body = bodies.validated(RetryMany, raw)

    def retry(session: Session, owner: Owner) -> RetryManyResult:
        outcome = service.retry_jobs(session, owner=owner, job_ids=body.ids)
        return RetryManyResult(
            retried=outcome.retried,
            skipped=[RetrySkipped(id=job_id, reason=reason) for job_id, reason in outcome.skipped],
        )

    return await as_owner(key, retry)


@router.post("/{job_id}/retry", response_model=JobPublic, responses=errors(401, 404, 409))
async def retry_job(job_id: str, key: KeyDep) -> JobPublic:
    """Run a failed job again; it resumes after the last step it finished. A job queued
    to retry runs at once instead of waiting out its backoff."""
    return await as_owner(
        key,
        lambda session, owner: present(
            session, service.retry_job(session, owner=owner, job_id=job_id)
        ),
    )


@router.get("/{job_id}/attempts", response_model=list[AttemptPublic], responses=errors(401, 404))
async def job_attempts(job_id: str, key: KeyDep) -> list[AttemptPublic]:
    """Each run of the job: its worker, times, outcome and error."""
    return await as_owner(
        key,
        lambda session, owner: [
            AttemptPublic.of(a) for a in service.attempts_of(session, owner=owner, job_id=job_id)
        ],
    )


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 404, 409))
async def delete_job(job_id: str, key: KeyDep) -> Response:
    """Delete a finished job with its results and the files uploaded with it."""
    await as_owner(
        key, lambda session, owner: service.delete_job(session, owner=owner, job_id=job_id)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
