"""The ETA a client is shown, through the API, from a real worker.

A kind whose steps' weights do not match their times (a podcast fills 30 % of its bar
in half a second, a dub translates for two thirds of its time in 40 % of it) had an
ETA three to five times too short for all its run, every run: the ETA went by the
weights alone. Once a run of the kind has completed, it goes by the steps' times.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import redis
from conftest import Stack, submit

from longplay.keys import step_times


def followed(client: httpx.Client, job_id: str) -> list[tuple[float, dict[str, Any]]]:
    """The job as polled every tenth of a second to its end: (when, job) pairs."""
    seen: list[tuple[float, dict[str, Any]]] = []
    deadline = time.time() + 60
    while time.time() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        seen.append((time.time(), job))
        if job["status"] not in {"queued", "running"}:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"{job_id} did not end within 60 s: {seen[-1][1]}")


def etas_in_the_slow_step(seen: list[tuple[float, dict[str, Any]]]) -> list[tuple[float, float]]:
    """(ETA shown, seconds that were in fact left) while the slow step was a fifth to
    four fifths done."""
    [(_, last)] = seen[-1:]
    assert last["status"] == "completed", last
    ended = datetime.fromisoformat(last["finished_at"]).timestamp()
    return [
        (job["eta_seconds"], ended - when)
        for when, job in seen
        if job["current_step"] == "slow"
        and 92 <= job["progress"] <= 98
        and job["eta_seconds"] is not None
    ]


def test_the_eta_goes_by_the_steps_times_once_a_run_has_shown_them(stack: Stack) -> None:
    client = stack.client("eta")
    first = etas_in_the_slow_step(followed(client, submit(client, "lopsided")["id"]))
    second = etas_in_the_slow_step(followed(client, submit(client, "lopsided")["id"]))
    assert first and second
    # The first run goes by the weights: 90 % of the bar in its first 0.2 s of 4.2.
    assert statistics.median(eta / left for eta, left in first) < 0.3, first
    # The second by the first run's times: within a third of the time left.
    assert 0.67 < statistics.median(eta / left for eta, left in second) < 1.5, second
    # A run unusually short for the kind (one that reused earlier work) teaches no
    # shares: a podcast whose turns were voiced before made the next ETAs twice too long.
    kept = redis.Redis.from_url(stack.redis_url)
    learned = kept.hgetall(step_times("lopsided"))
    short = submit(client, "lopsided", params={"quick": 0.9, "slow": 0.3})["id"]
    assert followed(client, short)[-1][1]["status"] == "completed"
    after = kept.hgetall(step_times("lopsided"))
    assert {k: v for k, v in after.items() if k != b"_run_seconds"} == {
        k: v for k, v in learned.items() if k != b"_run_seconds"
    }
    assert float(after[b"_run_seconds"]) < float(learned[b"_run_seconds"])


def test_the_eta_grows_while_a_step_reports_nothing(make_stack: Callable[..., Stack]) -> None:
    """It stood at its last report's value while a step was silent (51 s shown through
    11 s of a transcription's silence): the heartbeat writes it as of now."""
    deployment = make_stack()
    deployment.env["LONGPLAY_HEARTBEAT_INTERVAL"] = "0.5"
    deployment.start_api()
    deployment.start_worker(concurrency=1)
    client = deployment.client("eta")
    job = submit(client, params={"seconds": 8, "ticks": 2})["id"]  # reports at 4 s and 8 s
    silent = [
        job["eta_seconds"]
        for _, job in followed(client, job)
        if job["current_step"] == "work"
        and job["step_details"].get("tick") == 1
        and job["eta_seconds"] is not None
    ]
    assert len(silent) >= 10, silent  # polled through the 4 s between its reports
    assert silent == sorted(silent) and silent[-1] > silent[0] + 1.5, silent
