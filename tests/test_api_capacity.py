"""The API under a crowd: no 5xx past the store's pool, one Redis reader for every
follower, and more than one API process on the same port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
from conftest import Stack, submit, wait_until

from longplay.api.followers import READER_POOL

BURST = 300
"""Concurrent requests: far past the API's store slots (5) and pool (5 + 10 overflow)."""
FOLLOWERS = 120


def later() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).isoformat()


async def _burst(stack: Stack, job_id: str, monitor: httpx.Client) -> tuple[list[int], float]:
    """``BURST`` requests at once, a mix of reads and submits, and a ``/healthz`` sent
    in the middle of them by ``monitor``: every status, and how long health took.

    The monitor has a connection of its own, opened before, and a thread: the time is
    the server's, not this process's event loop's, busy with the burst's 300 answers."""
    headers = {"Authorization": f"Bearer {stack.key('alice')}"}
    limits = httpx.Limits(max_connections=BURST + 1, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers=headers, limits=limits, timeout=60
    ) as client:

        async def one(n: int) -> int:
            if n % 10 == 0:
                response = await client.post("/v1/jobs", json={"kind": "sleep", "run_at": later()})
            elif n % 10 == 1:
                response = await client.get("/v1/jobs", params={"limit": 20})
            else:
                response = await client.get(f"/v1/jobs/{job_id}")
            return response.status_code

        def health() -> float:
            time.sleep(0.05)
            sent = time.perf_counter()
            response = monitor.get("/healthz")
            # It answers with every part's state: the tests' shared deployment runs no
            # beat, which alone it says is missing (a 503).
            assert response.json()["down"] == ["beat"], response.text
            return time.perf_counter() - sent

        *statuses, health_seconds = await asyncio.gather(
            *(one(n) for n in range(BURST)), asyncio.to_thread(health)
        )
    return [int(s) for s in statuses], float(health_seconds)


def test_a_burst_past_the_pool_gets_no_server_error(stack: Stack) -> None:
    with stack.client() as client:
        job = submit(client, "sleep", params={"seconds": 0.1})
    with httpx.Client(base_url=stack.api_url, timeout=60) as monitor:
        monitor.get("/healthz")  # its connection, open before the burst
        statuses, health_seconds = asyncio.run(_burst(stack, job["id"], monitor))
    assert sorted(set(statuses)) == [200, 202], statuses
    assert statuses.count(202) == BURST // 10
    assert health_seconds < 2.5


async def _follow(stack: Stack, job_id: str, opened: asyncio.Event, count: list[int]) -> str:
    """Follow a job's events; the type of the last one."""
    headers = {"Authorization": f"Bearer {stack.key('alice')}"}
    last = ""
    async with (
        httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=60) as client,
        client.stream("GET", f"/v1/jobs/{job_id}/events") as response,
    ):
        assert response.status_code == 200
        count[0] += 1
        if count[0] == FOLLOWERS:
            opened.set()
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                last = line.split(":", 1)[1].strip()
    return last


def _connections(stack: Stack) -> int:
    return int(redis.Redis.from_url(stack.redis_url).info("clients")["connected_clients"])


async def _followers(stack: Stack) -> tuple[list[str], int]:
    with stack.client() as client:
        job = submit(client, "sleep", run_at=later())
    before = _connections(stack)
    opened, count = asyncio.Event(), [0]
    followers = [
        asyncio.create_task(_follow(stack, job["id"], opened, count)) for _ in range(FOLLOWERS)
    ]
    await asyncio.wait_for(opened.wait(), 60)
    await asyncio.sleep(0.5)  # every follower past its backlog read, waiting for news
    grown = _connections(stack) - before
    with stack.client() as client:
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    return await asyncio.wait_for(asyncio.gather(*followers), 60), grown


def test_followers_share_one_redis_reader(stack: Stack) -> None:
    last_events, grown = asyncio.run(_followers(stack))
    assert last_events == ["cancelled"] * FOLLOWERS
    # One reader, a small pool for backlogs, the test's own client: not one per follower.
    assert grown <= 1 + READER_POOL + 1, grown


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.timeout(180)
def test_api_runs_on_several_processes(make_stack: Callable[[], Stack]) -> None:
    stack = make_stack()
    stack.env["LONGPLAY_API_WORKERS"] = "2"
    stack.start_api()
    stack.start_worker()
    api = stack.processes["api"].pid
    wait_until(lambda: len(_children(api)) >= 2, timeout=30)
    with stack.client() as client:
        job = submit(client, "sleep", params={"seconds": 0.1})
        served = {client.get(f"/v1/jobs/{job['id']}").status_code for _ in range(20)}
        assert served == {200}
        with client.stream("GET", f"/v1/jobs/{job['id']}/events") as events:
            kinds = [
                line.split(":", 1)[1].strip()
                for line in events.iter_lines()
                if line.startswith("event:")
            ]
    assert kinds[-1] == "completed"
    assert len([p for p in _children(api) if Path(f"/proc/{p}").exists()]) >= 2
