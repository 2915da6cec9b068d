"""The job kind the dispatch bench runs, loaded through ``LONGPLAY_PLUGINS='["bench_kinds"]'``.

``noop`` does no work at all: one step that reports it is done (after ``sleep_ms``, 0 by
default). Whatever a noop job costs is the cost of longplay itself (store, events,
progress, Celery).
"""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from longplay.framework import JobKind, Step, StepContext, register


class NoopParams(BaseModel):
    sleep_ms: float = Field(0.0, ge=0, le=60_000)
    """Stand-in for real work, so the bench can also compare jobs that take some time."""


def finish(ctx: StepContext[NoopParams]) -> None:
    """Sleep if asked, then report the only step as done."""
    params = ctx.params
    if params.sleep_ms:
        time.sleep(params.sleep_ms / 1000)
    ctx.advance(1, 1)


NOOP = register(
    JobKind(
        name="noop",
        description="Does nothing: one step that advances once. For benchmarks.",
        params=NoopParams,
        steps=[Step("finish", finish)],
    )
)
