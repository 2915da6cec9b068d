"""The job kind the fault bench runs, loaded by its worker through ``LONGPLAY_PLUGINS``.

``fault_sleep`` sleeps for its ``seconds``, reporting progress, and writes a side
channel outside longplay: each run appends a line to ``$FAULTS_RUNS_DIR/<job id>.start``
when it starts and to ``<job id>.done`` when its work is done, so a job whose work ran
to the end twice shows two lines, whatever the store says.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import BaseModel, Field

from longplay.framework import JobKind, Step, StepContext, register

RUNS_DIR_VARIABLE = "FAULTS_RUNS_DIR"


class FaultSleepParams(BaseModel):
    seconds: float = Field(1.0, ge=0, le=600)
    ticks: int = Field(20, ge=1, le=10_000)


def _note(ctx: StepContext[FaultSleepParams], what: str) -> None:
    folder = Path(os.environ[RUNS_DIR_VARIABLE])
    with (folder / f"{ctx.job_id}.{what}").open("a") as out:
        out.write(f"{os.getpid()} {time.time():.3f}\n")


def work(ctx: StepContext[FaultSleepParams]) -> None:
    params = ctx.params
    _note(ctx, "start")
    for tick in range(params.ticks):
        time.sleep(params.seconds / params.ticks)
        ctx.advance(tick + 1, params.ticks)
    _note(ctx, "done")


register(
    JobKind(
        name="fault_sleep",
        description="Sleeps, noting each run that starts and ends in a side channel.",
        params=FaultSleepParams,
        steps=[Step("work", work)],
    )
)
