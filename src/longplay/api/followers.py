"""One Redis reader per API process, fanning job events out to every live follower.

A job's events are a Redis stream (``keys.events_stream``). A thousand SSE clients
following jobs would be a thousand blocking ``XREAD`` connections if each read its own;
here one task reads every followed stream with one blocking ``XREAD`` and hands each
entry to the followers of that stream through a bounded queue. A follower reads what
it missed (the backlog before it joined, or what overflowed its queue) with a plain
``XRANGE`` on a small shared pool, and drops any entry it has already seen, so joining,
lagging and resuming with ``Last-Event-ID`` need no coordination with the reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import signal
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import redis
import redis.asyncio as aioredis

from longplay import keys

log = logging.getLogger(__name__)

READ_BLOCK_MS = 5000
"""How long the reader's ``XREAD`` blocks; a new stream wakes it at once (see ``_wake``)."""
QUEUE_SIZE = 256
"""Entries a follower may fall behind before it re-reads from the stream instead."""
READER_POOL = 16
"""Connections for backlog reads; more followers joining at once wait for one."""

Entry = tuple[str, bytes]
"""A stream entry: its id (``"<ms>-<seq>"``) and its ``data`` field."""
STOP: Entry = ("", b"")
"""Handed to every follower as the process stops: its stream ends at once."""
_STREAM_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_LARGEST = 2**64 - 1
"""Either half of a stream id is at most this (an unsigned 64-bit number)."""


def is_stream_id(text: str) -> bool:
    """Whether a stream may be read after ``text``: an entry id, ``<ms>-<seq>`` or
    ``<ms>``, below the very last one there can be. Redis refuses anything else, which
    would break the follower's stream and stall the shared read of every stream."""
    match = _STREAM_ID.fullmatch(text)
    if match is None:
        return False
    ms, seq = int(match[1]), int(match[2] or 0)
    return max(ms, seq) <= _LARGEST and (ms, seq) != (_LARGEST, _LARGEST)


def entry_key(entry_id: str) -> tuple[int, int]:
    """Stream ids in their order (compared as strings, ``"9-0"`` would follow ``"10-0"``)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(eq=False)
class Follower:
    """One client following one job's stream from ``cursor`` on."""

    stream: str
    cursor: str
    queue: asyncio.Queue[Entry] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    behind: bool = True
    """Entries may be missing from the queue: read the stream after ``cursor`` first.
    True at the start, for the backlog."""

    def offer(self, entry: Entry) -> None:
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.behind = True

    def is_new(self, entry_id: str) -> bool:
        return entry_key(entry_id) > entry_key(self.cursor)


@dataclass
class _Watched:
    cursor: str
    followers: set[Follower] = field(default_factory=set)


