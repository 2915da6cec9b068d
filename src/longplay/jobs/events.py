"""Job events on Redis streams: every state or progress change, resumable by id.

The store stays the source of truth; the stream is the live feed a client follows
(SSE, ``longplay submit --wait``) and resumes from the last id it saw.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from redis.client import Pipeline

from longplay import keys
from longplay.jobs.hooks import Announcement
from longplay.redis_client import get_redis
from longplay.settings import get_settings

STREAM_MAXLEN = 2000
RENEWING = frozenset({"queued", "completed", "failed", "cancelled", "expired"})
"""Events that (re)set the stream's time to live: a job's first and its last."""


def make_event(event_type: str, job_id: str, **data: Any) -> dict[str, Any]:
    return {"type": event_type, "job_id": job_id, "at": datetime.now(UTC).isoformat(), **data}


def send(pipe: Pipeline, announcement: Announcement) -> None:
    """The hooks' ``sent`` subscriber: append every announcement to its job's stream.

    A job's first and last events (:data:`RENEWING`) (re)set the stream's time to live;
    the ones between need not. Losing a live event is acceptable (the store has the
    state); failing the job because the event bus blinked is not (the hooks log it).
    """
    event_type, job_id = announcement.event, announcement.job_id
    event = make_event(event_type, job_id, **announcement.data)
    stream = keys.events_stream(job_id)
    pipe.xadd(stream, {"data": json.dumps(event, default=str)}, maxlen=STREAM_MAXLEN)
    if event_type in RENEWING:
        pipe.expire(stream, get_settings().retention.event_retention_seconds)


def delete_stream(job_id: str) -> None:
    get_redis().delete(keys.events_stream(job_id))
