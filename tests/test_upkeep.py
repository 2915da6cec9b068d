"""Beat's upkeep goes on while every worker process runs a job.

Real API, worker and beat processes. Each upkeep round went to the upkeep queue for
a free pool process to take, and while none was free it expired unrun: on a busy
deployment a running job's deadline passed without its cancel, and cleanup waited
for a job to end. Beat's process now runs the upkeep on threads of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from conftest import Stack, submit, wait_for_status, wait_until

RETENTION = 3


def test_upkeep_goes_on_while_every_worker_process_runs_a_job(
    make_stack: Callable[[], Stack],
) -> None:
    deployment = make_stack()
    deployment.env.update(
        LONGPLAY_DISPATCH_INTERVAL="0.5",
        LONGPLAY_JOB_RETENTION=str(RETENTION),
        LONGPLAY_CLEANUP_INTERVAL="1",
    )
    deployment.start_api()
    deployment.start_beat()
    deployment.start_worker(concurrency=1)
    client = deployment.client()

    old = submit(client, params={"seconds": 0.1})
    wait_for_status(client, old["id"], {"completed"})
    deadline = datetime.now(UTC) + timedelta(seconds=RETENTION + 8)
    busy = submit(client, params={"seconds": 60, "ticks": 600}, deadline=deadline.isoformat())
    wait_for_status(client, busy["id"], {"running"})

    # Cleanup: the finished job goes once it is old enough, though the only slot is taken.
    def gone() -> bool:
        return client.get(f"/v1/jobs/{old['id']}").status_code == 404

    wait_until(gone, timeout=RETENTION + 6)
    assert client.get(f"/v1/jobs/{busy['id']}").json()["status"] == "running"

    # Admission's round: the running job is cancelled at its deadline, not when it ends.
    cancelled = wait_for_status(client, busy["id"], {"cancelled", "completed"}, timeout=20)
    assert cancelled["status"] == "cancelled", cancelled
    assert cancelled["error"]["code"] == "deadline_passed"
    late = datetime.fromisoformat(cancelled["finished_at"]) - deadline
    assert timedelta(0) <= late < timedelta(seconds=5), late
