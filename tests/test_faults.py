"""Faults: workers that die, leases that lapse, messages handed out twice."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from celery import Celery
from conftest import Stack, signed_in_browser, submit, wait_for_status, wait_until
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from longplay import Client, keys
from longplay.broker.app import RUN_JOB
from longplay.client import Event
from longplay.settings import Settings
from longplay.store.db import session_scope


def test_redelivery_after_visibility_timeout_runs_nothing_twice(
    make_stack: Callable[[], Stack],
) -> None:
    deployment = make_stack()
    deployment.env["LONGPLAY_VISIBILITY_TIMEOUT"] = "2"  # far shorter than the job
    deployment.start_api()
    deployment.start_worker(concurrency=2)
    client = deployment.client()
    job = submit(client, "flaky", params={"failures": 0})
    long_job = submit(client, params={"seconds": 8, "ticks": 16})
    done = wait_for_status(client, long_job["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed" and done["attempts"] == 1
    attempts = client.get(f"/v1/jobs/{long_job['id']}/attempts").json()
    assert [a["outcome"] for a in attempts] == ["completed"]
    counts = redis.Redis.from_url(deployment.redis_url)
    wait_for_status(client, job["id"], {"completed"})
    assert int(counts.get(f"test:{job['id']}:first") or 0) == 1


def kill_the_worker_of_a_running_job(
    deployment: Stack, **settings: str
) -> tuple[httpx.Client, dict[str, Any], float]:
    """An API, beat and a worker with ``settings``; a job of 3 s running, its worker
    killed with ``kill -9`` (pool included: no requeue, no release) and a new one up.
    The client, the job and when the worker was killed (``time.monotonic``)."""
    deployment.env.update(settings)
    deployment.start_api()
    deployment.start_beat()
    deployment.start_worker(concurrency=1)
    client = deployment.client()
    job = submit(client, params={"seconds": 3, "ticks": 30})
    wait_for_status(client, job["id"], {"running"})
    deployment.kill_worker()
    killed = time.monotonic()
    deployment.start_worker(concurrency=1)
    return client, job, killed


def test_reaper_requeues_the_job_of_a_dead_worker(make_stack: Callable[[], Stack]) -> None:
    client, job, _ = kill_the_worker_of_a_running_job(
        make_stack(),
        LONGPLAY_LEASE_SECONDS="3",
        LONGPLAY_HEARTBEAT_INTERVAL="0.5",
        LONGPLAY_REAPER_INTERVAL="1",
    )
    # Its lease lapses and the reaper sends it back to the queue, saying why.
    done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed" and done["attempts"] == 2
    attempts = client.get(f"/v1/jobs/{job['id']}/attempts").json()
    assert [a["outcome"] for a in attempts] == ["lost", "completed"]
    assert attempts[0]["error"]["code"] == "worker_lost"


def test_a_running_job_whose_worker_fell_silent_says_so_until_it_is_taken_back(
    make_stack: Callable[[], Stack],
) -> None:
    """While no reaper runs, a running job whose worker was killed tells, in the API and
    on its dashboard page, since when its worker has been silent and by when the job is
    taken from it (its last report, its lease, a reaper's round); once beat runs, the
    job is taken back and completes, and the note is gone."""
    deployment = make_stack()
    deployment.env.update(
        LONGPLAY_HEARTBEAT_INTERVAL="0.5", LONGPLAY_REAPER_INTERVAL="1", LONGPLAY_LEASE_SECONDS="40"
    )
    deployment.start_api()
    deployment.start_worker(concurrency=1)
    client = deployment.client()
    job = submit(client, params={"seconds": 3, "ticks": 30})
    assert wait_for_status(client, job["id"], {"running"})["stalled"] is None

    def paced() -> dict[str, Any] | None:
        shown = client.get(f"/v1/jobs/{job['id']}").json()
        return shown if shown["eta_seconds"] is not None else None

    wait_until(paced, timeout=10)
    deployment.kill_worker()

    def silent() -> dict[str, Any] | None:
        shown = client.get(f"/v1/jobs/{job['id']}").json()
        return shown if shown["stalled"] else None

    shown = wait_until(silent, timeout=20)
    told = re.fullmatch(
        r"its worker has not reported since (\d\d:\d\d:\d\d) UTC; if it stays silent, "
        r"the job is taken from it by (\d\d:\d\d:\d\d) UTC and it runs again",
        shown["stalled"],
    )
    assert shown["status"] == "running" and told, shown
    assert shown["eta_seconds"] is None, "the last pace it told is no word on a stopped run"
    since, by = (datetime.strptime(t, "%H:%M:%S") for t in told.groups())
    assert (by - since).seconds == 41  # the lease and a reaper's round
    page = signed_in_browser(deployment, "alice").get(f"/jobs/{job['id']}").text
    assert f"Its worker has not reported since {told[1]} UTC" in page

    deployment.start_beat()  # its reaper, on the dead worker's machine, takes the job back
    deployment.start_worker(concurrency=1)
    done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=60)
    assert (done["status"], done["attempts"], done["stalled"]) == ("completed", 2, None), done

    # The lost run's time ends at its last heartbeat, not when the reaper took it back.
    lost = client.get(f"/v1/jobs/{job['id']}/attempts").json()[0]
    taken_back = datetime.fromisoformat(lost["finished_at"]) - datetime.fromisoformat(
        lost["started_at"]
    )
    page = httpx.get(f"{deployment.api_url}/metrics", timeout=10).text
    [run] = [
        sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == "longplay_job_run_seconds_sum"
        and sample.labels.get("outcome") == "retrying"
    ]
    assert run < taken_back.total_seconds() - 1, (run, taken_back)


def test_the_job_of_a_worker_killed_on_this_machine_is_not_kept_for_its_lease(
    make_stack: Callable[[], Stack],
) -> None:
    """A worker killed whole (``kill -9`` of its group, as when ``up`` is killed): no
    delivery comes back to find its job's process dead, but the reaper, on the same
    machine, sees it is gone and sends the job back after two missed heartbeats, not
    after the lease (a minute here)."""
    client, job, killed = kill_the_worker_of_a_running_job(
        make_stack(), LONGPLAY_HEARTBEAT_INTERVAL="0.5", LONGPLAY_REAPER_INTERVAL="1"
    )
    done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=40)
    assert done["status"] == "completed" and done["attempts"] == 2
    assert time.monotonic() - killed < 30, "well inside the 60 s lease"
    attempts = client.get(f"/v1/jobs/{job['id']}/attempts").json()
    assert [a["outcome"] for a in attempts] == ["lost", "completed"]
    assert attempts[0]["error"]["code"] == "worker_lost"
    assert "died" in attempts[0]["error"]["message"], attempts[0]["error"]


def test_a_job_whose_process_dies_each_run_fails_after_its_attempts(
    make_stack: Callable[[], Stack],
) -> None:
    """A job that takes its process down each time (a crash in a native library) fails
    with a code that says so once its attempts are spent, instead of being run again for
    ever; one that dies once completes on its second run, and the jobs after them run."""
    deployment = make_stack()
    deployment.env["LONGPLAY_PLUGINS"] = json.dumps(["plugin_kinds", "crash_kinds"])
    deployment.start_api()
    deployment.start_worker(concurrency=1)
    client = deployment.client()
    doomed = submit(client, "crash", params={"crashes": 100})
    once = submit(client, "crash", params={"crashes": 1})
    after = submit(client, params={"seconds": 0.1})

    failed = wait_for_status(client, doomed["id"], {"failed", "completed"}, timeout=120)
    assert failed["status"] == "failed" and failed["attempts"] == 3, failed
    assert failed["error"]["code"] == "worker_died"
    assert "died during each of its 3 attempts" in failed["error"]["message"]
    runs = redis.Redis.from_url(deployment.redis_url)
    assert int(runs.get(f"test:{doomed['id']}:crash") or 0) == 3
    attempts = client.get(f"/v1/jobs/{doomed['id']}/attempts").json()
    assert [a["outcome"] for a in attempts] == ["lost", "lost", "failed"]
    survived = wait_for_status(client, once["id"], {"completed", "failed"}, timeout=60)
    assert survived["status"] == "completed" and survived["attempts"] == 2
    [output] = survived["outputs"]
    assert client.get(output["links"]["content"]).text == "survived on attempt 2"
    assert wait_for_status(client, after["id"], {"completed", "failed"})["status"] == "completed"


@contextmanager
def refusing_connections(deployment: Stack) -> Iterator[None]:
    """The deployment's PostgreSQL database refuses connections, the ones it had
    ended, while the block runs."""
    name = deployment.database_url.rsplit("/", 1)[1]
    with psycopg.connect(deployment.postgres_admin, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_a_store_that_refuses_connections_is_a_503_to_retry(
    database_kind: str, tmp_path: Path
) -> None:
    """While PostgreSQL refuses connections, requests are answered 503, retryable, with
    one log line each rather than two tracebacks, and so are ``/healthz`` and
    ``/readyz``, naming no more than the error's type; then they pass again."""
    if database_kind != "postgresql":
        pytest.skip("SQLite waits out its 30 s busy timeout rather than refuse")
    with Stack(tmp_path / "stack", database_kind, logs=True) as deployment:
        deployment.start_api()
        client = deployment.client("opal")
        job = submit(client, run_at="2099-01-01T00:00:00Z")
        browser = signed_in_browser(deployment, "opal")
        with refusing_connections(deployment):
            refused = client.get(f"/v1/jobs/{job['id']}")
            listed = client.get("/v1/jobs")
            health = httpx.get(f"{deployment.api_url}/healthz", timeout=10)
            ready = httpx.get(f"{deployment.api_url}/readyz", timeout=10)
            page = browser.get("/jobs")
        for answer in (refused, listed):
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "2"
            error = answer.json()["error"]
            assert error["code"] == "unavailable" and error["retryable"] is True, error
            assert error["message"] == "the store did not answer; try again shortly"
        # Told to anyone who can reach the port: the part and the error's type, not the
        # driver's message (hosts, databases, users); that is in the log.
        for answer in (health, ready):
            assert answer.status_code == 503, answer.text
            assert answer.json()["store"] == "error: OperationalError", answer.text
            assert "store" in answer.json()["down"]
        # A person on the dashboard gets a page that says so, not the API's JSON.
        assert page.status_code == 503 and page.headers["retry-after"] == "2", page.text
        assert page.headers["content-type"].startswith("text/html"), page.headers
        assert "<title>Unavailable" in page.text, page.text
        assert "the store did not answer; reload the page shortly" in page.text, page.text
        browser.close()
        wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").status_code == 200)
        time.sleep(0.5)  # the log is written
        log = (deployment.data_dir / "api.log").read_text()
        assert "the store did not answer (OperationalError" in log, log[-3000:]
        assert "Traceback" not in log, log[-3000:]


def test_an_event_stream_while_redis_is_away_is_a_503_to_retry(
    make_stack: Callable[[], Stack],
) -> None:
    """It was a 200 with an empty body, and a traceback in the log each time."""
    deployment = make_stack()
    deployment.start_api()
    client = deployment.client()
    job = submit(client, params={"seconds": 0})
    deployment.kill("redis")
    try:
        for resume in ({}, {"Last-Event-ID": "1-0"}):
            answer = client.get(f"/v1/jobs/{job['id']}/events", headers=resume)
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "2"
            assert answer.json()["error"]["code"] == "unavailable", answer.text
    finally:
        deployment.start_redis()
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=10) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(
            "text/event-stream"
        )


