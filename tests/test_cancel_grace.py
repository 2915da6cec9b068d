"""Cancelling a job whose step never reaches a checkpoint: after ``cancel_grace`` its
pool process is ended, the job still ends cancelled and clean, and nothing runs twice."""

from __future__ import annotations

import time
from pathlib import Path

import redis
from conftest import Stack, submit, wait_for_status, wait_until
from sqlalchemy import select

from longplay import keys
from longplay.store.db import session_scope
from longplay.store.models import Artifact, ArtifactRole

GRACE = 2.0


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie waiting to be reaped does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone before or while it was read
        return False
    return state != "Z"


def outputs_in_store(stack: Stack, job_id: str) -> list[Artifact]:
    with session_scope(stack.database_url) as session:
        return list(
            session.scalars(
                select(Artifact).where(
                    Artifact.job_id == job_id, Artifact.role == ArtifactRole.OUTPUT.value
                )
            )
        )


def test_stubborn_job_is_stopped_after_the_grace(make_stack) -> None:  # type: ignore[no-untyped-def]
    deployment: Stack = make_stack(logs=True)
    deployment.env["LONGPLAY_CANCEL_GRACE"] = str(GRACE)
    deployment.env["LONGPLAY_HEARTBEAT_INTERVAL"] = "0.5"
    deployment.start_api()
    deployment.start_worker(concurrency=1)
    client = deployment.client()
    counts = redis.Redis.from_url(deployment.redis_url)

    job = submit(client, "stubborn", params={"seconds": 120})
    job_id = job["id"]
    wait_until(lambda: counts.get(f"test:{job_id}:ignore_cancel"), timeout=30)
    [partial] = outputs_in_store(deployment, job_id)
    partial_file = deployment.data_dir / "files" / partial.path
    scratch = deployment.data_dir / "work" / job_id
    assert partial_file.is_file() and (scratch / "scratch.bin").is_file()
    [attempt] = client.get(f"/v1/jobs/{job_id}/attempts").json()
    pid = int(attempt["worker"].rsplit(":", 1)[1])

    cancelled_at = time.monotonic()
    response = client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"

    wait_until(lambda: not alive(pid), timeout=GRACE + 10)
    stopped_after = time.monotonic() - cancelled_at
    assert GRACE - 0.5 <= stopped_after <= GRACE + 5, stopped_after
    assert outputs_in_store(deployment, job_id) == []
    assert not partial_file.exists() and not scratch.exists()
    assert client.get(f"/v1/artifacts/{partial.id}").status_code == 404
    final = client.get(f"/v1/jobs/{job_id}").json()
    assert final["status"] == "cancelled" and final["outputs"] == []
    [attempt] = client.get(f"/v1/jobs/{job_id}/attempts").json()
    assert attempt["outcome"] == "cancelled", "not counted as a lost worker"

    # The pool gets a new process, which runs the next job.
    follower = submit(client, params={"seconds": 0.2})
    wait_for_status(client, follower["id"], {"completed"}, timeout=30)
    # Celery requeued the killed process's message; its delivery did nothing.
    queue = keys.queue_name("cpu", "normal")
    wait_until(lambda: not counts.llen(queue) and not counts.hlen("unacked"), timeout=20)
    final = client.get(f"/v1/jobs/{job_id}").json()
    assert final["status"] == "cancelled" and final["attempts"] == 1
    assert len(client.get(f"/v1/jobs/{job_id}/attempts").json()) == 1
    assert int(counts.get(f"test:{job_id}:ignore_cancel") or 0) == 1, "no second run"
    workers = client.get("/v1/workers").json()
    assert all(w["name"] != attempt["worker"] for w in workers), "the dead process is not listed"
    # An owner's Cancel is no crash: a line for the process, no ERROR or traceback.
    logged = (deployment.data_dir / "worker.log").read_text()
    assert "a pool process ended on purpose (exitcode 75)" in logged, logged[-3000:]
    assert "Traceback" not in logged and " ERROR " not in logged, logged[-3000:]
