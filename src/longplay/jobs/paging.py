"""Cursors for pages of jobs: where the last page stopped, as the list's sort key.

A list of jobs is ordered by ``(created_at, id)``, newest first, and a cursor holds
the last job's pair, not only its id, so it still works when that job was deleted
since (a client deleting the failed jobs it walks, or retention). It reads
``<microseconds since 1970, in hex>.<job id>``: at most 40 characters, so it fits a
link's query (the dashboard takes no longer one). Clients pass back what they were
given and read nothing into it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
CURSOR_PATTERN = r"^[0-9a-f]{1,15}\.[A-Za-z0-9_]{1,24}$"
"""What every cursor looks like (the API's schema says so): any string of this form
stands for a place in the list, whether or not a job is there."""
CURSOR = re.compile(r"([0-9a-f]{1,15})\.([A-Za-z0-9_]{1,24})")


def cursor_of(created_at: datetime, job_id: str) -> str:
    """The cursor of the page that follows the job created at ``created_at``."""
    return f"{(created_at - EPOCH) // MICROSECOND:x}.{job_id}"


def position(cursor: str) -> tuple[datetime, str] | None:
    """The ``(created_at, id)`` a cursor stands for; None if it is not one of ours."""
    found = CURSOR.fullmatch(cursor)
    if found is None:
        return None
    try:
        created_at = EPOCH + int(found[1], 16) * MICROSECOND
    except OverflowError:  # past the year 9999: after every job there is
        created_at = datetime.max.replace(tzinfo=UTC)
    return created_at, found[2]