def test_a_wait_begun_while_redis_is_away_follows_the_stream_once_it_is_back(
    make_stack: Callable[[], Stack],
) -> None:
    """The SDK's wait (and so the CLI's --wait) took the stream's first 503 for an API
    that is not there, and polled the job for the rest of its run."""
    deployment = make_stack()
    deployment.start_api()
    client = deployment.client()
    job = submit(client, run_at="2099-01-01T00:00:00Z")  # it waits until cancelled
    seen: list[Event] = []
    deployment.kill("redis")
    with Client(deployment.api_url, deployment.key("alice")) as sdk:
        waiting = threading.Thread(
            target=lambda: sdk.wait(job["id"], on_event=seen.append, timeout=60)
        )
        try:
            waiting.start()
            time.sleep(1.5)  # its stream is refused meanwhile
        finally:
            deployment.start_redis()
        wait_until(lambda: seen, timeout=30)  # the stream, followed at last
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
        waiting.join(30)
    assert not waiting.is_alive()
    assert seen[-1].type == "cancelled" and seen[-1].id, seen  # from the stream: an id


def test_a_worker_that_lost_redis_says_so_in_a_line(database_kind: str, tmp_path: Path) -> None:
    """Each lost broker connection added Celery's ten-line warning that a later version
    cancels running tasks then, which longplay does not want and does not do."""
    if database_kind != "sqlite":
        pytest.skip("the broker's, whatever the store")
    with Stack(tmp_path / "stack", database_kind, logs=True) as deployment:
        deployment.start_worker(wait=False)  # there is no API to ask
        log = deployment.data_dir / "worker.log"
        # Ready, and a moment more: killed before the worker waits on its connection, the
        # next command reconnects to the new Redis without a word (redis-py's retry).
        wait_until(lambda: log.is_file() and " ready." in log.read_text(), timeout=60)
        time.sleep(1.0)
        deployment.kill("redis")
        deployment.start_redis()
        try:  # a loaded machine (the whole suite on 2 cores) takes its time
            wait_until(lambda: "Connection to broker lost" in log.read_text(), timeout=60)
            wait_until(lambda: log.read_text().count("Connected to") == 2, timeout=60)  # again
        except BaseException:
            print(log.read_text()[-4000:])  # what the worker said instead, for the report
            raise
        assert "CPendingDeprecationWarning" not in log.read_text(), log.read_text()[-3000:]


