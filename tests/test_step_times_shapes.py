"""A run of another shape than the kind's whole runs teaches its ETA nothing.

A podcast with ``script_only`` writes its script and voices nothing: its audio steps
took 0 s, and learned from like a whole run, the kept shares said voicing takes next to
none of a run. The next episode's ETA said "0 s left" once its script was written, with
13 of its 18 s to go; a fresh deployment's first runs are often script-only ones. A step
says it has nothing to do in a run (``ctx.nothing_to_do()``), and that run is not
learned from. The real runner in this process, on a real database and Redis.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import Stack
from pydantic import BaseModel

from longplay import redis_client
from longplay import settings as config
from longplay.framework import JobKind, Step, StepContext, register
from longplay.jobs import step_times
from longplay.jobs.runner import run_job
from longplay.keys import step_times as step_times_key
from longplay.store.db import session_scope
from longplay.store.models import Job, utcnow
from longplay.store.owners import get_or_create_owner

KIND = "shaped"
_ids = itertools.count(1)


class ShapedParams(BaseModel):
    script_only: bool = False


def write(ctx: StepContext[ShapedParams]) -> None:
    time.sleep(1.1 if ctx.params.script_only else 0.3)  # either run is long enough to learn
    ctx.advance(1, 1)


def voice(ctx: StepContext[ShapedParams]) -> None:
    if ctx.params.script_only:
        ctx.nothing_to_do()
        return
    time.sleep(0.9)
    ctx.advance(1, 1)


register(
    JobKind(
        name=KIND,
        description="Writes, then voices what it wrote, unless asked for the script only.",
        params=ShapedParams,
        steps=[Step("writing_script", write, weight=50), Step("generating_audio", voice)],
    )
)


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """A database and Redis this test process runs jobs on, with no shares kept yet."""
    parts = Stack(tmp_path, "sqlite")
    monkeypatch.setenv("LONGPLAY_DATABASE_URL", parts.database_url)
    monkeypatch.setenv("LONGPLAY_REDIS_URL", parts.redis_url)
    config.get_settings.cache_clear()
    monkeypatch.setattr(redis_client, "_client", None)
    monkeypatch.setattr(step_times, "_read", {})
    yield parts
    parts.close()
    config.get_settings.cache_clear()


def run(*, script_only: bool) -> None:
    """One job of the kind, run to its end by the runner here."""
    job_id = f"job_shaped_{next(_ids)}"
    with session_scope() as session:
        owner = get_or_create_owner(session, "alice")
        session.add(
            Job(
                id=job_id,
                owner_id=owner.id,
                kind=KIND,
                params={"script_only": script_only},
                dispatched_at=utcnow(),  # handed to the broker: claimable
            )
        )
    assert run_job(job_id, worker="here:1:1", is_gone=lambda _holder: False)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "completed", job and job.error


def kept(deployment: Stack) -> dict[str, float]:
    stored = redis.Redis.from_url(deployment.redis_url).hgetall(step_times_key(KIND))
    return {k.decode(): float(v) for k, v in stored.items()}


def test_a_script_only_run_teaches_the_shares_of_whole_runs_nothing(deployment: Stack) -> None:
    # A fresh deployment's first run writes only the script: nothing is learned, neither
    # shares nor a usual run length, so the next run still goes by the weights.
    run(script_only=True)
    assert kept(deployment) == {}
    assert step_times.shares_of(KIND, ["writing_script", "generating_audio"]) is None

    run(script_only=False)
    whole = kept(deployment)
    assert 0.6 < whole["generating_audio"] < 0.9, whole  # 0.9 s of 1.2

    # Between whole runs, a script-only run leaves what they taught as it was: learned
    # from, the audio step's share fell from 0.75 to 0.52.
    run(script_only=True)
    assert kept(deployment) == whole

    run(script_only=False)
    after = kept(deployment)
    assert 0.6 < after["generating_audio"] < 0.9, after
    assert after["writing_script"] + after["generating_audio"] == pytest.approx(1.0)
