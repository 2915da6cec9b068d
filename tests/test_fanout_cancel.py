"""Cancelling a job whose fanned-out items reach no checkpoint: the helper process that
runs one is ended within ``cancel_grace`` of the cancel, as the job's own process is,
and its worker slot goes to the next queued job."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from conftest import Stack, submit, wait_for_status, wait_until
from sqlalchemy import select

from longplay import keys
from longplay.store.db import session_scope
from longplay.store.models import FanOutItem

GRACE = 2.0
_HZ = 100


def cpu_seconds(pid: int) -> float | None:
    """The process's user and system CPU seconds; None once it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    if fields[0] == "Z":
        return None
    return (int(fields[11]) + int(fields[12])) / _HZ


def items(stack: Stack, job_id: str) -> list[FanOutItem]:
    with session_scope(stack.database_url) as session:
        rows = session.scalars(
            select(FanOutItem).where(FanOutItem.job_id == job_id).order_by(FanOutItem.position)
        ).all()
        session.expunge_all()
        return list(rows)


@dataclass
class AfterCancel:
    """What the test saw after the cancel, in seconds from it."""

    cancelled_at: float
    helper_cpu: float
    helper_gone: float | None = None
    cpu_after: float = 0.0
    started: dict[str, float] = field(default_factory=dict)


def watch(
    client: httpx.Client, seen: AfterCancel, helper: int, followers: list[str], timeout: float
) -> None:
    """Follow the helper's CPU and the followers' starts until both have started and
    the helper is gone, or ``timeout`` s after the cancel."""
    while time.monotonic() - seen.cancelled_at < timeout:
        now = time.monotonic() - seen.cancelled_at
        cpu = cpu_seconds(helper)
        if cpu is None:
            seen.helper_gone = seen.helper_gone or now
        else:
            seen.cpu_after = cpu - seen.helper_cpu
        for job_id in followers:
            status = client.get(f"/v1/jobs/{job_id}").json()["status"]
            if job_id not in seen.started and status in {"running", "completed"}:
                seen.started[job_id] = now
        if seen.helper_gone is not None and len(seen.started) == len(followers):
            return
        time.sleep(0.1)


def test_a_helper_whose_item_never_reports_is_ended_after_the_grace(
    make_stack: Callable[..., Stack],
) -> None:
    deployment = make_stack(logs=True)
    deployment.env["LONGPLAY_CANCEL_GRACE"] = str(GRACE)
    deployment.env["LONGPLAY_HEARTBEAT_INTERVAL"] = "0.5"
    deployment.start_api()
    deployment.start_worker(concurrency=2)
    client = deployment.client()
    counts = redis.Redis.from_url(deployment.redis_url)

    job_id = submit(client, "stubborn_map", params={"seconds": 20})["id"]
    wait_until(lambda: int(counts.get(f"test:{job_id}:burn") or 0) == 2, timeout=30)
    [attempt] = client.get(f"/v1/jobs/{job_id}/attempts").json()
    [helper_item] = [i for i in items(deployment, job_id) if i.worker != attempt["worker"]]
    helper = int(str(helper_item.worker).rsplit(":", 1)[1])
    scratch = deployment.data_dir / "work" / job_id
    assert (scratch / f"item-{helper_item.position}.bin").is_file()

    seen = AfterCancel(time.monotonic(), cpu_seconds(helper) or 0.0)
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    # Both slots are busy with the job: the next two jobs, which run at once, need both.
    followers = [submit(client, params={"seconds": 8})["id"] for _ in range(2)]
    watch(client, seen, helper, followers, timeout=GRACE + 12)

    assert seen.helper_gone is not None, f"the helper went on with its item: {seen}"
    assert seen.helper_gone <= GRACE + 4, seen
    assert seen.cpu_after <= GRACE + 2, seen
    assert len(seen.started) == 2 and max(seen.started.values()) <= GRACE + 6, seen
    for follower in followers:
        wait_for_status(client, follower, {"completed"}, timeout=30)
    assert {i.status for i in items(deployment, job_id)} == {"cancelled"}
    assert not scratch.exists(), sorted(p.name for p in scratch.iterdir())
    final = client.get(f"/v1/jobs/{job_id}").json()
    assert final["status"] == "cancelled" and final["attempts"] == 1
    # Celery requeued the ended processes' messages; their deliveries did nothing.
    queue = keys.queue_name("cpu", "normal")
    wait_until(lambda: not counts.llen(queue) and not counts.hlen("unacked"), timeout=20)
    assert int(counts.get(f"test:{job_id}:burn") or 0) == 2, "no item ran again"
    workers = {w["name"] for w in client.get("/v1/workers").json()}
    assert str(helper_item.worker) not in workers, "the ended helper is not listed"
    logged = (deployment.data_dir / "worker.log").read_text()
    assert "stopping its helper process" in logged, logged[-3000:]
    assert "Traceback" not in logged and " ERROR " not in logged, logged[-3000:]
