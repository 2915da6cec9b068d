"""A job kind that kills its own process, loaded only by the deployments of the tests
that need it (``LONGPLAY_PLUGINS``): on a shared worker it would take down the process
that runs other tests' jobs."""

from __future__ import annotations

import os
import signal

from pydantic import BaseModel, Field

from longplay.framework import JobKind, Step, StepContext, register
from longplay.redis_client import get_redis


class CrashParams(BaseModel):
    crashes: int = Field(1, ge=0, le=100)
    """How many runs kill their own process, as a crash in a native library would,
    before one completes."""


def crash(ctx: StepContext[CrashParams]) -> None:
    if int(get_redis().incr(f"test:{ctx.job_id}:crash")) <= ctx.params.crashes:
        os.kill(os.getpid(), signal.SIGKILL)
    out = ctx.workdir / "survived.txt"
    out.write_text(f"survived on attempt {ctx.attempt}")
    ctx.add_output(out)


register(
    JobKind(
        name="crash",
        description="Its process dies a given number of times before it completes.",
        params=CrashParams,
        steps=[Step("crash", crash)],
    )
)
