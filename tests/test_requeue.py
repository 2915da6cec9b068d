"""A worker stopped with SIGTERM sends the job it runs back to the queue: the run's
attempt is closed as ``requeued``, the job shows no progress until it runs again, and
the rerun's attempt has a number of its own. Real API and worker processes, and the
runner in this process for the job another worker finds first."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import plugin_kinds  # noqa: F401  (registers `sleep` here too, for run_job)
import pytest
from conftest import Stack, signed_in_browser, submit, wait_for_status, wait_until
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from longplay import redis_client
from longplay.jobs import lifecycle, reaper
from longplay.jobs.attempts import open_attempt
from longplay.jobs.runner import run_job
from longplay.settings import get_settings
from longplay.store.db import session_scope
from longplay.store.models import Job, utcnow
from longplay.worker.tasks import holder_is_gone


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
    assert requeued["progress"] == 10.0  # its finished step ("prepare"), which it runs on from
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
    # Its page lists two runs under one attempt spent, and says why they differ.
    page = signed_in_browser(deployment, "alice").get(f"/jobs/{job['id']}").text
    assert "<h2>Runs</h2>" in page and "Attempts</dt><dd>1 of" in page
    assert "data-requeued" in page and "spent no attempt" in page
    # The stopped run is timed as requeued, from its start to the stop (past 30 % of 6 s).
    page = httpx.get(f"{deployment.api_url}/metrics", timeout=10).text
    runs_timed = {
        (sample.name, sample.labels.get("outcome")): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name.startswith("longplay_job_run_seconds_")
    }
    assert runs_timed[("longplay_job_run_seconds_count", "requeued")] == 1, runs_timed
    assert 1.8 <= runs_timed[("longplay_job_run_seconds_sum", "requeued")] < 30, runs_timed
    assert runs_timed[("longplay_job_run_seconds_count", "completed")] == 1, runs_timed


@pytest.mark.parametrize("clean_stop", [True, False], ids=["stopped", "died"])
def test_a_job_another_worker_finds_after_a_clean_stop_costs_no_attempt(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, clean_stop: bool
) -> None:
    """Celery gives a stopping worker's message back before that worker releases its
    job, so another worker on the host may find the job first, its process gone. After
    a clean stop (the worker marked itself stopping) it sends the job back as the
    release would and runs it, costing no attempt; where the process died, it takes the
    job over and the attempt counts. Before, a clean stop counted too, and at the last
    attempt failed the job as ``worker_died``."""
    client = stack.client("ivo")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job_id = submit(client, params={"seconds": 0.2, "ticks": 2}, run_at=later)["id"]
    for name, value in stack.env.items():
        if name.startswith("LONGPLAY_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    monkeypatch.setattr(redis_client, "_client", None)  # this stack's Redis, not the last one's
    gone = subprocess.Popen(["true"])  # a pool process of this host that has ended
    gone.wait()
    host = socket.gethostname()
    holder = f"{host}:{gone.pid}:{gone.pid}"
    try:
        with session_scope() as session:  # the stopped worker's run of the job
            session.execute(
                update(Job).where(Job.id == job_id).values(run_at=None, dispatched_at=utcnow())
            )
            assert lifecycle.claim(session, job_id, worker=holder, lease=timedelta(minutes=1))
            open_attempt(session, job_id, holder, after_lost=False)
        if clean_stop:
            reaper.mark_stopping(f"{host}:{gone.pid}:")
        run_job(job_id, worker=f"{host}:{os.getpid()}:{os.getpid()}", is_gone=holder_is_gone)
    finally:
        get_settings.cache_clear()
    done = client.get(f"/v1/jobs/{job_id}").json()
    assert done["status"] == "completed", done["error"]
    outcomes = [run["outcome"] for run in attempts(client, job_id)]
    if clean_stop:
        assert done["attempts"] == 1 and outcomes == ["requeued", "completed"]
    else:
        assert done["attempts"] == 2 and outcomes[0] != "requeued"
