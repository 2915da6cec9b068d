"""A submission checked against its kind's declared rules before anything is stored:
the media types of its inputs, then the kind's own check of its params and inputs;
and each file uploaded with it, by the kind's look into its bytes.

A refusal is :class:`~longplay.jobs.refusals.Invalid` with the code a job would fail
with at run time (``invalid_input``, ``invalid_params``) and the field it is about,
located in the submission as the API's body has it (``body.params.voice``,
``body.inputs.0``). Input counts and the params' own validation are
:func:`~longplay.jobs.submission.create_job`'s; this is the rest.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from longplay.framework import (
    FieldError,
    InputFile,
    InvalidInput,
    InvalidParams,
    JobKind,
    SubmittedInput,
)
from longplay.jobs.refusals import Invalid
from longplay.store.models import Artifact
from longplay.store.views import OutputRef


def check_submission(
    session: Session,
    kind: JobKind[Any],
    params: BaseModel,
    input_ids: Sequence[str | OutputRef],
) -> None:
    """Refuse the submission (:class:`Invalid`) when an input is of a type ``kind`` does
    not take, or when the kind's own check refuses it. ``params`` are validated and
    ``input_ids`` are the caller's artifacts (uploaded ones included) and other jobs'
    outputs to come, in order; the type of one of those is judged by its name, where
    that tells it."""
    if not kind.input_types and kind.check is None:
        return
    inputs = _inputs(session, input_ids)
    for index, item in enumerate(inputs):
        if item.media_type and not kind.accepts(item.media_type):
            takes = ", ".join(f"{t}*" if t.endswith("/") else t for t in kind.input_types)
            named = item.name if item.from_job is None else f"{item.name} of {item.from_job}"
            message = f"{kind.name} takes {takes} inputs; {named} is {item.media_type}"
            raise _refusal(message, ["body", "inputs", index], "invalid_input")
    if kind.check is None:
        return
    try:
        kind.check(params, inputs)
    except FieldError as exc:
        raise _refusal(exc.message, ["body", "params", exc.field], exc.code) from exc
    except InvalidParams as exc:
        raise _refusal(exc.message, ["body", "params"], exc.code) from exc
    except InvalidInput as exc:
        raise _refusal(exc.message, ["body", "inputs"], exc.code) from exc


def check_upload(kind: JobKind[Any], upload: InputFile, index: int) -> None:
    """Refuse the submission (:class:`Invalid`, at ``body.file.<index>``) when the kind's
    ``check_upload`` finds ``upload`` unusable; a file of a type the kind does not take
    is left to :func:`check_submission`, whose message says so."""
    if kind.check_upload is None or not kind.accepts(upload.media_type):
        return
    try:
        kind.check_upload(upload)
    except InvalidInput as exc:
        raise _refusal(exc.message, ["body", "file", index], exc.code) from exc


def _inputs(session: Session, input_ids: Sequence[str | OutputRef]) -> list[SubmittedInput]:
    artifact_ids = [i for i in input_ids if isinstance(i, str)]
    rows = (
        {
            row.id: row
            for row in session.execute(
                select(Artifact.id, Artifact.name, Artifact.media_type, Artifact.size).where(
                    Artifact.id.in_(artifact_ids)
                )
            )
        }
        if artifact_ids
        else {}
    )
    return [
        SubmittedInput(
            artifact_id=i, name=rows[i].name, media_type=rows[i].media_type, size=rows[i].size
        )
        if isinstance(i, str)
        else _to_come(i)
        for i in input_ids
    ]


def _to_come(ref: OutputRef) -> SubmittedInput:
    """Another job's output as far as its name tells: the type its suffix suggests."""
    name = ref.output or f"*{ref.suffix}"
    guessed, _ = mimetypes.guess_type(f"x{ref.suffix}" if ref.output is None else name)
    return SubmittedInput(
        artifact_id=None, name=name, media_type=guessed or "", size=0, from_job=ref.job
    )


def _refusal(message: str, loc: list[str | int], code: str) -> Invalid:
    return Invalid(message, [{"loc": loc, "msg": message, "type": code}], code=code)
