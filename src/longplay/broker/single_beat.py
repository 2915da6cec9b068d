"""One beat per deployment: the beat that schedules holds a lease in Redis and renews
it; a second beat (a standby, or one started by mistake) waits until the lease lapses,
then takes over. Two beats at once would each send every periodic task, and share one
schedule file where the data folder is shared.

A lease held by a beat process of this host that is gone (``up`` killed with
``kill -9``) is taken at once rather than after it lapses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import redis

from longplay import keys
from longplay.broker.liveness import process_is_gone

log = logging.getLogger(__name__)

LEASE_SECONDS = 15.0
RENEW_EVERY = 5.0

_RENEW = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
if not holder then
  return redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2]) and 1 or 0
end
return 0
"""
"""Extend the lease if this beat holds it, or hold it again if no one does (Redis
restarted without its data, the key evicted, this process paused past the lease); 0
when another beat holds it."""
_TAKE_FROM = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('set', KEYS[1], ARGV[2], 'px', ARGV[3])
end
return false
"""
"""Take the lease from a holder found gone, if it is still that holder's."""


def scheduling(client: redis.Redis) -> bool:
    """Whether a beat holds the lease, so that one schedules (``/healthz``'s ``beat``)."""
    return bool(client.exists(keys.BEAT_LEASE))


def me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _gone(holder: str) -> bool:
    host, _, pid = holder.rpartition(":")
    return host == socket.gethostname() and process_is_gone(pid)


def take(client: redis.Redis, *, waiting: Callable[[str], None]) -> None:
    """Hold the lease before returning, waiting for another beat's to lapse; tell
    ``waiting`` (once) who holds it while this beat waits."""
    holder_me, lease_ms = me(), int(LEASE_SECONDS * 1000)
    told = False
    while True:
        try:
            if client.set(keys.BEAT_LEASE, holder_me, nx=True, px=lease_ms):
                # Said where a standby took over too, so that a handover shows in the log.
                log.info("beat %s holds the lease and schedules", holder_me)
                return
            raw = client.get(keys.BEAT_LEASE)
            holder = raw.decode() if isinstance(raw, bytes) else str(raw or "")
            if holder and _gone(holder):
                if client.eval(_TAKE_FROM, 1, keys.BEAT_LEASE, holder, holder_me, lease_ms):
                    log.info("beat %s was gone; this beat takes over", holder)
                    return
                continue
            if holder and not told:
                waiting(holder)
                told = True
        except redis.RedisError as exc:
            log.warning("beat lease: Redis did not answer (%s); trying again", exc)
        time.sleep(RENEW_EVERY)


lost = threading.Event()
"""Set when another beat took the lease: this process stops, and exits with a failure
status so that a supervisor (``up``, systemd, Compose) starts it again, as a standby."""
given_back = threading.Event()
"""Set when this beat gave the lease back as it stops: it is not renewed again."""


def keep(client: redis.Redis) -> threading.Thread:
    """Renew the lease every :data:`RENEW_EVERY` seconds for as long as this process
    lives. A beat that finds the lease held by another stops itself (SIGTERM, and
    :data:`lost`): two must not schedule at once."""

    def renew() -> None:
        holder_me, lease_ms = me(), int(LEASE_SECONDS * 1000)
        while True:
            time.sleep(RENEW_EVERY)
            try:
                held = client.eval(_RENEW, 1, keys.BEAT_LEASE, holder_me, lease_ms)
            except redis.RedisError as exc:
                log.warning("beat lease not renewed, Redis did not answer: %s", exc)
                continue
            if given_back.is_set():
                return
            if not held:
                log.error("another beat holds the lease now; this one stops")
                lost.set()
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=renew, name="beat-lease", daemon=True)
    thread.start()
    return thread


_GIVE_BACK = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def give_back(client: redis.Redis) -> None:
    """Let a standby take over at once as this beat stops (else the lease lapses)."""
    given_back.set()
    with contextlib.suppress(redis.RedisError):
        if client.eval(_GIVE_BACK, 1, keys.BEAT_LEASE, me()):
            log.info("beat %s stops and gives back the lease: a standby takes over", me())
