"""Prometheus ``/metrics`` end to end: jobs run on a worker of two pool processes, the
API counts requests, and one scrape of the API shows numbers that add up exactly,
whichever process made them (they are kept in Redis, see ``jobs/metrics/kept.py``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from conftest import Stack, submit, wait_for_status, wait_until
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from longplay.embedded import redis_command, wait_until_ready
from longplay.jobs.metrics import catalogue
from longplay.jobs.metrics.kept import Counter, Histogram, read, write
from longplay.settings import Settings
from longplay.store.db import session_scope
from longplay.store.models import JobAttempt

TOKEN = "scrape-me-7f3a"
DASHBOARD = Path(__file__).parents[1] / "deploy" / "grafana-dashboard.json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(stack: Stack, token: str | None = TOKEN) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{stack.api_url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


class Hooks:
    """A webhook receiver: ``/ok`` answers 204, ``/gone`` 410 (the delivery gives up)."""

    def __init__(self) -> None:
        self.received: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                owner.received.append(self.path)
                self.send_response(204 if self.path == "/ok" else 410)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    receiver = Hooks()
    yield receiver
    receiver.close()


def test_counts_from_two_pool_processes_add_up(
    make_stack: Callable[[], Stack], hooks: Hooks
) -> None:
    stack = make_stack()
    stack.env["LONGPLAY_METRICS_TOKEN"] = TOKEN
    stack.start_api()
    stack.start_worker(concurrency=2)
    client = stack.client()

    # Locked: no token, or a wrong one, is a 401 in the API's error shape.
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        refused = httpx.get(f"{stack.api_url}/metrics", headers=headers, timeout=10)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"

    sleep = {"seconds": 0.8, "ticks": 4}
    done = [submit(client, params=sleep) for _ in range(5)]
    done.append(submit(client, params=sleep, callback_url=f"{hooks.url}/ok"))
    failing = submit(
        client, params={**sleep, "fail": "permanent"}, callback_url=f"{hooks.url}/gone"
    )
    for job in [*done, failing]:
        wait_for_status(client, job["id"], {"completed", "failed"}, timeout=60)
    # A failed job retried by hand: its second run's wait is timed too, from the retry.
    again = submit(client, params={"seconds": 0.1, "fail": "permanent"})
    wait_for_status(client, again["id"], {"failed"})
    assert client.post(f"/v1/jobs/{again['id']}/retry").status_code == 200
    wait_until(lambda: client.get(f"/v1/jobs/{again['id']}").json()["attempts"] == 2)
    wait_for_status(client, again["id"], {"failed"})
    # A job cancelled while it runs its second step.
    long = submit(client, params={"seconds": 60, "ticks": 600})
    wait_until(lambda: client.get(f"/v1/jobs/{long['id']}").json()["current_step"] == "work")
    assert client.post(f"/v1/jobs/{long['id']}/cancel").status_code == 200
    wait_for_status(client, long["id"], {"cancelled"})
    # Its run stops at its next checkpoint, after the cancel answered.
    wait_until(
        lambda: client.get(f"/v1/jobs/{long['id']}/attempts").json()[-1]["outcome"] == "cancelled"
    )

    # The jobs really ran in two pool processes.
    with session_scope(stack.database_url) as session:
        holders = set(session.scalars(select(JobAttempt.worker)))
    assert len(holders) == 2, holders

    def settled() -> Samples | None:
        found = scrape(stack)
        finished = value(found, "longplay_webhook_deliveries_total", outcome="failed")
        return found if finished == 1 and len(hooks.received) == 2 else None

    samples = wait_until(settled, timeout=30, every=0.3)
    count = lambda name, **labels: value(samples, name, **labels)  # noqa: E731
    assert count("longplay_jobs_submitted_total", kind="sleep") == 9
    assert count("longplay_jobs_started_total", kind="sleep") == 10
    assert count("longplay_jobs_completed_total", kind="sleep") == 6
    assert count("longplay_jobs_failed_total", kind="sleep", code="asked_to_fail") == 3
    assert count("longplay_jobs_cancelled_total", kind="sleep") == 1
    assert count("longplay_jobs_expired_total", kind="sleep") is None

    # Histograms: one queue wait per start, one run per ending, a step per step ended.
    assert count("longplay_job_queue_wait_seconds_count", kind="sleep") == 10
    completed_runs = count("longplay_job_run_seconds_count", kind="sleep", outcome="completed")
    assert completed_runs == 6
    assert count("longplay_job_run_seconds_count", kind="sleep", outcome="failed") == 3
    # The cancelled run is timed too: every start has its run's end (6 + 3 + 1 = 10).
    assert count("longplay_job_run_seconds_count", kind="sleep", outcome="cancelled") == 1
    run_sum = count("longplay_job_run_seconds_sum", kind="sleep", outcome="completed")
    assert run_sum is not None and 6 * 0.8 <= run_sum < 6 * 10
    assert (
        count("longplay_job_run_seconds_bucket", kind="sleep", outcome="completed", le="0.5") == 0
    )
    assert (
        count("longplay_job_run_seconds_bucket", kind="sleep", outcome="completed", le="+Inf") == 6
    )
    # "prepare" ends when "work" starts (in all 9 jobs: the retry skips it, done);
    # "work" ends with a completion.
    assert count("longplay_job_step_seconds_count", kind="sleep", step="prepare") == 9
    assert count("longplay_job_step_seconds_count", kind="sleep", step="work") == 6
    work_sum = count("longplay_job_step_seconds_sum", kind="sleep", step="work")
    assert work_sum is not None and work_sum >= 6 * 0.8 * 0.75

    assert count("longplay_webhook_deliveries_total", outcome="delivered") == 1
    assert count("longplay_webhook_deliveries_total", outcome="failed") == 1

    # Requests by route template and status, timed.
    assert count("longplay_http_requests_total", method="POST", route="/v1/jobs", status="202") == 9
    polls = count(
        "longplay_http_requests_total", method="GET", route="/v1/jobs/{job_id}", status="200"
    )
    assert polls is not None and polls >= 8
    assert count("longplay_http_requests_total", method="GET", route="/metrics", status="401") == 2
    latency = count("longplay_http_request_seconds_count", method="POST", route="/v1/jobs")
    assert latency == 9

    # Gauges, read now: one live worker of 2 slots, nothing running or waiting.
    assert count("longplay_workers_live") == 1
    assert count("longplay_beat_scheduling") == 0, "this deployment runs no beat"
    assert count("longplay_worker_slots", resource="cpu") == 2
    assert count("longplay_jobs_held", resource="cpu") == 0
    assert count("longplay_broker_queue_depth", queue="longplay.cpu.normal") == 0
    # Every kind the API knows is a series, 0 while none runs, so a sum reads 0, not nothing.
    running = {dict(k[1])["kind"]: v for k, v in samples.items() if k[0] == "longplay_jobs_running"}
    assert {"sleep", "convert", "transcribe"} <= set(running), running
    assert set(running.values()) == {0}, running

    def requests(route: str, status: str) -> float | None:
        """GET requests counted under ``route`` and ``status``, once counted at all."""
        labels = {"method": "GET", "route": route, "status": status}
        return wait_until(lambda: value(scrape(stack), "longplay_http_requests_total", **labels))

    # An unknown path is counted under one label, not its own.
    assert httpx.get(f"{stack.api_url}/no/such/page/42", timeout=10).status_code == 404
    assert requests("<unmatched>", "404") == 1
    # The dashboard's files are counted under their mount, not with the unknown paths.
    assert httpx.get(f"{stack.api_url}/static/dashboard.css", timeout=10).status_code == 200
    assert requests("/static/{path}", "200") == 1
    assert requests("<unmatched>", "404") == 1
    unknown_found = {"method": "GET", "route": "<unmatched>", "status": "200"}
    assert value(scrape(stack), "longplay_http_requests_total", **unknown_found) is None

    # The example Grafana dashboard asks only for metrics the page has.
    page = httpx.get(f"{stack.api_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    exported = {f.name for f in text_string_to_metric_families(page.text)}
    asked = set(re.findall(r"longplay_[a-z_]+", DASHBOARD.read_text()))
    unknown = {n for n in asked if re.sub(r"_(total|bucket|sum|count)$", "", n) not in exported}
    assert asked and not unknown, unknown


def test_requests_answered_just_before_the_api_stops_are_counted(
    make_stack: Callable[[], Stack],
) -> None:
    """Counts are written once a second; those of the last second are written as the
    API stops (uvicorn ends its process by the signal, so no exit hook would run)."""
    stack = make_stack()
    stack.start_api()
    with httpx.Client(base_url=stack.api_url, timeout=10) as client:
        for _ in range(40):
            assert client.get("/readyz").status_code == 200
    assert stack.stop("api", timeout=10), "the API stopped by itself"
    stack.start_api()
    counted = value(scrape(stack, None), "longplay_http_requests_total", **READYZ)
    assert counted == 40


READYZ = {"method": "GET", "route": "/readyz", "status": "200"}


def test_a_scrape_while_redis_stalls_is_a_503_at_once(make_stack: Callable[[], Stack]) -> None:
    """A Redis that takes the connection and never answers (stopped, swapping): the
    scrape says so well inside Prometheus's 10 s scrape timeout, instead of answering
    when Redis comes back, and answers again once it has."""
    stack = make_stack()
    stack.start_api()
    assert httpx.get(f"{stack.api_url}/metrics", timeout=10).status_code == 200
    paused = stack.processes["redis"].pid
    os.kill(paused, signal.SIGSTOP)
    try:
        began = time.monotonic()
        answer = httpx.get(f"{stack.api_url}/metrics", timeout=60)
        took = time.monotonic() - began
    finally:
        os.kill(paused, signal.SIGCONT)
    assert answer.status_code == 503, answer.text
    assert "Redis" in answer.json()["error"]["message"]
    assert took < 10, f"answered after {took:.1f} s"
    assert httpx.get(f"{stack.api_url}/metrics", timeout=10).status_code == 200


def test_a_token_with_characters_past_ascii_is_compared_not_a_crash(
    make_stack: Callable[[], Stack],
) -> None:
    """compare_digest refuses str holding other than ASCII: such a token, or such a
    header, was a 500. Compared as bytes, the wrong one is a 401, the right one
    (sent as UTF-8) passes."""
    stack = make_stack()
    token = "schlüssel-öffnet-7f3a"
    stack.env["LONGPLAY_METRICS_TOKEN"] = token
    stack.start_api()
    for given in ("schlüssel-öffnet-0000", TOKEN, "clé"):
        header = f"Bearer {given}".encode()
        refused = httpx.get(f"{stack.api_url}/metrics", headers={"Authorization": header})
        assert refused.status_code == 401, (given, refused.text)
        assert refused.json()["error"]["code"] == "unauthorized"
    sent = f"Bearer {token}".encode()
    page = httpx.get(f"{stack.api_url}/metrics", headers={"Authorization": sent}, timeout=10)
    assert page.status_code == 200, page.text
    assert "longplay_" in page.text


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[redis.Redis]:
    """A Redis server of this test's own (the embedded one's binary), no deployment."""
    settings = Settings(data_dir=tmp_path)
    server = subprocess.Popen(redis_command(settings))
    try:
        wait_until_ready(settings.redis_socket)
        yield redis.Redis(unix_socket_path=str(settings.redis_socket))
    finally:
        server.kill()
        server.wait(10)


def test_kept_numbers_in_redis_read_back_as_prometheus_families(own_redis: redis.Redis) -> None:
    """The Redis layout on its own: adds from any number of writers sum, buckets are
    cumulative when read, and label values are kept apart exactly."""
    client = own_redis
    counter = Counter("test_things", "Things.", ("kind", "code"))
    histogram = Histogram("test_seconds", "Seconds.", ("kind",), (1.0, 5.0))
    write(
        counter.inc("a", 'x|"y"') + counter.inc("a", 'x|"y"', by=2) + counter.inc("b", "z"), client
    )
    for seconds in (0.5, 1.0, 3.0, 9.0):
        write(histogram.observe(seconds, "a"), client)
    things, seconds = read([counter, histogram], client)
    assert {(tuple(s.labels.values()), s.value) for s in things.samples} == {
        (("a", 'x|"y"'), 3.0),
        (("b", "z"), 1.0),
    }
    by_name = {(s.name, s.labels.get("le")): s.value for s in seconds.samples}
    assert by_name[("test_seconds_bucket", "1.0")] == 2  # 0.5 and 1.0 (le is inclusive)
    assert by_name[("test_seconds_bucket", "5.0")] == 3
    assert by_name[("test_seconds_bucket", "+Inf")] == 4
    assert by_name[("test_seconds_count", None)] == 4
    assert by_name[("test_seconds_sum", None)] == pytest.approx(13.5)
    with pytest.raises(ValueError):
        counter.inc("only-one")
    assert catalogue.COMPLETED.name == "longplay_jobs_completed"
