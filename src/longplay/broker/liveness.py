"""Worker liveness: while its consumer is connected to the broker, each worker's main
process marks itself alive in Redis every few seconds; ``/healthz`` counts the marks.

A mark rather than a broadcast ping: reading it is one Redis round trip with a short
timeout, so a health check cannot hang on a worker that does not answer.

Each mark also says how many jobs the worker runs at once, and for which resources:
admission hands over as many jobs as the live workers have free slots
(:func:`capacity`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from typing import Any

import redis
from celery import Celery, bootsteps

from longplay import keys
from longplay.redis_client import get_quick_redis

log = logging.getLogger(__name__)

ALIVE_INTERVAL = 2.0
"""Seconds between a worker's marks."""
ALIVE_TTL = 3 * ALIVE_INTERVAL + 1
"""A worker whose last mark is older than this counts as gone."""
FORGET_AFTER = 3600.0
"""Marks older than this are removed from the set."""
RESOURCES = ("cpu", "gpu")


def this_process() -> str:
    """The name a worker's main process marks itself alive under: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def mark_alive(
    client: redis.Redis,
    name: str,
    *,
    slots: dict[str, int] | None = None,
    now: float | None = None,
) -> None:
    """Mark the worker ``name`` alive, running up to ``slots`` jobs per resource."""
    at = time.time() if now is None else now
    pipe = client.pipeline(transaction=False)
    pipe.zadd(keys.WORKERS_ALIVE, {name: at})
    pipe.zremrangebyscore(keys.WORKERS_ALIVE, "-inf", at - FORGET_AFTER)
    if slots is not None:
        pipe.set(keys.worker_slots(name), json.dumps(slots), px=int(ALIVE_TTL * 1000))
    pipe.execute()


def capacity(client: redis.Redis, *, now: float | None = None) -> dict[str, int]:
    """Jobs the live workers run at once, per resource (a worker that takes both
    resources counts its slots for each)."""
    names = live_workers(client, now=now)
    found: dict[str, int] = dict.fromkeys(RESOURCES, 0)
    if not names:
        return found
    for raw in client.mget([keys.worker_slots(name) for name in names]):
        for resource, count in (json.loads(raw) if raw else {}).items():
            if resource in found:
                found[resource] += int(count)
    return found


def live_workers(client: redis.Redis, *, now: float | None = None) -> list[str]:
    """Workers marked alive in the last :data:`ALIVE_TTL` seconds, except those on this
    host whose process is known to be gone (a ``kill -9`` leaves a fresh mark behind)."""
    at = time.time() if now is None else now
    names = client.zrangebyscore(keys.WORKERS_ALIVE, at - ALIVE_TTL, "+inf")
    found = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return [name for name in found if not _gone_here(name)]


def _gone_here(name: str) -> bool:
    host, _, pid = name.rpartition(":")
    return host == socket.gethostname() and process_is_gone(pid)


def live_reports(client: redis.Redis) -> list[bytes | str]:
    """What the pool processes of live workers report about themselves (engines loaded,
    last job), by process name: a stopped or killed worker's processes are left out, and
    so is a process of this host that is gone (a pool process killed and replaced)."""
    live = tuple(f"{name}:" for name in live_workers(client))
    names = sorted(client.scan_iter(match=keys.WORKER_PROCESSES, count=500))
    here = f"{socket.gethostname()}:"
    found: list[bytes | str] = []
    for key, raw in zip(names, client.mget(names) if names else [], strict=True):
        process = key.decode().removeprefix(keys.worker_process(""))
        if not raw or not process.startswith(live):
            continue
        if process.startswith(here) and process_is_gone(process.rpartition(":")[2]):
            continue
        found.append(raw)
    return found


def process_is_gone(pid: str) -> bool:
    """Whether the process ``pid`` (digits) of this host is dead; False when it lives,
    belongs to someone else, or ``pid`` is not a process id."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Liveness(bootsteps.StartStopStep):
    """Consumer bootstep: marks the worker alive from when it consumes until it stops
    (or loses the broker, when Celery stops and restarts the consumer's steps)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        self.tref: Any = None
        self.name_ = this_process()
        self.slots: dict[str, int] = {}
        super().__init__(parent, **kwargs)

    def start(self, parent: Any) -> None:
        self.slots = slots_of(parent)
        self._mark()
        self.tref = parent.timer.call_repeatedly(ALIVE_INTERVAL, self._mark)

    def stop(self, parent: Any) -> None:
        if self.tref is not None:
            parent.timer.cancel(self.tref)
            self.tref = None
        with contextlib.suppress(redis.RedisError):
            pipe = get_quick_redis().pipeline(transaction=False)
            pipe.zrem(keys.WORKERS_ALIVE, self.name_)
            pipe.delete(keys.worker_slots(self.name_))
            pipe.execute()

    shutdown = stop

    def _mark(self) -> None:
        try:
            mark_alive(get_quick_redis(), self.name_, slots=self.slots)
        except redis.RedisError as exc:
            log.warning("could not mark this worker alive: %s", exc)


def slots_of(consumer: Any) -> dict[str, int]:
    """The worker's pool size for each resource whose queues it consumes."""
    consumed = set(consumer.app.amqp.queues.consume_from)
    size = int(consumer.controller.concurrency or 0)
    return {
        resource: size
        for resource in RESOURCES
        if any(keys.queue_name(resource, p) in consumed for p in keys.PRIORITIES)
    }


def install(app: Celery) -> None:
    """Add the liveness step to ``app``'s workers; call before the worker starts."""
    app.steps["consumer"].add(Liveness)
