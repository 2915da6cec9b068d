"""What the service refuses a request with: each a message for the person who sent
it and a stable ``code`` for the program that sent it; the API maps each to its HTTP
status and answers both in its one error shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError


class ServiceError(Exception):
    """A request the service refuses, with a message for the person who sent it."""

    code: str = "refused"
    retryable: bool | None = None
    """Whether the same request may pass later; None: not worth saying (it will not)."""


class NotFound(ServiceError):
    code = "not_found"


class Gone(NotFound):
    """Something that was there and that retention removed: the message says when and
    which setting removed it (:mod:`longplay.jobs.gone`)."""

    code = "gone"


class Invalid(ServiceError):
    """A request that is well-formed but not valid; nothing was stored.

    ``errors`` are pydantic-style problems (``loc``, ``msg``, ``type``), each naming a
    field; ``code`` is ``invalid_request`` unless a finer one applies (the same
    ``invalid_params`` / ``invalid_input`` a job would fail with at run time).
    """

    code = "invalid_request"

    def __init__(
        self, message: str, errors: Sequence[Any] = (), *, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.errors = list(errors)
        if code is not None:
            self.code = code


def problem_text(message: str) -> str:
    """A pydantic error's message without the ``Value error, `` it puts before a
    validator's own words: "bitrate applies to mp3 and ogg, not wav"."""
    return message.removeprefix("Value error, ")


def problems_of(exc: ValidationError, at: Sequence[str]) -> list[dict[str, Any]]:
    """Pydantic's problems as an :class:`Invalid`'s ``errors``: each placed under ``at``
    (``("body",)``, ``("body", "params")``), its message in the validator's own words."""
    return [
        {**p, "loc": [*at, *p["loc"]], "msg": problem_text(p["msg"])}
        for p in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


class Conflict(ServiceError):
    code = "conflict"


class Forbidden(ServiceError):
    """The key is valid but may not do this (an admin-only action)."""

    code = "forbidden"


class Unavailable(ServiceError):
    """A part the request needs (the broker) does not answer; retry later."""

    code = "unavailable"
    retryable = True


class TooLarge(ServiceError):
    """A request body over its limit; nothing of it was kept."""

    code = "too_large"


class RateLimited(ServiceError):
    """The owner is over a limit (queued jobs, submissions a minute); try again in
    ``retry_after`` seconds."""

    code = "rate_limited"
    retryable = True

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
