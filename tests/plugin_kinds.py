"""Job kinds for the tests, loaded by the test workers through ``LONGPLAY_PLUGINS``.

They show the framework side too: a team's own kind is a params model and a list
of steps, registered at import. ``StepContext[SleepParams]`` types ``ctx.params``:
``tests/test_framework_typing.py`` runs mypy --strict over this file.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterator
from typing import Literal

import psycopg
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError

from longplay.framework import (
    ItemContext,
    JobKind,
    PermanentError,
    RetryableError,
    RetryPolicy,
    Step,
    StepContext,
    register,
)


class SleepParams(BaseModel):
    seconds: float = Field(1.0, ge=0, le=600)
    ticks: int = Field(10, ge=1, le=10_000)
    fail: Literal["permanent", "retryable", "settings", "disk", "database", "bug"] | None = None
    text: str = "done"


def prepare(ctx: StepContext[SleepParams]) -> None:
    ctx.state["prepared_at"] = time.time()
    # Scratch space from the start, like a media job's (the work folder is made on use).
    (ctx.workdir / "prepared.txt").write_text("prepared")
    ctx.advance(1, 1, prepared=True)


def work(ctx: StepContext[SleepParams]) -> None:
    params = ctx.params
    for tick in range(params.ticks):
        time.sleep(params.seconds / params.ticks)
        ctx.advance(tick + 1, params.ticks, tick=tick + 1)
    if params.fail == "permanent":
        raise PermanentError("the test asked this job to fail", code="asked_to_fail")
    if params.fail == "retryable":
        raise RetryableError("the test asked for a retryable failure", code="asked_to_retry")
    if params.fail == "settings":  # as an engine server that refuses the key
        raise PermanentError(
            "test server refused the credentials (401); check LONGPLAY_TEST_API_KEY",
            code="engine_auth_failed",
        )
    out = ctx.workdir / "result.txt"
    if params.fail == "disk":  # as the data folder's disk answers when it is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out))
    if params.fail == "database":  # as PostgreSQL refuses a write when its disk is full
        raise OperationalError("UPDATE jobs", {}, psycopg.errors.DiskFull("could not extend"))
    if params.fail == "bug":  # as a kind's own code does, with a mistake in it
        raise KeyError("speaker")
    out.write_text(params.text)
    ctx.add_output(out, media_type="text/plain")


register(
    JobKind(
        name="sleep",
        description="Sleeps, reporting progress, then writes its text parameter to a file.",
        params=SleepParams,
        steps=[Step("prepare", prepare, weight=1), Step("work", work, weight=9)],
    )
)


register(
    JobKind(
        name="gpu_sleep",
        description="The sleep job, routed to workers that take GPU work.",
        params=SleepParams,
        steps=[Step("work", work)],
        resource="gpu",
    )
)


class FlakyParams(BaseModel):
    failures: int = Field(1, ge=0, le=5)
    """How many times the second step fails (retryably) before it succeeds."""


def _count(job_id: str, name: str) -> int:
    """A per-job counter in Redis, for the test to see how often a step really ran."""
    from longplay.redis_client import get_redis

    return int(get_redis().incr(f"test:{job_id}:{name}"))


def first(ctx: StepContext[FlakyParams]) -> None:
    _count(ctx.job_id, "first")
    out = ctx.workdir / "first.txt"
    out.write_text("made by the first step")
    ctx.add_output(out)
    ctx.state["first"] = "done"


def second(ctx: StepContext[FlakyParams]) -> None:
    params = ctx.params
    if _count(ctx.job_id, "second") <= params.failures:
        raise RetryableError("the engine timed out (test)", code="engine_timeout")
    [made] = ctx.outputs("first")
    out = ctx.workdir / "second.txt"
    out.write_text(made.path.read_text().upper() + " / " + ctx.state["first"])
    ctx.add_output(out)


register(
    JobKind(
        name="flaky",
        description="Its second step fails retryably a given number of times.",
        params=FlakyParams,
        steps=[Step("first", first), Step("second", second)],
    )
)


class LimitedParams(BaseModel):
    seconds: float = 10.0
    stubborn: bool = False
    """Ignore the soft limit, so that only the hard one stops the job."""


def overrun(ctx: StepContext[LimitedParams]) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    params = ctx.params
    deadline = time.monotonic() + params.seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except SoftTimeLimitExceeded:
            if not params.stubborn:
                raise


register(
    JobKind(
        name="limited",
        description="Runs past its time limits.",
        params=LimitedParams,
        steps=[Step("overrun", overrun)],
        soft_time_limit=1.0,
        time_limit=3.0,
    )
)


class StubbornParams(BaseModel):
    seconds: float = Field(60.0, ge=0, le=600)


def partial(ctx: StepContext[StubbornParams]) -> None:
    out = ctx.workdir / "partial.txt"
    out.write_text("made before the cancel")
    ctx.add_output(out)


def ignore_cancel(ctx: StepContext[StubbornParams]) -> None:
    """Sleeps without ever reaching a checkpoint, with a file in its scratch space."""
    params = ctx.params
    _count(ctx.job_id, "ignore_cancel")
    (ctx.workdir / "scratch.bin").write_bytes(b"\0" * 1024)
    time.sleep(params.seconds)


register(
    JobKind(
        name="stubborn",
        description="Writes a partial output, then sleeps without reporting progress.",
        params=StubbornParams,
        steps=[Step("partial", partial, weight=1), Step("ignore", ignore_cancel, weight=9)],
    )
)


class LopsidedParams(BaseModel):
    quick: float = Field(0.2, ge=0, le=60)
    slow: float = Field(4.0, ge=0, le=60)


def quick_step(ctx: StepContext[LopsidedParams]) -> None:
    time.sleep(ctx.params.quick)
    ctx.advance(1, 1)


def slow_step(ctx: StepContext[LopsidedParams]) -> None:
    for tick in range(20):
        time.sleep(ctx.params.slow / 20)
        ctx.advance(tick + 1, 20)


register(
    JobKind(
        name="lopsided",
        description="Most of its bar in a moment, most of its time in the rest: for ETAs.",
        params=LopsidedParams,
        steps=[Step("quick", quick_step, weight=9), Step("slow", slow_step, weight=1)],
    )
)


class TrickleParams(BaseModel):
    items: int = Field(6, ge=1, le=100)
    gap: float = Field(0.5, ge=0, le=10)
    """Seconds the step takes to make each item after the first."""
    work: float = Field(0.1, ge=0, le=10)
    """Seconds each item takes to run."""


def run_item(ctx: ItemContext[TrickleParams], item: int) -> dict[str, float]:
    """Which process ran the item, and when it was done."""
    time.sleep(ctx.params.work)
    ctx.advance(1, 1)
    return {"item": item, "pid": os.getpid(), "done_at": time.time()}


def trickle(ctx: StepContext[TrickleParams]) -> None:
    """Maps over items it makes one at a time, ``gap`` seconds apart; writes the results,
    its own process and when the map asked past the last item (that is, had it)."""
    made: dict[str, float] = {}

    def items() -> Iterator[int]:
        for n in range(ctx.params.items):
            if n:
                time.sleep(ctx.params.gap)
            yield n
        made["last_at"] = time.time()

    results = ctx.map(run_item, items())
    out = ctx.workdir / "trickle.json"
    body = {"pid": os.getpid(), "made_last_at": made["last_at"], "results": results}
    out.write_text(json.dumps(body))
    ctx.add_output(out, media_type="application/json")


register(
    JobKind(
        name="trickle",
        description="Spreads items over 2 processes while it still makes them, slowly.",
        params=TrickleParams,
        steps=[Step("trickle", trickle)],
        fan_out=2,
    )
)


class Label(BaseModel):
    """A nested model, as plain as the outer one: it drops a name it does not have."""

    text: str = "plain"


class ErrorPublic(BaseModel):
    """Named as one of the API's own models (a job's error): the OpenAPI document keeps
    both, this one under a name of its own."""

    severity: int = 1


class MistakesParams(BaseModel):
    mistake: Literal[
        "details",
        "big_details",
        "keys",
        "state",
        "twice",
        "vanished",
        "outputs",
        "returns",
        "secret",
        "big_state",
    ]
    """``details``: reports a datetime and a Path as progress details; ``big_details``:
    reports a small detail, then the text so far, 20 KiB of it; ``keys``: keeps
    a number key and a tuple in ``ctx.state``; ``state``: keeps a datetime there;
    ``twice``: adds the same output twice; ``vanished``: adds an output, then deletes
    it (after another one) before the step ends; ``outputs``: asks for the outputs of a
    step the kind does not have; ``returns``: returns the path of the file it made
    instead of adding it as an output; ``secret``: raises an error whose message has a
    database URL with its password, and a password as a DSN's keyword; ``big_state``:
    keeps 200 KB of words and a count in ``ctx.state``."""
    retry: bool = False
    """The second step fails retryably the first time."""
    fail: bool = False
    """The first step fails at its end (a failed job keeps its step details)."""
    label: Label = Label()
    error: ErrorPublic = ErrorPublic()


def make_mistake(ctx: StepContext[MistakesParams]) -> None:
    from datetime import datetime
    from pathlib import Path

    mistake = ctx.params.mistake
    if mistake == "details":
        ctx.advance(1, 2, at=datetime(2024, 5, 6, 7, 8, 9), path=Path("/tmp"))
        time.sleep(0.3)  # past the write interval: the next advance writes the store
        ctx.advance(2, 2, at=datetime(2024, 5, 6, 7, 8, 9), path=Path("/tmp"))
    elif mistake == "big_details":
        ctx.advance(1, 2, words=4)
        ctx.advance(2, 2, words=4000, text="word " * 4000)
    elif mistake == "keys":
        ctx.state[1] = "one"  # type: ignore[index]
        ctx.state["pair"] = ("a", "b")
    elif mistake == "state":
        ctx.state["when"] = datetime(2024, 5, 6)
        out = ctx.workdir / "made.txt"
        out.write_text("made before the state was checked")
        ctx.add_output(out)
    elif mistake == "outputs":
        ctx.outputs("mistak")
    elif mistake == "big_state":
        ctx.state["words"] = ["word"] * 40_000
        ctx.state["count"] = 40_000
    elif mistake == "secret":
        raise ValueError(
            "could not connect to postgresql://admin:hunter2@db.internal:5432/prod "
            "(or host=db.internal password=hunter2 dbname=prod); mail ops@example.org"
        )
    elif mistake == "returns":
        made = ctx.workdir / "made.txt"
        made.write_text("made, and returned rather than added")
        return made  # type: ignore[return-value]
    elif mistake == "vanished":
        made = ctx.workdir / "made.txt"
        made.write_text("made")
        gone = ctx.workdir / "gone.txt"
        gone.write_text("deleted before the step ends")
        ctx.add_output(made)
        ctx.add_output(gone)
        gone.unlink()
    else:
        made = ctx.workdir / "made.txt"
        made.write_text("made")
        twice = ctx.workdir / "twice.txt"
        twice.write_text("added twice")
        ctx.add_output(made)
        ctx.add_output(twice)
        ctx.add_output(twice)
    if ctx.params.fail:
        raise PermanentError("the test asked this job to fail", code="asked_to_fail")


def after_mistake(ctx: StepContext[MistakesParams]) -> None:
    """What the step after the mistake sees of the state, as an output."""
    if ctx.params.retry and _count(ctx.job_id, "after_mistake") == 1:
        raise RetryableError("the engine timed out (test)", code="engine_timeout")
    state = ctx.state
    seen = {
        "keys": sorted(repr(k) for k in state),
        "types": {repr(k): type(v).__name__ for k, v in state.items()},
    }
    out = ctx.workdir / "seen.json"
    out.write_text(json.dumps(seen))
    ctx.add_output(out, media_type="application/json")


register(
    JobKind(
        name="mistakes",
        description="Makes a mistake a plugin author could make, then looks at the state.",
        params=MistakesParams,
        steps=[Step("mistake", make_mistake), Step("after", after_mistake)],
        retry=RetryPolicy(max_attempts=2, backoff=0.05, max_backoff=0.1),
    )
)


class StubbornMapParams(BaseModel):
    seconds: float = Field(20.0, ge=0, le=600)
    """Seconds each item works without reporting."""


def burn_without_reports(ctx: ItemContext[StubbornMapParams], item: int) -> int:
    """Keeps a core busy for ``seconds`` without reaching a checkpoint (as one long call
    into a model does), with a file of its own in the job's scratch space."""
    _count(ctx.job_id, "burn")
    (ctx.workdir / f"item-{item}.bin").write_bytes(b"\0" * 1024)
    deadline = time.monotonic() + ctx.params.seconds
    while time.monotonic() < deadline:
        sum(range(10_000))
    return item


def stubborn_map(ctx: StepContext[StubbornMapParams]) -> None:
    ctx.map(burn_without_reports, [0, 1])


register(
    JobKind(
        name="stubborn_map",
        description="Spreads 2 items over 2 processes that work on without a checkpoint.",
        params=StubbornMapParams,
        steps=[Step("burn", stubborn_map)],
        fan_out=2,
    )
)
