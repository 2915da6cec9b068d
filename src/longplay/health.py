"""Health: whether the store and Redis answer, how many workers are alive, whether a
beat schedules (its reaper alone gives back a dead worker's jobs), and how much room the
data folder's disk has left.

Each check runs with its own short timeouts (a one-shot database connection with a
connect and statement timeout, a Redis client that does not retry), all three at
once, and the report waits at most :data:`DEADLINE` for them: a part that hangs is
reported as down, never waited for.
"""

from __future__ import annotations

import concurrent.futures
import logging
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from longplay.broker.liveness import live_workers
from longplay.broker.single_beat import scheduling
from longplay.keys import STORE_FULL
from longplay.redis_client import get_quick_redis
from longplay.settings import get_settings
from longplay.store.db import normalise_url, pg_connect_args

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 1.0
"""Seconds each check's own timeouts allow (connect, statement, lock wait, socket)."""
DEADLINE = 2.5
"""Seconds a report waits for all checks together."""

_pool = concurrent.futures.ThreadPoolExecutor(max_workers=6, thread_name_prefix="health")


@dataclass(frozen=True)
class Health:
    store: str
    redis: str
    workers: int
    beat: str
    """``ok`` while a beat holds its lease, ``none`` when none does."""
    disk: str = "ok"
    """The data folder's disk: ``ok``, ``low`` or ``full`` (:func:`disk_state`); also
    ``full`` while the database's is (:func:`store_said_full`)."""
    down: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.down


@lru_cache(maxsize=4)
def _probe_engine(url: str) -> Engine:
    """An engine of one-shot connections that give up after :data:`CHECK_TIMEOUT`."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        args: dict[str, object] = {
            "timeout": CHECK_TIMEOUT,
            "check_same_thread": False,
            "isolation_level": None,
        }
    else:
        args = {**pg_connect_args(url), "connect_timeout": max(1, round(CHECK_TIMEOUT))}
    return create_engine(url, poolclass=NullPool, connect_args=args)


def check_store() -> None:
    """Read from the store; for SQLite also take (and give back) its write lock, which
    a transaction held elsewhere keeps every writer waiting for."""
    engine = _probe_engine(get_settings().effective_database_url)
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            cursor.execute("SELECT count(*) FROM alembic_version")
            cursor.execute("ROLLBACK")
        finally:
            raw.close()
        return
    with engine.connect() as connection:
        ms = int(CHECK_TIMEOUT * 1000)
        connection.execute(text(f"SET LOCAL statement_timeout = {ms}"))
        connection.execute(text(f"SET LOCAL lock_timeout = {ms}"))
        connection.execute(text("SELECT count(*) FROM alembic_version"))


def check_redis() -> None:
    get_quick_redis().ping()


def count_workers() -> int:
    return len(live_workers(get_quick_redis()))


def check_beat() -> bool:
    return scheduling(get_quick_redis())


def store_said_full() -> bool:
    """Whether the database refused a process a write for a full disk within the last
    minute (the mark :func:`longplay.jobs.outages.note_store_full` sets)."""
    return bool(get_quick_redis().exists(STORE_FULL))


FULL_BYTES = 64 * 2**20
"""Free bytes under which the data folder's disk is full: an upload, a job's output or
Redis's append-only file no longer fits, and writes fail (a 507)."""
LOW_BYTES = 2**30
LOW_SHARE = 0.1
"""Under a GiB and under a tenth of the disk free: low, time to free space."""


def disk_room() -> tuple[int, int]:
    """Free and total bytes of the data folder's disk."""
    usage = shutil.disk_usage(get_settings().data_dir)
    return usage.free, usage.total


def disk_state(free: int, total: int) -> str:
    """``full``, ``low`` or ``ok`` (:data:`FULL_BYTES`, :data:`LOW_BYTES`)."""
    if free < FULL_BYTES:
        return "full"
    return "low" if free < LOW_BYTES and free < LOW_SHARE * total else "ok"


def _outcome(name: str, future: Future[Any]) -> str:
    """``ok``, or the error's type: the report is for anyone who can reach the port,
    and a driver's message names hosts, databases and users. The message goes to the
    log, for the operator."""
    try:
        future.result(timeout=0)
    except concurrent.futures.TimeoutError:
        return f"error: no answer in {DEADLINE:g} s"
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        now = time.monotonic()
        if now - _told.get(name, -TOLD_EVERY_S) >= TOLD_EVERY_S:  # not one a probe
            _told[name] = now
            log.warning("health: %s does not answer: %s: %s", name, type(exc).__name__, lines[:1])
        return f"error: {type(exc).__name__}"
    return "ok"


TOLD_EVERY_S = 60.0
"""Seconds between two log lines about one part that does not answer: a load balancer
probes every few seconds, and a store away for minutes wrote a line each time."""
_told: dict[str, float] = {}


def report() -> Health:
    """Check every part at once; returns within about :data:`DEADLINE` seconds."""
    checks: dict[str, Callable[[], Any]] = {
        "store": check_store,
        "redis": check_redis,
        "workers": count_workers,
        "beat": check_beat,
        "disk": disk_room,
        "store_disk": store_said_full,
    }
    futures = {name: _pool.submit(check) for name, check in checks.items()}
    concurrent.futures.wait(futures.values(), timeout=DEADLINE)
    store = _outcome("store", futures["store"])
    redis_state = _outcome("redis", futures["redis"])
    workers = 0
    if _outcome("workers", futures["workers"]) == "ok":
        workers = int(futures["workers"].result())
    beat = _outcome("beat", futures["beat"])
    if beat == "ok" and not futures["beat"].result():
        beat = "none"
    disk = _outcome("disk", futures["disk"])
    if disk == "ok":
        disk = disk_state(*futures["disk"].result())
    if _outcome("store_disk", futures["store_disk"]) == "ok" and futures["store_disk"].result():
        disk = "full"  # the database's: reads, as the store's check makes, still pass
    down = [name for name, state in (("store", store), ("redis", redis_state)) if state != "ok"]
    if workers == 0:
        down.append("workers")
    if beat == "none":  # when Redis does not answer, it is the part said to be down
        down.append("beat")
    if disk == "full":
        down.append("disk")
    return Health(store=store, redis=redis_state, workers=workers, beat=beat, disk=disk, down=down)