class EventHub:
    """The process's one reader of job event streams, started with the first follower
    and stopped with the last."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._watched: dict[str, _Watched] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake_key = keys.events_stream(f"hub-wake-{secrets.token_hex(6)}")
        self._listen: aioredis.Redis | None = None
        self._reads: aioredis.Redis | None = None
        self.stopping = False
        """The process is stopping: streams end at their next turn (:meth:`end_streams`)."""

    def _clients(self) -> tuple[aioredis.Redis, aioredis.Redis]:
        # Made on first use, inside the event loop they belong to.
        if self._listen is None or self._reads is None:
            # The socket must outwait the blocking read (redis-py's default is 5 s).
            self._listen = aioredis.Redis.from_url(
                self._url, socket_timeout=READ_BLOCK_MS / 1000 + 10
            )
            pool = aioredis.BlockingConnectionPool.from_url(
                self._url, max_connections=READER_POOL, timeout=None
            )
            self._reads = aioredis.Redis(connection_pool=pool)
        return self._listen, self._reads

    @contextlib.asynccontextmanager
    async def follow(self, job_id: str, after: str) -> AsyncIterator[Follower]:
        """Follow a job's events after the entry id ``after`` (``"0-0"``: from the start),
        which must pass :func:`is_stream_id`."""
        stream = keys.events_stream(job_id)
        follower = Follower(stream, after)
        watched = self._watched.get(stream)
        is_new = watched is None
        if watched is None:
            watched = self._watched[stream] = _Watched(cursor=after)
        watched.followers.add(follower)
        if self._task is None:
            self._task = asyncio.create_task(self._read(), name="longplay-event-hub")
        elif is_new:
            await self._wake()
        try:
            yield follower
        finally:
            watched.followers.discard(follower)
            if not watched.followers and self._watched.get(stream) is watched:
                del self._watched[stream]

    async def backlog(self, follower: Follower) -> list[Entry]:
        """What the stream holds after the follower's cursor (it then catches up)."""
        _, reads = self._clients()
        follower.behind = False
        found: list[Entry] = []
        start = "(" + follower.cursor
        while True:
            batch: Any = await reads.xrange(follower.stream, min=start, count=500)
            found += [(i.decode(), f[b"data"]) for i, f in batch]
            if len(batch) < 500:
                return found
            start = "(" + found[-1][0]

    async def event_type(self, job_id: str, entry_id: str) -> str | None:
        """The type of the event ``entry_id`` in a job's (or flow's) stream; None when
        the stream holds no such entry."""
        _, reads = self._clients()
        found: Any = await reads.xrange(
            keys.events_stream(job_id), min=entry_id, max=entry_id, count=1
        )
        if not found:
            return None
        event: dict[str, Any] = json.loads(found[0][1][b"data"])
        return str(event.get("type"))

    async def last_event(self, job_id: str) -> tuple[str, str] | None:
        """The id and type of the last event in a job's (or flow's) stream; None when
        the stream holds none."""
        _, reads = self._clients()
        found: Any = await reads.xrevrange(keys.events_stream(job_id), count=1)
        if not found:
            return None
        entry_id, fields = found[0]
        event: dict[str, Any] = json.loads(fields[b"data"])
        return entry_id.decode(), str(event.get("type"))

    def end_streams(self) -> None:
        """The process is stopping: every follower's stream ends now, cleanly, instead
        of being cut by the server when its grace runs out (an error logged for each)."""
        self.stopping = True
        for watched in self._watched.values():
            for follower in watched.followers:
                follower.offer(STOP)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for client in (self._listen, self._reads):
            if client is not None:
                with contextlib.suppress(redis.RedisError):
                    await client.aclose()
        self._listen = self._reads = None

    async def _wake(self) -> None:
        """End the reader's blocking read early, so a newly followed stream is read now."""
        _, reads = self._clients()
        with contextlib.suppress(redis.RedisError):
            async with reads.pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake_key, {"data": b""}, maxlen=1)
                pipe.expire(self._wake_key, 60)
                await pipe.execute()

    async def _read(self) -> None:
        listen, _ = self._clients()
        wake_cursor = "$"
        try:
            while self._watched:
                streams: dict[str, str] = {s: w.cursor for s, w in self._watched.items()}
                streams[self._wake_key] = wake_cursor
                try:
                    batch: Any = await listen.xread(streams, count=100, block=READ_BLOCK_MS)  # type: ignore[arg-type]
                except (
                    redis.RedisError
                ) as exc:  # Redis restarting: followers fall back on the store
                    log.debug("event hub: %s; reading again in 1 s", exc)
                    await asyncio.sleep(1)
                    continue
                for name, entries in batch or []:
                    stream = name.decode()
                    if stream == self._wake_key:
                        wake_cursor = entries[-1][0].decode()
                        continue
                    watched = self._watched.get(stream)
                    if watched is None:
                        continue
                    for entry_id, fields in entries:
                        watched.cursor = entry_id.decode()
                        for follower in watched.followers:
                            follower.offer((watched.cursor, fields[b"data"]))
        finally:
            self._task = None


def end_streams_on_stop(hub: EventHub) -> Callable[[], None]:
    """Chain onto the server's SIGTERM and SIGINT handlers (uvicorn installs its own
    before the app starts): as the server begins to stop, ``hub``'s streams end, so its
    wait for open requests ends at once. Returns what puts the handlers back. Does
    nothing outside the main thread, where no signal handler can be set (a test's
    in-process client)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    before: dict[int, Any] = {}

    def chained(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(hub.end_streams)
        handler = before[signum]
        if callable(handler):
            handler(signum, frame)
        else:  # no server's handler: do what the signal does by default
            signal.signal(signum, handler)
            signal.raise_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        before[signum] = signal.getsignal(signum)
        signal.signal(signum, chained)

    def restore() -> None:
        for signum, handler in before.items():
            if signal.getsignal(signum) is chained:
                signal.signal(signum, handler)

    return restore
