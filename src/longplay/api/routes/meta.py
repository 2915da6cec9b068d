"""Job kinds and health."""

from __future__ import annotations

from functools import cache

import anyio
from anyio import CapacityLimiter
from fastapi import APIRouter, Response, status
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from longplay.api.deps import KeyDep, as_owner
from longplay.api.errors import errors
from longplay.api.schemas import HealthPublic, KindPublic, WorkerPublic
from longplay.broker.liveness import live_reports
from longplay.framework.kinds import all_kinds
from longplay.health import Health
from longplay.health import report as health_report
from longplay.redis_client import get_redis
from longplay.store.models import Job, Owner
from longplay.store.views import public_message

router = APIRouter()
HEALTH_CHECKS_AT_ONCE = 4
"""``/healthz`` and ``/readyz`` answered at once by one API process."""


@router.get("/v1/kinds", response_model=list[KindPublic], tags=["kinds"], responses=errors(401))
async def list_kinds(key: KeyDep) -> list[KindPublic]:
    """The job kinds this service runs, with their steps and parameter schemas."""
    await as_owner(key, lambda _, owner: owner.id)
    return [KindPublic.of(k) for k in all_kinds()]


@router.get(
    "/v1/workers", response_model=list[WorkerPublic], tags=["health"], responses=errors(401)
)
async def list_workers(key: KeyDep) -> list[WorkerPublic]:
    """The worker processes, each with the engines it has loaded and its last job: a
    job of yours (of anyone's, to an admin), else null."""
    workers = await run_in_threadpool(read_workers)

    def seen_by(session: Session, owner: Owner) -> list[WorkerPublic]:
        if owner.is_admin:
            return workers
        named = {w.last_job for w in workers if w.last_job}
        theirs = set(
            session.scalars(select(Job.id).where(Job.id.in_(named), Job.owner_id == owner.id))
            if named
            else ()
        )
        return [_as_seen_by_owner(w, theirs) for w in workers]

    return await as_owner(key, seen_by)


def _as_seen_by_owner(worker: WorkerPublic, theirs: set[str]) -> WorkerPublic:
    """A worker as an owner who is not an admin sees it: another owner's job is not
    named, and an engine's model is its file's name, not where it lies on the server."""
    return worker.model_copy(
        update={
            "last_job": worker.last_job if worker.last_job in theirs else None,
            "engines": [
                e.model_copy(update={"model": public_message(e.model)}) for e in worker.engines
            ],
        }
    )


def read_workers() -> list[WorkerPublic]:
    """The last report of every live worker's pool processes (engines loaded, the job
    it last took)."""
    return [WorkerPublic.model_validate_json(r) for r in live_reports(get_redis())]


@router.get(
    "/healthz",
    response_model=HealthPublic,
    tags=["health"],
    responses={
        status.HTTP_503_SERVICE_UNAVAILABLE: {
            "model": HealthPublic,
            "description": "A part does not answer: `status` is `degraded`, `down` names it.",
        }
    },
)
async def health(response: Response) -> HealthPublic:
    """Whether the store, Redis, a worker and a beat answer (503 if not); never waits
    long."""
    found = await _health_report()
    return _answer(response, found, judged=("store", "redis", "workers", "beat", "disk"))


@router.get(
    "/readyz",
    response_model=HealthPublic,
    tags=["health"],
    responses={
        status.HTTP_503_SERVICE_UNAVAILABLE: {
            "model": HealthPublic,
            "description": "The store or Redis does not answer: this API cannot serve.",
        }
    },
)
async def ready(response: Response) -> HealthPublic:
    """Whether this API can serve: its store and Redis answer (503 if not). Workers are
    counted but not judged: none alive is no fault of this API's, and a load balancer
    probing every replica would otherwise drop them all at once."""
    return _answer(response, await _health_report(), judged=("store", "redis"))


@cache
def _health_slots() -> CapacityLimiter:
    return CapacityLimiter(HEALTH_CHECKS_AT_ONCE)


async def _health_report() -> Health:
    """The parts' health, on threads of its own limit: requests that fill the shared
    thread pool (uploads, searches, sync routes) never make a probe wait, and a probe
    that waits is a replica dropped by its load balancer."""
    return await anyio.to_thread.run_sync(health_report, limiter=_health_slots())


def _answer(response: Response, found: Health, *, judged: tuple[str, ...]) -> HealthPublic:
    down = [part for part in found.down if part in judged]
    if down:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return HealthPublic(
        status="degraded" if down else "ok",
        store=found.store,
        redis=found.redis,
        workers=found.workers,
        beat=found.beat,
        disk=found.disk,
        down=down,
    )
