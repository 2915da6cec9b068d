"""Admission: fair shares between owners, owner limits and tiers, run_at and deadlines.

Real API, worker and beat processes; owners' limits are set in the store, as
``longplay owners set`` does.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import redis
from conftest import Stack, submit, wait_for_status, wait_until
from sqlalchemy import select

from longplay.store.db import session_scope
from longplay.store.models import Owner


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def set_owner(deployment: Stack, name: str, **limits: Any) -> None:
    deployment.key(name)
    with session_scope(deployment.database_url) as session:
        owner = session.scalar(select(Owner).where(Owner.name == name))
        assert owner is not None
        for field, value in limits.items():
            setattr(owner, field, value)


def statuses(client: httpx.Client, status: str) -> list[dict[str, Any]]:
    return list(client.get("/v1/jobs", params={"status": status, "limit": 200}).json()["items"])


def test_a_newcomer_starts_within_a_job_of_a_backlog(make_stack: Callable[[], Stack]) -> None:
    deployment = make_stack()
    deployment.start_api()
    deployment.start_worker(concurrency=2)
    busy, newcomer = deployment.client("busy"), deployment.client("newcomer")
    backlog = [submit(busy, params={"seconds": 1, "ticks": 4}) for _ in range(40)]
    wait_until(lambda: len(statuses(busy, "running")) == 2)
    job = submit(newcomer, params={"seconds": 0.2, "ticks": 2})
    started = wait_for_status(newcomer, job["id"], {"running", "completed"}, timeout=30)
    waited = (at(started["started_at"]) - at(started["created_at"])).total_seconds()
    assert waited < 1.0 + 1.5, f"the newcomer waited {waited:.1f} s behind a 40 s backlog"
    assert len(statuses(busy, "queued")) >= 30, "the backlog is mostly still waiting"
    assert all(j["started_at"] is None for j in backlog[-30:])
    for queued in backlog:
        busy.post(f"/v1/jobs/{queued['id']}/cancel")


def test_running_cap_and_tier_priority(make_stack: Callable[[], Stack]) -> None:
    deployment = make_stack()
    deployment.start_api()
    deployment.start_worker(concurrency=2)
    set_owner(deployment, "capped", max_running=1)
    client = deployment.client("capped")
    jobs = [submit(client, params={"seconds": 0.4, "ticks": 2}) for _ in range(4)]
    most = 0
    while True:
        running = len(statuses(client, "running"))
        most = max(most, running)
        if len(statuses(client, "completed")) == len(jobs):
            break
        time.sleep(0.05)
    assert most == 1, "never two of a capped owner's jobs at once"
    # Another owner's jobs still use the second slot meanwhile.
    other = deployment.client("other")
    blocker = submit(client, params={"seconds": 2, "ticks": 4})
    wait_for_status(client, blocker["id"], {"running"})
    quick = submit(other, params={"seconds": 0.1})
    assert wait_for_status(other, quick["id"], {"completed"}, timeout=10)
    assert client.get(f"/v1/jobs/{blocker['id']}").json()["status"] == "running"


def test_queued_cap_rate_limit_and_tiers(make_stack: Callable[[], Stack]) -> None:
    deployment = make_stack()
    deployment.start_api()  # no worker: what is submitted stays queued
    set_owner(deployment, "full", max_queued=2)
    full = deployment.client("full")
    for _ in range(2):
        submit(full, params={"seconds": 0.1})
    refused = full.post(
        "/v1/jobs",
        data={"kind": "sleep"},
        files={"file": ("x.txt", b"not kept", "text/plain")},
    )
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    # It names whose limit it is: the owner's own, not its tier's (which has none).
    assert refused.json()["error"]["message"] == (
        "you have 2 jobs queued or waiting, the most allowed (your account's limit: 2); "
        "submit more once some start"
    )
    assert len(statuses(full, "queued")) == 2, "nothing stored"
    stored = [p for p in (deployment.data_dir / "files").rglob("*") if p.is_file()]
    assert stored == [], "the upload of a refused submission is not kept"

    set_owner(deployment, "eager", submit_rate=30.0)  # a burst of 30, then one per 2 s
    eager = deployment.client("eager")
    for _ in range(30):
        submit(eager, params={"seconds": 0.1})
    limited = eager.post("/v1/jobs", json={"kind": "sleep"})
    assert limited.status_code == 429, limited.text
    wait = int(limited.headers["Retry-After"])
    assert 1 <= wait <= 2
    said = limited.json()["error"]["message"]
    limit = "too many submissions: at most 30 a minute (your account's limit)"
    assert said == f"{limit}; try again in {wait} s"
    assert len(statuses(eager, "queued")) == 30
    time.sleep(wait)
    submit(eager, params={"seconds": 0.1})

    # A submission without a priority gets the tier's; the CLI sets tiers and limits.
    deployment.key("bulk")
    made = subprocess.run(
        [sys.executable, "-m", "longplay", "owners", "set", "bulk", "--tier", "batch",
         "--max-running", "2"],
        env=deployment.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "batch" in made.stdout and "low" in made.stdout
    bulk = deployment.client("bulk")
    assert submit(bulk)["priority"] == "low"
    assert submit(bulk, priority="high")["priority"] == "high"
    set_owner(deployment, "vip", tier="priority")
    assert submit(deployment.client("vip"))["priority"] == "high"
    assert submit(deployment.client("plain"))["priority"] == "normal"


def test_run_at_and_deadlines(make_stack: Callable[[], Stack]) -> None:
    deployment = make_stack()
    deployment.env["LONGPLAY_DISPATCH_INTERVAL"] = "0.5"
    deployment.start_api()
    deployment.start_beat()
    deployment.start_worker(concurrency=2)
    client = deployment.client()

    run_at = datetime.now(UTC) + timedelta(seconds=2)
    later = submit(client, params={"seconds": 0.1}, run_at=run_at.isoformat())
    shown = client.get(f"/v1/jobs/{later['id']}").json()
    assert shown["status"] == "queued" and at(shown["run_at"]) == run_at
    assert shown["queue_position"] == 0
    done = wait_for_status(client, later["id"], {"completed"}, timeout=20)
    assert at(done["started_at"]) >= run_at
    assert (at(done["started_at"]) - run_at).total_seconds() < 2.0

    # Both slots busy: a job whose deadline passes while it waits never runs.
    blockers = [submit(client, params={"seconds": 3, "ticks": 6}) for _ in range(2)]
    for blocker in blockers:
        wait_for_status(client, blocker["id"], {"running"})
    deadline = datetime.now(UTC) + timedelta(seconds=1)
    doomed = submit(client, params={"seconds": 0.1}, deadline=deadline.isoformat())
    expired = wait_for_status(client, doomed["id"], {"expired", "completed"}, timeout=20)
    assert expired["status"] == "expired"
    assert expired["attempts"] == 0 and expired["started_at"] is None
    assert expired["error"]["code"] == "deadline_passed"
    assert doomed["id"] in [j["id"] for j in statuses(client, "expired")]

    # Running past its deadline: cancelled with the reason, and it stops. Beat expired
    # the job above while both slots were busy: they must be free for this one to start.
    for blocker in blockers:
        wait_for_status(client, blocker["id"], {"completed"})
    deadline = datetime.now(UTC) + timedelta(seconds=2)
    overdue = submit(client, params={"seconds": 30, "ticks": 300}, deadline=deadline.isoformat())
    cancelled = wait_for_status(client, overdue["id"], {"cancelled", "completed"}, timeout=20)
    assert cancelled["status"] == "cancelled"
    assert "deadline" in cancelled["error"]["message"]
    assert at(cancelled["finished_at"]) >= deadline

    def stopped() -> bool:
        attempts = client.get(f"/v1/jobs/{overdue['id']}/attempts").json()
        return [a["outcome"] for a in attempts] == ["cancelled"]

    wait_until(stopped, timeout=10)


def test_retry_waits_for_its_backoff_without_beat(make_stack: Callable[[], Stack]) -> None:
    deployment = make_stack()
    deployment.start_api()
    deployment.start_worker(concurrency=2)
    client = deployment.client()
    job = submit(client, "flaky", params={"failures": 1})
    done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=30)
    assert done["status"] == "completed" and done["attempts"] == 2
    first, second = client.get(f"/v1/jobs/{job['id']}/attempts").json()
    assert first["outcome"] == "retrying"
    backoff = first["error"]["retry_in_seconds"]
    waited = (at(second["started_at"]) - at(first["finished_at"])).total_seconds()
    assert waited >= backoff - 0.1, (waited, backoff)


def test_a_job_lost_with_the_broker_is_handed_over_again(
    make_stack: Callable[[], Stack],
) -> None:
    deployment = make_stack()
    deployment.env.update(LONGPLAY_DISPATCH_INTERVAL="0.5", LONGPLAY_REDISPATCH_AFTER="1")
    deployment.start_api()
    client = deployment.client()
    job = submit(client, params={"seconds": 0.1})
    redis.Redis.from_url(deployment.redis_url).flushdb()  # the broker forgot it
    deployment.start_beat()
    deployment.start_worker(concurrency=1)
    done = wait_for_status(client, job["id"], {"completed"}, timeout=30)
    assert done["attempts"] == 1
