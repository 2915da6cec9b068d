"""Job events on Redis streams: every state or progress change, resumable by id.

The store stays the source of truth; the stream is the live feed a client follows
(SSE, ``longplay submit --wait``) and resumes from the last id it saw.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import redis
from redis.client import Pipeline

from longplay import keys
from longplay.jobs.hooks import Announcement, Transaction
from longplay.redis_client import get_redis
from longplay.settings import get_settings

log = logging.getLogger(__name__)

STREAM_MAXLEN = 2000
TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled", "stopped", "expired"})
"""The events a job's stream ends with (until a retry runs it again)."""
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


def drop_ends(tx: Transaction, job_id: str) -> None:
    """The job runs again (a retry, in ``tx``): the ends its stream holds now are
    dropped once it commits (:func:`drop_after_commit`), so a client that follows the
    stream from its start reads on to the new end, as one that follows it live does,
    instead of stopping at the old one. The attempts keep what ended each run."""
    drop_after_commit(tx, keys.events_stream(job_id), TERMINAL_EVENTS)


def drop_after_commit(tx: Transaction, stream: str, types: frozenset[str]) -> None:
    """Delete the entries of ``types`` that ``stream`` (a job's or a flow's) holds now,
    once ``tx`` commits: read before the commit, so only the ones already there; an
    ending written after this read is its writer's to take back."""
    try:
        entries: Any = get_redis().xrange(stream)  # at most STREAM_MAXLEN
    except redis.RedisError as exc:
        log.warning("could not read the stream %s: %s", stream, exc)
        return
    found = [
        entry_id for entry_id, fields in entries if json.loads(fields[b"data"]).get("type") in types
    ]
    if found:
        tx.after_commit(lambda: delete_entries(stream, found))


def delete_entries(stream: str, entry_ids: list[bytes]) -> None:
    """Delete these entries of ``stream``; a Redis that does not answer is logged."""
    try:
        get_redis().xdel(stream, *entry_ids)
    except redis.RedisError as exc:
        log.warning("could not delete the old end of %s: %s", stream, exc)
