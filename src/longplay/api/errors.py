"""The one error shape every API error has, and its place in the OpenAPI document.

Every answer that is not a success is ``{"error": {"code", "message", "retryable",
"details"?}}``: the service's refusals, FastAPI's own validation errors and
HTTPExceptions (a missing key, a body too large), and anything unforeseen. ``code``
is a stable snake_case word a client can branch on, the same kind of word a failed
job's ``error.code`` is; ``message`` is for the person reading it; ``retryable`` says
whether the same request may pass later, always there, as a failed job's is.

Routes document the errors they can answer with :func:`errors`::

    @router.get("/{job_id}", responses=errors(401, 404))
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from longplay.jobs.refusals import problem_text
from longplay.store.views import public_message

CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    416: "range_not_satisfiable",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
    507: "storage_full",
}
"""The code an error of each status has unless the service names a finer one."""

RETRYABLE_CODES = frozenset({"rate_limited", "unavailable", "storage_full"})
"""The codes whose requests may pass later when the error itself does not say: a limit
that resets (429), a part of the service that is back (503)."""


class ErrorDetail(BaseModel):
    """One problem in a request: where it is and what is wrong with it."""

    loc: list[str | int] = Field(
        description='Where: e.g. ["body", "params", "target_language"] or ["query", "limit"].'
    )
    message: str
    type: str = Field(description="What kind of problem, e.g. missing, string_too_short.")


class ErrorInfo(BaseModel):
    code: str = Field(description="A stable snake_case word, e.g. not_found, invalid_params.")
    message: str = Field(description="What went wrong, for a person.")
    retryable: bool = Field(
        description="Whether the same request may succeed later: true for a limit "
        "(429, after Retry-After) or a part that does not answer (503); false when the "
        "request itself must change."
    )
    details: list[ErrorDetail] | SkipJsonSchema[None] = Field(
        None, description="Each problem found in the request (422)."
    )


class ErrorBody(BaseModel):
    """Every error the API answers."""

    error: ErrorInfo


def error_body(
    code: str,
    message: str,
    *,
    retryable: bool | None = None,
    details: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON of an error, without ``details`` when there are none, and without the
    server's paths in its messages. ``retryable`` is always there: when not given, it
    is true for the codes of :data:`RETRYABLE_CODES` alone."""
    if retryable is None:
        retryable = code in RETRYABLE_CODES
    error: dict[str, Any] = {
        "code": code,
        "message": _LONG_WORD.sub(_cut, public_message(message)),
        "retryable": retryable,
    }
    if details:
        error["details"] = list(details)
    return {"error": error}


LOC_PART_CHARS = 100
"""A part of a ``loc`` longer than this (a key the client made up) is shown cut: the
error is told once, not the client's whole key twice (in ``loc`` and in the message).
A word of a message longer than this (an id of 5,000 characters a client asked for)
is cut the same way: its start says which."""
_LONG_WORD = re.compile(rf"\S{{{LOC_PART_CHARS + 1},}}")


def _cut(match: re.Match[str]) -> str:
    return f"{match.group(0)[: LOC_PART_CHARS - 1]}…"


def validation_details(errors: Sequence[Any], prefix: Sequence[str | int] = ()) -> list[Any]:
    """Pydantic's or FastAPI's error list as ``details``: ``loc``, ``message``, ``type``."""
    return [
        {
            "loc": loc_shown([*prefix, *(e.get("loc") or ())]),
            "message": public_message(problem_text(str(e.get("msg", "")))),
            "type": str(e.get("type", "invalid")),
        }
        for e in errors
    ]


def loc_shown(loc: Sequence[Any]) -> list[Any]:
    """A ``loc`` as an answer shows it: parts over :data:`LOC_PART_CHARS` cut."""
    return [
        f"{part[: LOC_PART_CHARS - 1]}…"
        if isinstance(part, str) and len(part) > LOC_PART_CHARS
        else part
        for part in loc
    ]


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer"},
    }
}

_DESCRIPTIONS: dict[int, str] = {
    400: "The request could not be read (a broken multipart body, for one).",
    401: "No API key, or one that is unknown or revoked (`unauthorized`).",
    403: "The key is valid but may not do this (`forbidden`).",
    404: "No such thing among yours (`not_found`); another owner's is a 404 too.",
    409: "Not in a state that allows this (`conflict`).",
    410: "Removed by the service's retention settings (`gone`): the message says when "
    "and by which.",
    413: "The body is over the limit (`too_large`); nothing was stored.",
    416: "The Range asks for bytes past the end (`range_not_satisfiable`).",
    422: "The request is well-formed but not valid (`invalid_request`, `invalid_params`, "
    "`invalid_input`): `details` names each field; nothing was stored.",
    429: "Over a limit (`rate_limited`); nothing was stored.",
    503: "A part the request needs does not answer (`unavailable`); try again later.",
}


def _entry(status: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"model": ErrorBody, "description": _DESCRIPTIONS[status]}
    if status == 429:
        entry["headers"] = _RETRY_AFTER
    if status == 401:
        entry["headers"] = {
            "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}
        }
    return entry


ERRORS: dict[int | str, dict[str, Any]] = {status: _entry(status) for status in _DESCRIPTIONS}
"""The documented error answers by status, for a route's ``responses=``."""


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries of these error statuses; 422 is added to every
    operation by the app itself (:func:`longplay.api.openapi.complete`)."""
    return {status: ERRORS[status] for status in statuses}