def test_beat_while_redis_is_away_says_so_in_a_line_a_send(
    database_kind: str, tmp_path: Path
) -> None:
    """Each scheduled send beat could not make wrote the call stack and a chained
    traceback, some 150 lines, every second with admission's schedule."""
    if database_kind != "sqlite":
        pytest.skip("the broker's, whatever the store")
    with Stack(tmp_path / "stack", database_kind, logs=True) as deployment:
        deployment.env["LONGPLAY_DISPATCH_INTERVAL"] = "1"
        deployment.start_beat()
        log = deployment.data_dir / "beat.log"
        # Beat consumes the upkeep queue too; once it ran a round, it waits on its
        # connection, and losing it is a line of its own.
        wait_until(lambda: log.is_file() and " ready." in log.read_text(), timeout=60)
        time.sleep(1.5)
        deployment.kill("redis")
        try:
            wait_until(lambda: log.read_text().count("not sent, Redis did not answer") >= 2)
        finally:
            deployment.start_redis()
        wait_until(lambda: log.read_text().count("Connected to") == 2, timeout=60)  # again
        text = log.read_text()
        assert "admit: not sent, Redis did not answer (ConnectionError: " in text, text[-3000:]
        assert text.count("Connection to broker lost") == 1, text[-3000:]
        assert "Traceback" not in text and "Couldn't apply" not in text, text[-3000:]


