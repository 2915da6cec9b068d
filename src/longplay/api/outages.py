"""The API's and the dashboard's side of an outage (:mod:`longplay.jobs.outages` says
which errors are one): the ``Retry-After`` of their 503, and its line in the log.
"""

from __future__ import annotations

import logging

from fastapi import Request

from longplay.jobs.outages import STORAGE_FULL, note_store_full, said

log = logging.getLogger(__name__)

RETRY_AFTER = "2"
RETRY_AFTER_FULL = "60"
"""A full disk is mended by a person freeing space, in minutes, not seconds."""
UNSTORABLE = (
    "the request has a value the database cannot take: a text with a NUL character "
    "(\\u0000), or a number out of range"
)
"""What a ``DataError`` no check caught before tells the client (a 422): the request's
fault, without the SQL or the value."""


def log_outage(request: Request, part: str, exc: BaseException) -> None:
    """One line: the request, the part, the error's type and first line."""
    log.warning("%s %s: %s did not answer (%s)", request.method, request.url.path, part, said(exc))


def log_storage_full(request: Request, exc: BaseException) -> None:
    """One line: the request, and what said the disk is full (its path is the log's);
    the database's full disk is marked for ``/healthz``."""
    log.warning(
        "%s %s: not done, %s (%s)", request.method, request.url.path, STORAGE_FULL, said(exc)
    )
    note_store_full(exc)
