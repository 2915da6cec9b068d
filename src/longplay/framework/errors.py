"""The error hierarchy that carries the retry rules.

A step raises a :class:`PermanentError` for anything a retry cannot fix (bad input,
bad parameters) and a :class:`RetryableError` for anything that may pass on its own
(an engine timeout, a lost worker, a broker or database briefly gone). The runner
turns either into the job's stored error; nothing else decides about retries.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class JobError(Exception):
    """A failure with a stable ``code`` and a message a person can act on."""

    message: str
    code: str = "job_error"
    retryable: bool = False

    def __str__(self) -> str:
        return self.message

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "retryable": self.retryable}


MENDED_BY_SETTINGS = frozenset({"engine_auth_failed", "engine_not_configured"})
"""Codes of permanent errors that a change to the service's settings mends (an engine
server's key, its URL): the job's own retries would fail the same way, but once an
operator has fixed the setting, running the job again passes."""


def same_result_again(retryable: bool | None, code: str | None) -> bool:
    """Whether running a job that failed with this error again gives the same result:
    it is not retryable, and no change of settings mends it."""
    return retryable is False and code not in MENDED_BY_SETTINGS


@dataclass
class PermanentError(JobError):
    """Retrying cannot help: the job fails at once."""

    code: str = "permanent_error"
    retryable: bool = False


@dataclass
class RetryableError(JobError):
    """May pass on its own: the job goes back to the queue while attempts remain."""

    code: str = "retryable_error"
    retryable: bool = True


@dataclass
class InvalidInput(PermanentError):
    """An input file or text the job cannot use (not audio, empty, ...)."""

    code: str = "invalid_input"


@dataclass
class InvalidParams(PermanentError):
    """Parameters that are well-formed but cannot be honoured."""

    code: str = "invalid_params"


class JobCancelled(Exception):
    """Raised at a progress checkpoint once the job's owner has cancelled it."""
