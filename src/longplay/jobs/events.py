"""Job events on Redis streams: every state or progress change, resumable by id.

The store stays the source of truth; the stream is the live feed a client follows
(SSE, ``longplay submit --wait``) and resumes from the last id it saw.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
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
DELETED_MARK_SECONDS = 3600
"""How long a deleted job or flow stays marked so (:func:`forget_job`): far longer than
a writer takes between its commit and its event, short enough that the marks of many
deletes cost little."""


def make_event(event_type: str, job_id: str, **data: Any) -> dict[str, Any]:
    return {"type": event_type, "job_id": job_id, "at": datetime.now(UTC).isoformat(), **data}


APPEND = """
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return false
  end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'data', ARGV[1])
if tonumber(ARGV[3]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return id
"""
"""Append an event (``ARGV[1]``) to a stream (``KEYS[1]``) unless one of the jobs or
flows it is about was deleted (``KEYS[2..]``, :func:`keys.events_deleted`), trimmed to
about ``ARGV[2]`` entries, and set its time to live to ``ARGV[3]`` seconds (0: leave
it). One step: a delete's scan of the stream, which comes after its marks, either finds
the entry or the entry is never written."""


def append(
    pipe: Pipeline | redis.Redis,
    stream: str,
    event: dict[str, Any],
    *,
    about: Sequence[str],
    ttl: int,
) -> Any:
    """Queue (on a pipeline) or run :data:`APPEND`: ``event`` onto ``stream`` unless one
    of the jobs or flows ``about`` names was deleted; ``ttl`` seconds to live from now
    (0: unchanged). Its reply is the entry's id, or None where it was refused."""
    return pipe.eval(
        APPEND,
        1 + len(about),
        stream,
        *(keys.events_deleted(i) for i in about),
        json.dumps(event, default=str),
        STREAM_MAXLEN,
        ttl,
    )


def send(pipe: Pipeline, announcement: Announcement) -> None:
    """The hooks' ``sent`` subscriber: append every announcement to its job's stream.

    A job's first and last events (:data:`RENEWING`) (re)set the stream's time to live;
    the ones between need not. Losing a live event is acceptable (the store has the
    state); failing the job because the event bus blinked is not (the hooks log it).
    An event of a job deleted meanwhile is dropped (:func:`forget_job`).
    """
    event_type, job_id = announcement.event, announcement.job_id
    event = make_event(event_type, job_id, **announcement.data)
    ttl = get_settings().retention.event_retention_seconds if event_type in RENEWING else 0
    append(pipe, keys.events_stream(job_id), event, about=[job_id], ttl=ttl)


def forget_job(job_id: str, *, flow_id: str | None = None, flow_deleted: bool = False) -> None:
    """After a job's delete committed: its stream, and its entries in its flow's stream
    (``flow_id``), or that whole stream when the flow was deleted with it
    (``flow_deleted``). Raises what Redis raises.

    The job (and a deleted flow) are marked deleted first, for
    :data:`DELETED_MARK_SECONDS`: an event a late writer sends after the mark (its
    change committed before the delete, its event comes after) is refused
    (:data:`APPEND`), and one sent before it is in the stream when it is read here, and
    so deleted.
    """
    _mark_deleted([job_id, *([flow_id] if flow_id is not None and flow_deleted else [])])
    if flow_id is not None and not flow_deleted:
        delete_job_entries(keys.events_stream(flow_id), job_id)


def forget_flow(flow_id: str) -> None:
    """After a flow's delete committed: its stream, and any event sent to it later."""
    _mark_deleted([flow_id])


def _mark_deleted(ids: Sequence[str]) -> None:
    """Mark these jobs or flows deleted, then delete their streams, in one round trip."""
    kept = min(DELETED_MARK_SECONDS, get_settings().retention.event_retention_seconds)
    pipe = get_redis().pipeline(transaction=False)
    for deleted in ids:
        pipe.set(keys.events_deleted(deleted), 1, ex=kept)
    pipe.delete(*(keys.events_stream(deleted) for deleted in ids))
    pipe.execute()


def delete_job_entries(stream: str, job_id: str) -> int:
    """Delete the entries of ``stream`` (a flow's, interleaving its stages' events) about
    the job ``job_id``; how many went. Raises what Redis raises."""
    client = get_redis()
    found: list[bytes] = []
    start = "-"
    while True:
        batch: Any = client.xrange(stream, min=start, count=500)
        for entry_id, fields in batch:
            if json.loads(fields[b"data"]).get("job_id") == job_id:
                found.append(entry_id)
        if len(batch) < 500:
            break
        start = "(" + batch[-1][0].decode()
    for at in range(0, len(found), 500):
        client.xdel(stream, *found[at : at + 500])
    return len(found)


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
