"""What the service refuses a request with: each a message for the person who sent
it; the API maps each to its HTTP status."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ServiceError(Exception):
    """A request the service refuses, with a message for the person who sent it."""


class NotFound(ServiceError):
    pass


class Invalid(ServiceError):
    def __init__(self, message: str, errors: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)


class Conflict(ServiceError):
    pass


class Forbidden(ServiceError):
    """The key is valid but may not do this (an admin-only action)."""


class Unavailable(ServiceError):
    """A part the request needs (the broker) does not answer; retry later."""


class RateLimited(ServiceError):
    """The owner is over a limit (queued jobs, submissions a minute); try again in
    ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
