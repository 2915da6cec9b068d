"""Beat's sweep for jobs that wait for jobs: the safety net under the hooks' subscribers.

A waiting job is normally settled, and a flow ended, right after the change that let
them move commits. Beat runs this task as well, at the reaper's interval, so that a
wake-up lost with a dying process leaves a job waiting or a flow running for at most
one interval.
"""

from __future__ import annotations

from longplay.broker.app import SETTLE_WAITING, celery_app
from longplay.jobs import dependencies, flow_events
from longplay.jobs.unit import unit_of_work
from longplay.worker.upkeep import round_of_upkeep


@celery_app.task(name=SETTLE_WAITING, ignore_result=True)
@round_of_upkeep
def settle_waiting() -> dict[str, int]:
    """Settle the waiting jobs whose upstream jobs ended, then end the flows whose jobs
    all ended (a cancelled dependent may be a flow's last job)."""
    settled = dependencies.sweep(unit_of_work)
    ended = flow_events.sweep(unit_of_work)
    return {"settled": settled, "flows_ended": ended}
