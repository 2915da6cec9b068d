"""Flower: ``longplay flower`` as a real process beside a stack's real worker, seen
through Flower's own HTTP API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from conftest import Stack, free_port, submit, wait_for_status, wait_until
from harness import stop_process
from harness import wait_until as poll

from longplay.settings import Settings

AUTH = ("ops", "flower-test-secret")


class Flower:
    """A ``longplay flower`` process and a client of its HTTP API."""

    def __init__(self, stack: Stack, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**stack.env, "FLOWER_BASIC_AUTH": f"{AUTH[0]}:{AUTH[1]}"}
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "longplay", "flower", f"--port={self.port}"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.log = log
        self.api = httpx.Client(base_url=self.url, auth=AUTH, timeout=10)
        wait_until(self._answers, timeout=60, every=0.2)

    def _answers(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        try:
            return httpx.get(f"{self.url}/healthcheck", timeout=2).text == "OK"
        except httpx.HTTPError:
            return False

    def get(self, path: str, **params: Any) -> Any:
        response = self.api.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def close(self) -> None:
        self.api.close()
        stop_process(self.process, signal.SIGTERM, timeout=15)


@pytest.fixture
def flower(database_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flower]:
    if database_kind != "sqlite":  # decided before the session's stack of that kind starts
        pytest.skip("Flower reads the broker, never the store: one database is enough")
    stack: Stack = request.getfixturevalue("stack")
    running = Flower(stack, tmp_path / "flower.log")
    try:
        yield running
    finally:
        running.close()


def test_flower_shows_the_worker_and_a_completed_job(flower: Flower, stack: Stack) -> None:
    # Its API is Flower's control panel: without the credentials it says no.
    assert httpx.get(f"{flower.url}/api/workers", timeout=10).status_code == 401

    # The stack's worker, by the Celery name `longplay worker` gives it (with its pid).
    worker_pid = stack.processes["worker"].pid

    def our_worker() -> str | None:
        workers = flower.get("/api/workers", refresh="1")
        return next((name for name in workers if f"-{worker_pid}@" in name), None)

    name = wait_until(our_worker, timeout=30, every=0.5)
    details = flower.get("/api/workers", workername=name)[name]
    queues = {queue["name"] for queue in details["active_queues"]}
    assert {"longplay.upkeep", "longplay.cpu.normal"} <= queues
    assert "longplay.run_job" in details["registered"]

    # Workers send task events once Flower asked them to (it asks every 5 s): a job
    # that ran before then is not seen, so submit until one is, for at most 40 s.
    client = stack.client("flower-watcher")

    def seen_job() -> dict[str, Any] | None:
        job = submit(client, params={"seconds": 0.3, "ticks": 3})
        wait_for_status(client, job["id"], {"completed"}, timeout=30)

        def task() -> dict[str, Any] | None:
            tasks = flower.get("/api/tasks", taskname="longplay.run_job", state="SUCCESS")
            return next((t for t in tasks.values() if job["id"] in str(t.get("args"))), None)

        try:
            return dict(poll(task, timeout=2, every=0.25))
        except TimeoutError:
            return None

    task = wait_until(seen_job, timeout=40, every=0)
    assert task["state"] == "SUCCESS"
    assert task["worker"] == name
    assert task["runtime"] > 0.3
    info = flower.get(f"/api/task/info/{task['uuid']}")
    assert info["name"] == "longplay.run_job" and info["state"] == "SUCCESS"

    # Stopped, it asks the workers to stop sending task events: asking them again is
    # news to them ("enabled"), not "already enabled". Then put them back as they were.
    flower.close()
    control = Celery(broker=Settings(data_dir=stack.data_dir, redis_url=stack.redis_url).broker_url)
    try:
        replies = control.control.broadcast(
            "enable_events", reply=True, destination=[name], timeout=10
        )
        assert replies == [{name: {"ok": "task events enabled"}}]
        control.control.broadcast("disable_events", destination=[name])
    finally:
        control.close()


def test_flower_will_not_listen_beyond_loopback_without_auth() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LONGPLAY_", "FLOWER_"))}
    env["LONGPLAY_REDIS_URL"] = "redis://127.0.0.1:1/0"  # refused before it is ever reached
    done = subprocess.run(
        [sys.executable, "-m", "longplay", "flower", "--host=0.0.0.0", f"--port={free_port()}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "FLOWER_BASIC_AUTH" in done.stderr


def test_flower_says_when_there_is_no_embedded_redis(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LONGPLAY_", "FLOWER_"))}
    env["LONGPLAY_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "longplay", "flower"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no embedded Redis" in done.stderr and "longplay up" in done.stderr
