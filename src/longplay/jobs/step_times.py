"""How long each step of a kind takes, as its share of a run's time, learned from the
runs that completed.

A step's declared weight says how much of the bar it fills, not how long it takes: a
podcast's first two steps fill 30 % of its bar in half a second of its minute, a dub
translates for two thirds of its time in 40 % of its bar. An ETA that goes by the
weights alone said 9 s were left for 40 s of a 64 s podcast. The shares kept here (one
Redis hash per kind, shared by every worker) let the ETA go by time instead, once a
run of the kind has completed; a kind with none yet goes by its weights.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis

from longplay.keys import step_times
from longplay.redis_client import get_redis

log = logging.getLogger(__name__)

LEARN_FROM_S = 1.0
"""Seconds a run must have taken to be learned from: a shorter one has no ETA to show,
and learning costs it a Redis round trip."""
NEWEST_SAY = 0.3
"""The newest run's weight in the shares kept (the rest is the runs before it)."""
UNUSUALLY_SHORT = 1 / 3
"""A run shorter than this part of the kind's usual one is not learned from: it reused
earlier work (a podcast whose turns were voiced before took 11 s of its usual 50, and
its shares made the next runs' ETAs twice too long). It still moves the usual length,
so a deployment whose inputs shrink learns again."""
READ_EVERY_S = 30.0
"""Seconds a process goes by its last read of a kind's shares before reading again."""
KEEP_FOR_S = 90 * 86400
"""Seconds a kind's shares are kept after its last completed run learned from."""
RUN_SECONDS = "_run_seconds"
"""The field of a kind's hash that keeps its usual run's seconds, beside the shares."""


@dataclass(frozen=True)
class _Kept:
    """A kind's shares (None: none kept) and its usual run's seconds, as read."""

    shares: dict[str, float] | None
    run_seconds: float | None


_read: dict[str, tuple[float, _Kept]] = {}
"""Per kind: when it was last read here (monotonic seconds), and what was kept."""


def shares_of(kind: str, steps: Sequence[str]) -> dict[str, float] | None:
    """Each of ``steps``' share of a run of ``kind`` (summing to 1), or None where no run
    of these steps has been learned from (or Redis does not answer: the ETA goes by
    the weights then, and the job runs on)."""
    shares = _kept(kind).shares
    return shares if shares is not None and set(shares) == set(steps) else None


def learn(kind: str, seconds: Mapping[str, float]) -> None:
    """Blend a completed run's step times into the kind's shares, unless the run was
    unusually short for it. The run is a whole one: every step of ``kind`` run in it,
    none skipped by a retry nor with nothing to do in it (the runner sees to it). A
    podcast that wrote only its script voiced nothing in 0 s: learned from, its shares
    told the next episode's ETA "0 s left" with 13 of its 18 s to go."""
    total = sum(seconds.values())
    if total < LEARN_FROM_S:
        return
    usual = _kept(kind).run_seconds
    before = shares_of(kind, list(seconds))
    run = {step: spent / total for step, spent in seconds.items()}
    if before is None:
        shares = run
    elif usual is not None and total < UNUSUALLY_SHORT * usual:
        shares = before
    else:
        shares = {s: NEWEST_SAY * run[s] + (1 - NEWEST_SAY) * before[s] for s in run}
    usual = total if usual is None else NEWEST_SAY * total + (1 - NEWEST_SAY) * usual
    key = step_times(kind)
    try:
        with get_redis().pipeline(transaction=True) as pipe:
            pipe.delete(key)  # steps a kind no longer has go with the old shares
            pipe.hset(key, mapping={**{s: repr(v) for s, v in shares.items()}, RUN_SECONDS: usual})
            pipe.expire(key, KEEP_FOR_S)
            pipe.execute()
    except redis.RedisError as exc:
        log.debug("step times of %s not kept: %s", kind, exc)
        return
    _read[kind] = (time.monotonic(), _Kept(shares, usual))


def _kept(kind: str) -> _Kept:
    """What is kept for ``kind``, read at most every :data:`READ_EVERY_S` here."""
    now = time.monotonic()
    cached = _read.get(kind)
    if cached is None or now - cached[0] > READ_EVERY_S:
        try:
            kept = get_redis().hgetall(step_times(kind))
        except redis.RedisError as exc:
            log.debug("step times of %s not read: %s", kind, exc)
            kept = {}
        cached = (now, _parsed(kept))
        _read[kind] = cached
    return cached[1]


def _parsed(kept: Mapping[bytes | str, bytes | str]) -> _Kept:
    """The shares and usual seconds of a Redis hash; no shares where it is empty or they
    are not shares (a hand-edited or foreign value: the weights are a safe answer)."""
    try:
        fields = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in kept.items()}
    except (UnicodeDecodeError, ValueError):
        return _Kept(None, None)
    usual = fields.pop(RUN_SECONDS, None)
    if not fields or any(not 0 <= v <= 1 for v in fields.values()):
        return _Kept(None, usual)
    return _Kept(fields, usual)
