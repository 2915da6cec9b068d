"""An owner's limits, and the checks a submission passes before it is stored."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from longplay import keys
from longplay.redis_client import get_redis
from longplay.settings import Settings, get_settings
from longplay.store.models import Job, JobStatus, Owner, Priority

log = logging.getLogger(__name__)

FULL_QUEUE_RETRY_AFTER = 10
"""Seconds an owner at its queued cap is told to wait before submitting again."""
T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """What applies to one owner: its own values, else its tier's, else the settings'."""

    tier: str
    priority: Priority
    max_running: int | None
    max_queued: int | None
    submit_rate: float | None
    set_by: dict[str, str]
    """Where each limit comes from, as a refusal names it: ``your account's``, ``tier
    'pro'`` or ``the service's``."""


def _chosen(values: tuple[T | None, T | None, T | None], tier: str) -> tuple[T | None, str]:
    """The first of an owner's own value, its tier's and the settings' that is set, and
    whose it is."""
    whose_each = ("your account's", f"tier {tier!r}", "the service's")
    for value, whose in zip(values, whose_each, strict=True):
        if value is not None:
            return value, whose
    return None, ""


def limits_of(owner: Owner, settings: Settings | None = None) -> Limits:
    settings = settings or get_settings()
    tier = settings.admission.tiers.get(owner.tier) or settings.admission.tiers["standard"]
    admission = settings.admission
    max_running, running_by = _chosen(
        (owner.max_running, tier.max_running, admission.owner_max_running), owner.tier
    )
    max_queued, queued_by = _chosen(
        (owner.max_queued, tier.max_queued, admission.owner_max_queued), owner.tier
    )
    submit_rate, rate_by = _chosen(
        (owner.submit_rate, tier.submit_rate, admission.owner_submit_rate), owner.tier
    )
    return Limits(
        tier=owner.tier,
        priority=Priority(tier.priority),
        max_running=max_running,
        max_queued=max_queued,
        submit_rate=submit_rate,
        set_by={"max_running": running_by, "max_queued": queued_by, "submit_rate": rate_by},
    )


@dataclass(frozen=True)
class Refusal:
    """Why a submission is not taken now, and in how many seconds to try again."""

    message: str
    retry_after: int


# GCRA: the limiter keeps a "theoretical arrival time"; a submit is allowed while that
# time is at most a burst's worth of intervals ahead of now. Redis' clock, so every API
# process agrees.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return math.ceil(wait) end
local next_tat = tat + interval
redis.call('SET', KEYS[1], tostring(next_tat), 'PX', math.ceil(next_tat - now) + 1000)
return 0
"""


def take_submit(owner_id: str, per_minute: float) -> float:
    """Count one submission against ``per_minute`` (a burst of a minute's worth); the
    seconds to wait when it is over the limit, else 0."""
    burst = max(1, math.floor(per_minute))
    script = get_redis().register_script(_GCRA)
    wait_ms = script(keys=[keys.submit_rate(owner_id)], args=[60_000.0 / per_minute, burst])
    return int(wait_ms) / 1000


def refuse_submission(
    session: Session, owner: Owner, *, new_job_ids: Sequence[str]
) -> Refusal | None:
    """Check the owner's queued cap and submit rate before jobs (``new_job_ids``, a job
    or a flow's stages, not yet committed) are stored; a submission that passes is
    counted against the rate, a submission a job. Waiting jobs count toward the cap,
    so no owner parks an unbounded pile of them; a waiting job released later is not
    checked again (it was counted when submitted)."""
    limits = limits_of(owner)
    adding = len(new_job_ids)
    if limits.max_queued is not None:
        queued = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(
                Job.owner_id == owner.id,
                Job.status.in_([JobStatus.QUEUED.value, JobStatus.WAITING.value]),
                Job.id.not_in(list(new_job_ids)),
            )
        )
        queued = queued or 0
        if queued + adding > limits.max_queued:
            most = f"({limits.set_by['max_queued']} limit: {limits.max_queued})"
            return Refusal(
                f"you have {queued} jobs queued or waiting, the most allowed {most}; "
                "submit more once some start"
                if adding == 1
                else f"this flow's {adding} stages need room for {adding} jobs queued or "
                f"waiting, and you have {queued} of the {limits.max_queued} allowed {most}; "
                f"submit it once {queued + adding - limits.max_queued} of yours have started",
                FULL_QUEUE_RETRY_AFTER,
            )
    if limits.submit_rate is not None:
        wait = 0.0
        try:
            for _ in range(adding):
                wait = take_submit(owner.id, limits.submit_rate)
                if wait > 0:
                    break
        except redis.RedisError as exc:  # the limiter is away: let the submission in
            log.warning("submit rate limiter unavailable: %s", exc)
            wait = 0.0
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return Refusal(
                f"too many submissions: at most {limits.submit_rate:g} a minute "
                f"({limits.set_by['submit_rate']} limit); try again in {seconds} s",
                seconds,
            )
    return None
