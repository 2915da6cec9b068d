"""A worker stopped with SIGTERM sends the job it runs back to the queue: the run's
attempt is closed as ``requeued``, the job shows no progress until it runs again, and
the rerun's attempt has a number of its own. Real API and worker processes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from conftest import Stack, submit, wait_for_status, wait_until


def attempts(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/jobs/{job_id}/attempts")
    assert response.status_code == 200, response.text
    return list(response.json())


def test_a_stopped_worker_requeues_its_job_with_the_attempt_closed(
    make_stack: Callable[[], Stack],
) -> None:
    deployment = make_stack()
    deployment.env["LONGPLAY_SHUTDOWN_GRACE"] = "0.5"
    deployment.start_api()
    deployment.start_worker(concurrency=1)
    client = deployment.client()
    job = submit(client, params={"seconds": 6, "ticks": 60})
    wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["progress"] >= 30)

    deployment.stop_worker()  # SIGTERM: half a second of grace, then back to the queue
    requeued = client.get(f"/v1/jobs/{job['id']}").json()
    assert requeued["status"] == "queued"
    assert requeued["progress"] == 0.0
    assert requeued["current_step"] is None
    assert requeued["step_details"] == {}
    assert requeued["eta_seconds"] is None
    assert requeued["attempts"] == 0, "a clean stop costs no attempt"
    [stopped] = attempts(client, job["id"])
    assert stopped["attempt"] == 1
    assert stopped["outcome"] == "requeued"
    assert stopped["finished_at"] is not None
    assert stopped["error"] is None

    deployment.start_worker(concurrency=1)
    done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed"
    assert done["attempts"] == 1
    runs = attempts(client, job["id"])
    assert [(run["attempt"], run["outcome"]) for run in runs] == [(1, "requeued"), (2, "completed")]
    assert runs[0] == stopped, "the closed attempt is left as it was"
    assert runs[1]["finished_at"] is not None and runs[1]["worker"] != stopped["worker"]
