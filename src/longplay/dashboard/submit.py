"""Submitting a job from a form made from its kind's parameter schema, with files.

The submission goes through the same steps as ``POST /v1/jobs`` with multipart: the
uploads are copied and hashed outside the store call (:mod:`longplay.api.uploads`),
then one store call adopts them and calls :func:`longplay.jobs.submission.submit_job`,
which validates the parameters against the kind's model; after the commit, admission
is asked for a round. The form carries a one-time id sent as the ``Idempotency-Key``,
so a double click makes one job.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from longplay.api import bodies, uploads
from longplay.api.schemas import KindPublic
from longplay.dashboard import forms, sessions
from longplay.dashboard.sessions import Viewer
from longplay.dashboard.web import (
    PageRoute,
    as_viewer,
    changing,
    refuse_foreign,
    render,
    see_other,
)
from longplay.framework import JobKind, get_kind
from longplay.framework.kinds import all_kinds
from longplay.jobs import refusals, submission
from longplay.settings import get_settings

router = APIRouter(route_class=PageRoute, include_in_schema=False)
FORM_ID = "form_id"


def _kind(name: str) -> JobKind[Any]:
    kind = get_kind(name)
    if kind is None:
        raise refusals.NotFound(f"no job kind {name!r}")
    return kind


@router.get("/submit", response_class=HTMLResponse)
async def kinds_page(request: Request) -> Response:
    """The kinds to choose from."""
    viewer = await as_viewer(request, lambda session, viewer: viewer)
    kinds = sorted((KindPublic.of(k) for k in all_kinds()), key=lambda k: k.name)
    return render(request, "kinds.html", {"kinds": kinds}, viewer=viewer)


def _form_page(
    request: Request,
    viewer: Viewer,
    kind: JobKind[Any],
    *,
    values: dict[str, str] | None = None,
    problem: refusals.Invalid | None = None,
    files_sent: bool = False,
    status_code: int = status.HTTP_200_OK,
) -> HTMLResponse:
    """The form, filled with ``values``; after a ``problem``, each field it names
    says why next to it and the summary lists them. ``files_sent``: the files chosen
    are gone (a browser cannot fill a file input again), so the summary says so."""
    shown = KindPublic.of(kind)
    fields = forms.fields_of(shown.params_schema, values)
    problems = forms.mark_problems(fields, problem.errors) if problem else {}
    # A reason no one field can show (a check across fields) is said in the summary.
    unplaced = forms.unplaced_problems(fields, problem.errors) if problem else []
    labels = {f.name: f.label for f in fields} | {forms.FILES: "Files"}
    return render(
        request,
        "submit.html",
        {
            "kind": shown,
            "fields": fields,
            "form_id": sessions.new_token(),
            "problem": str(problem) if problem else None,
            "problems": [(name, labels[name], text) for name, text in problems.items()],
            "reasons": [text for text in unplaced if text != str(problem)],
            "file_problem": problems.get(forms.FILES, ""),
            "files_sent": files_sent,
            "any_required": any(f.required for f in fields) or bool(shown.min_inputs),
        },
        viewer=viewer,
        status_code=status_code,
    )


@router.get("/submit/{kind_name}", response_class=HTMLResponse)
async def submit_page(request: Request, kind_name: str) -> Response:
    """The form for one kind: its parameters, and files when it takes any."""
    kind = _kind(kind_name)
    viewer = await as_viewer(request, lambda session, viewer: viewer)
    return _form_page(request, viewer, kind)


def _form_parts(schema: dict[str, Any], max_files: int) -> dict[str, int]:
    """The parts a kind's form has, each once (its files up to ``max_files``)."""
    return {
        **dict.fromkeys(schema.get("properties", {}), 1),
        "csrf": 1,
        FORM_ID: 1,
        "file": max_files,
    }


@router.post("/submit/{kind_name}", response_class=HTMLResponse)
async def submit(request: Request, kind_name: str) -> Response:
    """Submit the form; on success the new job's page, else the form again with why."""
    kind = _kind(kind_name)
    # Who sends it, and from where, is known before the body is read: a form from
    # nobody signed in, or from another site, is refused before any file is stored.
    refuse_foreign(request)
    await as_viewer(request, lambda session, viewer: viewer)
    limits = get_settings().api
    schema = KindPublic.of(kind).params_schema
    within = uploads.within_limit(request, "a submission with files")
    form = await bodies.read_form(
        within,
        "this form's",
        _form_parts(schema, limits.max_inputs_per_job),
        max_part_size=limits.max_json_bytes,
        max_text_bytes=limits.max_json_bytes + bodies.FORM_TEXT_ALLOWANCE,
    )
    files = [f for f in form.getlist("file") if isinstance(f, UploadFile) and f.filename]
    values = {k: v for k, v in form.items() if isinstance(v, str)}

    async def refused(problem: refusals.Invalid) -> HTMLResponse:
        """The form again, filled as it was sent, saying what is wrong with it."""
        viewer = await as_viewer(request, lambda session, viewer: viewer)
        return _form_page(
            request,
            viewer,
            kind,
            values=values,
            problem=problem,
            files_sent=bool(files),
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )

    try:
        params = forms.params_from_form(schema, values)
        received = await run_in_threadpool(uploads.receive_all, files, kind) if files else []
    except refusals.Invalid as exc:
        return await refused(exc)

    def submit_in_store(session: Session, viewer: Viewer) -> tuple[str, Any, Any]:
        try:
            stored = [uploads.adopt(session, viewer.owner, r) for r in received]
        except BaseException:
            uploads.discard(received)
            raise
        made = submission.submit_job(
            session,
            owner=viewer.owner,
            kind_name=kind.name,
            params=params,
            input_ids=[],
            uploaded=stored,
            idempotency_key=f"dashboard:{values.get(FORM_ID, '')}" if values.get(FORM_ID) else None,
            admit=False,
        )
        return made.job.id, made.job.run_at, made.job.deadline

    try:
        job_id, run_at, deadline = await changing(request, submit_in_store, csrf=values.get("csrf"))
    except refusals.Invalid as exc:
        uploads.discard(received)
        return await refused(exc)
    except refusals.NotFound as exc:
        # What a parameter names is not there (an unknown collection): the form again,
        # as typed, with the reason on that parameter, not a bare "Not found" page.
        uploads.discard(received)
        return await refused(forms.missing_reference(schema, values, str(exc)))
    except BaseException:
        uploads.discard(received)
        raise
    await run_in_threadpool(submission.book_rounds, run_at, deadline)
    return see_other(f"/jobs/{job_id}")