def test_the_cli_says_why_it_waits_while_the_store_is_away(
    database_kind: str, tmp_path: Path
) -> None:
    """A request the API refused with a 503 (the store away) was waited out in
    silence, for up to half a minute; the CLI now says so on stderr, and then goes on."""
    if database_kind != "postgresql":
        pytest.skip("a PostgreSQL that refuses connections answers at once")
    with Stack(tmp_path / "stack", database_kind) as deployment:
        deployment.start_api()
        env = {
            **deployment.env,
            "LONGPLAY_API_URL": deployment.api_url,
            "LONGPLAY_API_KEY": deployment.key("alice"),
        }
        with refusing_connections(deployment):
            waiting = subprocess.Popen(
                [sys.executable, "-m", "longplay", "jobs"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(4)  # refused meanwhile
        _, said = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, said
    assert "GET /v1/jobs answered 503; trying again in 2 s" in said, said


def test_stopping_the_api_ends_its_streams_cleanly(database_kind: str, tmp_path: Path) -> None:
    """SIGTERM to an API with followers: their streams end at once (the client resumes
    elsewhere from its last id), the process exits well inside the server's grace, and
    the log has no error for a stream cut short."""
    with Stack(tmp_path / "stack", database_kind, logs=True) as deployment:
        deployment.start_api()
        client = deployment.client("opal")
        job = submit(client, run_at="2099-01-01T00:00:00Z")  # a stream that would not end
        ended: list[float] = []

        def follow(path: str) -> None:
            with httpx.stream(
                "GET", f"{deployment.api_url}{path}", headers=client.headers, timeout=30
            ) as stream:
                for _ in stream.iter_lines():
                    pass
            ended.append(time.monotonic())

        paths = [f"/v1/jobs/{job['id']}/events"] * 3
        followers = [threading.Thread(target=follow, args=(p,)) for p in paths]
        for thread in followers:
            thread.start()
        time.sleep(1.5)  # the streams are open
        api = deployment.processes["api"]
        asked = time.monotonic()
        api.send_signal(signal.SIGTERM)
        api.wait(10)
        stopped = time.monotonic() - asked
        for thread in followers:
            thread.join(10)
        assert len(ended) == 3 and max(ended) - asked < 2, (asked, ended)
        assert stopped < 3, f"the API took {stopped:.1f} s to stop"
        log = (deployment.data_dir / "api.log").read_text()
        for cut in ("Traceback", "timeout graceful shutdown exceeded", "Exception in ASGI"):
            assert cut not in log, log[-3000:]


@contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """``path`` made immutable (``chattr +i``: root writes through a mode of 0444) while
    the block runs; the test is skipped where the file system has no such flag."""
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if made.returncode:
        pytest.skip(f"chattr +i is not available here: {made.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def first_run_error(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """The error of the job's first run that ended with one, once there is one."""
    failed = wait_until(
        lambda: [a for a in client.get(f"/v1/jobs/{job_id}/attempts").json() if a["error"]],
        timeout=60,
    )
    return dict(failed[0]["error"])


def retried_to_completion(
    client: httpx.Client, job_id: str, error: dict[str, Any], data_dir: Path
) -> None:
    """``error`` was a storage fault to retry, naming no server path, and the job
    waits a minute, time for a person to mend it; its storage mended, a retry by hand
    runs it at once, and it completes in the same attempts."""
    assert error["code"] == "storage_unavailable" and error["retryable"] is True, error
    assert str(data_dir) not in error["message"]
    assert error["retry_in_seconds"] >= 60, error
    waiting = wait_for_status(client, job_id, {"queued"})
    assert waiting["retry_at"] is not None and waiting["attempts"] == 1, waiting
    retried = client.post(f"/v1/jobs/{job_id}/retry")
    assert retried.status_code == 200, retried.text
    done = wait_for_status(client, job_id, {"completed", "failed"}, timeout=30)
    assert done["status"] == "completed", done["error"]
    assert (done["attempts"], done["max_attempts"]) == (2, waiting["max_attempts"])
    again = client.post(f"/v1/jobs/{job_id}/retry")
    assert again.status_code == 409 and "one waiting to retry" in again.text, again.text


def test_a_data_folder_that_could_not_be_written_serves_again_once_it_can(
    database_kind: str, tmp_path: Path
) -> None:
    """A SQLite file that could not be written when the API opened it: every submit was
    a 500 until the API was restarted, though the file was writable again (its
    connections stayed read-only). A job whose files could not be written failed for
    good, as an internal_error, though a retry passed."""
    if database_kind != "sqlite":
        pytest.skip("a SQLite file's")
    with Stack(tmp_path / "stack", database_kind, logs=True) as deployment:
        client = deployment.client("opal")
        with unwritable(deployment.data_dir / "longplay.db"):
            deployment.start_api()  # its connections open the file read-only
            refused = client.post("/v1/jobs", json={"kind": "sleep", "params": {"seconds": 0}})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["retryable"] is True
        # Writable again: a submit passes, without a restart.
        passed = client.post("/v1/jobs", json={"kind": "sleep", "params": {"seconds": 0}})
        if passed.status_code == 503:  # the request that found its connection stale
            passed = client.post("/v1/jobs", json={"kind": "sleep", "params": {"seconds": 0}})
        assert passed.status_code == 202, passed.text

        deployment.start_worker()
        files = deployment.data_dir / "files"
        files.mkdir(exist_ok=True)
        with unwritable(files):
            job = submit(client, params={"seconds": 0, "text": "kept"})
            error = first_run_error(client, job["id"])
        retried_to_completion(client, job["id"], error, deployment.data_dir)


def test_a_step_is_not_held_up_for_as_long_as_another_holds_sqlites_write_lock(
    database_kind: str, tmp_path: Path
) -> None:
    """A progress write waited out SQLite's 30 s busy timeout in the step's own thread:
    a job ran as long as the lock was held on top of its own time. Progress writes may
    be skipped; the step goes on, and the job ends as soon as it can be written."""
    if database_kind != "sqlite":
        pytest.skip("SQLite's lock on the whole database")
    with Stack(tmp_path / "stack", database_kind, logs=True) as deployment:
        deployment.start_api()
        deployment.start_worker()
        client = deployment.client("opal")
        job = submit(client, params={"seconds": 8, "ticks": 32})
        wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["progress"] > 0)
        holder = sqlite3.connect(deployment.data_dir / "longplay.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's long write
        try:
            time.sleep(8)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        released = time.monotonic()
        wait_for_status(client, job["id"], {"completed"}, timeout=60)
        # Its 8 s of work went on under the lock: only its end waited for the lock (it
        # ended about 7 s after the lock's release, its work all but done by then).
        assert time.monotonic() - released < 4
        log = (deployment.data_dir / "worker.log").read_text()
        assert "progress not written, the store did not answer: database is locked" in log
        assert "[SQL:" not in log, "the statement and the job's values are not logged"


def test_a_store_fault_that_waiting_cannot_mend_is_a_500(
    database_kind: str, tmp_path: Path
) -> None:
    """SQLite raises the same error type for a locked database (wait, retry) and a
    missing table (a fault to fix): only the first is a 503 to retry. A 500 carries
    the CORS headers every other answer has."""
    if database_kind != "sqlite":
        pytest.skip("PostgreSQL tells a missing table by another error type")
    with Stack(tmp_path / "stack", database_kind, logs=True) as deployment:
        deployment.env["LONGPLAY_API_CORS_ORIGINS"] = "https://app.example"
        deployment.start_api()
        client = deployment.client("opal")
        browser = signed_in_browser(deployment, "opal")
        # A row no code of ours can read: a bug's 500, which a page on an allowed
        # origin may read (it went out without CORS headers: the page saw a failed fetch).
        job = submit(client, params={"seconds": 0})
        with session_scope(deployment.database_url) as session:
            session.execute(text("UPDATE jobs SET params = '{' WHERE id = :id"), {"id": job["id"]})
        broken = client.get(f"/v1/jobs/{job['id']}", headers={"Origin": "https://app.example"})
        assert broken.status_code == 500, broken.text
        assert broken.json()["error"]["code"] == "internal_error"
        assert broken.headers["access-control-allow-origin"] == "https://app.example"
        with session_scope(deployment.database_url) as session:
            session.execute(text("DROP TABLE templates"))
            session.execute(text("DROP TABLE jobs"))
        broken = client.get("/v1/templates", headers={"Origin": "https://app.example"})
        assert broken.status_code == 500, broken.text
        assert broken.json()["error"]["code"] == "internal_error"
        assert broken.json()["error"]["retryable"] is False
        assert broken.headers["access-control-allow-origin"] == "https://app.example"
        page = browser.get("/jobs")  # the dashboard's page says so in a page
        browser.close()
        assert page.status_code == 500, page.text
        assert page.headers["content-type"].startswith("text/html"), page.headers
        assert "the service failed on this page; it is logged" in page.text, page.text
        assert "no such table" not in page.text and "Traceback" not in page.text, page.text
        time.sleep(0.5)  # the log is written
        log = (deployment.data_dir / "api.log").read_text()
        assert "no such table: templates" in log and "Traceback" in log, log[-3000:]


def test_an_event_stream_goes_on_through_a_store_outage(database_kind: str, tmp_path: Path) -> None:
    """A stream with no news asks the store each round whether its job ended; while
    the store refused, that raised inside the stream: an unhandled error, a traceback
    in the log, and the stream cut with no end. An outage is not an end."""
    if database_kind != "postgresql":
        pytest.skip("SQLite waits out its 30 s busy timeout rather than refuse")
    with Stack(tmp_path / "stack", database_kind, logs=True) as deployment:
        deployment.start_api()
        client = deployment.client("opal")
        job = submit(client, run_at="2099-01-01T00:00:00Z")
        heard: list[str] = []

        def follow() -> None:
            with client.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=60) as stream:
                heard.extend(
                    line.removeprefix("event: ")
                    for line in stream.iter_lines()
                    if line.startswith("event: ")
                )

        follower = threading.Thread(target=follow)
        follower.start()
        wait_until(lambda: heard == ["queued"])
        with refusing_connections(deployment):
            time.sleep(6)  # an idle round (5 s) asks the store
        assert follower.is_alive(), heard
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
        follower.join(30)
        assert heard == ["queued", "cancelled"], heard
        log = (deployment.data_dir / "api.log").read_text()
        assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]


def test_an_input_stored_but_not_in_the_workers_data_folder_is_retried_not_lost(
    database_kind: str, tmp_path: Path
) -> None:
    """A worker on a machine where the shared storage is not mounted found the row but
    not the file, and failed the job for good telling its owner to upload again, though
    the upload was there all along. It is a storage fault to retry, saying where to look."""
    if database_kind != "sqlite":
        pytest.skip("the data folder's, whatever the store")
    with Stack(tmp_path / "stack", database_kind, logs=True) as deployment:
        deployment.env["LONGPLAY_MAX_ATTEMPTS"] = "10"
        deployment.start_api()
        deployment.start_worker()
        client = deployment.client("opal")
        upload = client.post(
            "/v1/artifacts", files={"file": ("note.txt", b"kept note", "text/plain")}
        )
        assert upload.status_code == 201, upload.text
        [stored] = [p for p in (deployment.data_dir / "files").rglob("*") if p.is_file()]
        aside = tmp_path / "aside"
        stored.rename(aside)  # as a worker without the mount sees it
        job = submit(client, params={"seconds": 0}, inputs=[upload.json()["id"]])
        error = first_run_error(client, job["id"])
        aside.rename(stored)
        assert "is stored, but its file is not in this worker's data folder" in error["message"]
        assert "LONGPLAY_DATA_DIR" in error["message"], error
        retried_to_completion(client, job["id"], error, deployment.data_dir)


def test_beats_rounds_through_a_store_outage_write_a_line_each(
    database_kind: str, tmp_path: Path
) -> None:
    """Admission, the reaper and the sweeps each wrote a traceback of some hundred lines
    every round while the store refused (23 in 30 s); a line each says as much."""
    if database_kind != "postgresql":
        pytest.skip("SQLite waits out its 30 s busy timeout rather than refuse")
    with Stack(tmp_path / "stack", database_kind, logs=True) as deployment:
        deployment.env.update(
            LONGPLAY_REAPER_INTERVAL="1",
            LONGPLAY_DISPATCH_INTERVAL="1",
            LONGPLAY_WEBHOOK_SWEEP_INTERVAL="1",
        )
        deployment.start_api()
        deployment.start_worker(concurrency=1)
        deployment.start_beat()
        log = deployment.data_dir / "worker.log"
        beat = deployment.data_dir / "beat.log"
        wait_until(lambda: beat.exists() and "beat: Starting" in beat.read_text(), timeout=30)
        with refusing_connections(deployment):
            wait_until(lambda: log.read_text().count("the store did not answer") >= 3, timeout=30)
        client = deployment.client("opal")
        done = wait_for_status(client, submit(client, params={"seconds": 0})["id"], {"completed"})
        assert done["status"] == "completed"
        text = log.read_text()
        assert "skipped, the store did not answer (OperationalError" in text, text[-3000:]
        assert "Traceback" not in text and "raised unexpected" not in text, text[-3000:]


def test_a_message_whose_job_the_store_could_not_give_comes_back_with_a_line(
    database_kind: str, tmp_path: Path
) -> None:
    """A job's message taken while the store refused connections was a Celery error
    with a traceback of seventy lines, the message dropped (its job waited for the sweep
    of lost messages: a minute, and beat's); it comes back now, with a line saying why."""
    if database_kind != "postgresql":
        pytest.skip("SQLite waits out its 30 s busy timeout rather than refuse")
    with Stack(tmp_path / "stack", database_kind, logs=True) as deployment:
        deployment.start_api()
        deployment.start_worker(concurrency=1)
        client = deployment.client("opal")
        job = submit(client, run_at="2099-01-01T00:00:00Z")  # no round hands it over
        log = deployment.data_dir / "worker.log"
        sender = Celery(broker=Settings(redis_url=deployment.redis_url).broker_url)
        with refusing_connections(deployment):
            # Its message, as a round handed it over just before the store went away.
            sender.send_task(RUN_JOB, args=[job["id"]], queue=keys.queue_name("cpu", "normal"))
            wait_until(lambda: log.read_text().count("not taken, the store did not answer") >= 2)
        text = log.read_text()
        assert "its message comes back in 2 s" in text, text[-3000:]
        assert "Traceback" not in text and "raised unexpected" not in text, text[-3000:]
        # Once the store answers, the delivery finds the job not due and leaves it.
        wait_until(lambda: "not claimable here" in log.read_text(), timeout=60)
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
