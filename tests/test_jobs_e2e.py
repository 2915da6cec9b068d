"""The job service end to end: HTTP API process, Celery worker process, real Redis
and database. Each test runs once on SQLite and once on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import plugin_kinds  # noqa: F401  (registers `sleep` here too, for create_job)
import pytest
import redis
from conftest import Stack, signed_in_browser, submit, wait_for_status, wait_until
from sqlalchemy import update
from sqlalchemy.orm import Session

from longplay import keys
from longplay.jobs.submission import create_job
from longplay.settings import get_settings
from longplay.store.db import session_scope
from longplay.store.models import Job, JobStatus
from longplay.store.owners import get_or_create_owner


def read_events(client: httpx.Client, job_id: str, last_id: str | None = None) -> list[dict]:
    """Read a job's SSE stream to its end; each item carries its SSE id and event name."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=60) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("id:"):
                current["id"] = line[3:].strip()
            elif line.startswith("event:"):
                current["event"] = line[6:].strip()
            elif line.startswith("data:"):
                current["data"] = json.loads(line[5:])
            elif not line and current:
                events.append(current)
                current = {}
    return events


def test_submit_runs_to_completion_and_downloads(stack: Stack) -> None:
    client = stack.client()
    job = submit(client, params={"seconds": 0.5, "ticks": 5, "text": "hello longplay"})
    assert job["status"] == "queued"
    assert job["links"] == {
        "self": f"/v1/jobs/{job['id']}",
        "cancel": f"/v1/jobs/{job['id']}/cancel",
        "events": f"/v1/jobs/{job['id']}/events",
    }
    done = wait_for_status(client, job["id"], {"completed", "failed"})
    assert done["status"] == "completed", done
    assert done["progress"] == 100.0
    assert done["current_step"] is None and done["step_details"] == {}  # no step left
    assert done["attempts"] == 1
    assert done["started_at"] and done["finished_at"]
    [output] = done["outputs"]
    assert output["name"] == "result.txt" and output["media_type"] == "text/plain"
    content = client.get(output["links"]["content"])
    assert content.status_code == 200
    assert content.text == "hello longplay"
    assert output["size"] == len("hello longplay")


def test_event_sequence_and_resume(stack: Stack) -> None:
    client = stack.client()
    job = submit(client, params={"seconds": 1.0, "ticks": 8})
    events = read_events(client, job["id"])
    names = [e["event"] for e in events]
    assert names[0] == "queued" and names[1] == "running", names
    assert names[-1] == "completed", names
    progress = [e["data"]["progress"] for e in events if e["event"] == "progress"]
    assert len(progress) >= 5
    assert progress == sorted(progress), "progress never goes back"
    steps = {e["data"]["step"] for e in events if e["event"] == "progress"}
    assert steps == {"prepare", "work"}
    # Each step's last event keeps what the step itself last reported.
    last = {
        e["data"]["step"]: e["data"]["step_details"] for e in events if e["event"] == "progress"
    }
    assert last == {
        "prepare": {"prepared": True, "done": 1, "total": 1},
        "work": {"tick": 8, "done": 8, "total": 8},
    }
    assert all(e["id"] for e in events)
    # Resuming after the third event replays exactly what came after it.
    resumed = read_events(client, job["id"], last_id=events[2]["id"])
    assert [e["id"] for e in resumed] == [e["id"] for e in events[3:]]
    # Resuming after the last event is a 204, which tells EventSource to stop: before,
    # it had the end again (with no id) and reconnected every few seconds for ever.
    ms, seq = (int(part) for part in events[-1]["id"].split("-"))
    # So is resuming with a later id (another stream's, or one from a clock ahead): it
    # was sent the end again, made up from the store, with no id and a new time.
    for resume in (events[-1]["id"], f"{ms}-{seq + 1}", f"{ms + 60_000}-0", f"{2**64 - 1}-0"):
        path = f"/v1/jobs/{job['id']}/events"
        ended = client.get(path, headers={"Last-Event-ID": resume})
        assert ended.status_code == 204 and ended.content == b"", resume


def test_an_end_the_stream_no_longer_holds_is_sent_once_from_the_store(stack: Stack) -> None:
    """A job's events expire after a week, the job after a month (or Redis lost them):
    its end was sent from the store with no id, so a browser's EventSource reconnected
    every few seconds for ever, sent the end each time. The end now has an id past the
    stream's, and resuming after it is a 204."""
    client = stack.client()
    job = submit(client, params={"seconds": 0, "ticks": 2})
    wait_for_status(client, job["id"], {"completed"})
    events = redis.Redis.from_url(stack.redis_url)
    stream = keys.events_stream(job["id"])
    [(last_id, _)] = events.xrevrange(stream, count=1)
    path = f"/v1/jobs/{job['id']}/events"
    # Its last event lost, then the whole stream gone.
    for lose in (lambda: events.xdel(stream, last_id), lambda: events.delete(stream)):
        lose()
        sent = read_events(client, job["id"])
        assert sent[-1]["event"] == "completed" and sent[-1]["data"]["progress"] == 100
        assert all(e["id"] for e in sent)
        ended = client.get(path, headers={"Last-Event-ID": sent[-1]["id"]})
        assert ended.status_code == 204 and ended.content == b""
    assert len(sent) == 1


def test_a_poller_sees_the_step_that_started_while_a_long_call_runs(stack: Stack) -> None:
    """Progress is written to the store at most every half second; a change that came
    sooner (here the second step's start, just after the claim) is written once the
    half second is up, not when the step next reports (here only after 5 s)."""
    client = stack.client()
    job = submit(client, params={"seconds": 5, "ticks": 1})

    def once(shown: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        polled = dict(client.get(f"/v1/jobs/{job['id']}").json())
        return polled if shown(polled) else None

    running = wait_until(lambda: once(lambda j: j["status"] != "queued"), every=0.05)
    assert running["status"] == "running", running
    seen = time.monotonic()
    shown = wait_until(
        lambda: once(lambda j: j["current_step"] == "work" or j["status"] != "running"),
        timeout=10,
        every=0.05,
    )
    assert shown["status"] == "running" and shown["current_step"] == "work", shown
    assert time.monotonic() - seen < 3, "the step's start waited for its next report"
    assert wait_for_status(client, job["id"], {"completed", "failed"})["status"] == "completed"


def test_cancel_queued_job_never_runs(stack: Stack) -> None:
    client = stack.client()
    blockers = [submit(client, params={"seconds": 3, "ticks": 6}) for _ in range(2)]
    for blocker in blockers:
        wait_for_status(client, blocker["id"], {"running"})
    queued = submit(client, params={"seconds": 0.1})
    shown = client.get(f"/v1/jobs/{queued['id']}").json()
    assert shown["status"] == "queued" and shown["queue_position"] == 0
    cancelled = client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    for blocker in blockers:
        assert wait_for_status(client, blocker["id"], {"completed"})["status"] == "completed"
    final = client.get(f"/v1/jobs/{queued['id']}").json()
    assert final["status"] == "cancelled" and final["started_at"] is None
    assert final["attempts"] == 0
    again = client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert again.status_code == 409


def test_cancel_running_job_stops_it(stack: Stack) -> None:
    client = stack.client()
    job = submit(client, params={"seconds": 30, "ticks": 300})
    wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["progress"] > 15)
    response = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    events = read_events(client, job["id"])
    assert events[-1]["event"] == "cancelled"
    # The worker stops at its next checkpoint and is free for the next job at once.
    follower = submit(client, params={"seconds": 0.2})
    wait_for_status(client, follower["id"], {"completed"}, timeout=20)
    final = client.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "cancelled"
    assert final["outputs"] == []
    assert final["progress"] < 60


def test_a_cancelled_job_keeps_where_its_run_stopped(stack: Stack) -> None:
    """The cancel stores the progress last written, up to a write interval behind the
    run; the run, stopped at its next checkpoint, keeps where it had got to (its step,
    its percent), as a failed job does."""
    client = stack.client()
    job = submit(client, params={"seconds": 20, "ticks": 400})
    seen = 0.0
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=60) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            if event.get("step") == "work":
                seen = max(seen, float(event.get("progress") or 0))
            # Cancel while the store trails what the events have shown.
            if seen > 20 and client.get(f"/v1/jobs/{job['id']}").json()["progress"] < seen:
                break
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200

    def stopped() -> bool:
        attempts = client.get(f"/v1/jobs/{job['id']}/attempts").json()
        return bool(attempts) and attempts[-1]["outcome"] == "cancelled"

    wait_until(stopped, timeout=30)
    final = client.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "cancelled" and final["current_step"] == "work", final
    assert final["progress"] >= seen, (final["progress"], seen)
    # Changed after the cancel's answer, so its updated_at says so.
    assert final["progress"] > cancelled.json()["progress"], (final, cancelled.json())
    assert final["updated_at"] > cancelled.json()["updated_at"]


def test_priority_overtakes_low_backlog(make_stack) -> None:  # type: ignore[no-untyped-def]
    deployment: Stack = make_stack()
    deployment.start_api()
    deployment.start_worker(concurrency=1)  # one slot: the order jobs start in is strict
    client = deployment.client()
    blocker = submit(client, params={"seconds": 2, "ticks": 4})
    wait_for_status(client, blocker["id"], {"running"})
    low = [submit(client, priority="low", params={"seconds": 0.1}) for _ in range(4)]
    wait_until(lambda: client.get(f"/v1/jobs/{low[0]['id']}").json()["queue_position"] == 0)
    high = submit(client, priority="high", params={"seconds": 0.1})
    # Admission handed the first low job to the broker (dispatch_ahead 1) while the
    # blocker ran. The high job, held, is handed over when the blocker ends: the worker
    # takes it first if it is there when it looks, else the low one. Each counts the
    # other ahead of it; the held low ones come after both.
    positions = [client.get(f"/v1/jobs/{j['id']}").json()["queue_position"] for j in [high, *low]]
    assert positions == [1, 1, 2, 3, 4]
    jobs = [wait_for_status(client, j["id"], {"completed"}) for j in [high, *low]]
    starts = [j["started_at"] for j in jobs]
    assert starts[0] < min(starts[2:]), "the high job started before the held low ones"
    assert starts[1:] == sorted(starts[1:]), "jobs of one priority start in submit order"


def test_owner_isolation_on_every_route(stack: Stack) -> None:
    alice, bob = stack.client("alice"), stack.client("bob")
    upload = alice.post("/v1/artifacts", files={"file": ("a.txt", b"private", "text/plain")})
    assert upload.status_code == 201
    artifact = upload.json()
    job = submit(alice, params={"seconds": 0.1}, inputs=[artifact["id"]])
    wait_for_status(alice, job["id"], {"completed"})
    jid, aid = job["id"], artifact["id"]
    for method, path in [
        ("GET", f"/v1/jobs/{jid}"),
        ("GET", f"/v1/jobs/{jid}/events"),
        ("POST", f"/v1/jobs/{jid}/cancel"),
        ("DELETE", f"/v1/jobs/{jid}"),
        ("GET", f"/v1/artifacts/{aid}"),
        ("GET", f"/v1/artifacts/{aid}/content"),
    ]:
        response = bob.request(method, path)
        assert response.status_code == 404, (method, path, response.status_code)
    assert all(j["id"] != jid for j in bob.get("/v1/jobs").json()["items"])
    stolen = bob.post("/v1/jobs", json={"kind": "sleep", "inputs": [aid]})
    assert stolen.status_code == 422 and aid in stolen.json()["error"]["message"]
    # Alice still has everything.
    assert alice.get(f"/v1/artifacts/{aid}/content").content == b"private"
    assert alice.get(f"/v1/jobs/{jid}").json()["status"] == "completed"


def test_keys_are_required(stack: Stack) -> None:
    assert httpx.get(f"{stack.api_url}/v1/jobs").status_code == 401
    wrong = httpx.get(f"{stack.api_url}/v1/jobs", headers={"Authorization": "Bearer lp_nope"})
    assert wrong.status_code == 401
    assert "not valid" in wrong.json()["error"]["message"]


def test_bad_submissions_get_clear_answers(stack: Stack) -> None:
    client = stack.client()
    unknown = client.post("/v1/jobs", json={"kind": "nope"})
    assert unknown.status_code == 422 and "unknown job kind" in unknown.json()["error"]["message"]
    bad = client.post("/v1/jobs", json={"kind": "sleep", "params": {"seconds": -1}})
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["loc"] == ["body", "params", "seconds"]
    too_big = client.post(
        "/v1/artifacts", files={"file": ("big.bin", b"\0" * (9 * 1024 * 1024), "audio/wav")}
    )
    assert too_big.status_code == 413
    assert not list((stack.data_dir / "files" / ".incoming").glob("*"))


def test_failures_are_typed(stack: Stack) -> None:
    client = stack.client()
    job = submit(client, params={"seconds": 0.1, "fail": "permanent"})
    failed = wait_for_status(client, job["id"], {"failed"})
    assert failed["error"]["code"] == "asked_to_fail"
    assert failed["error"]["retryable"] is False
    assert failed["attempts"] == 1
    # Where it stopped, though the run was shorter than one progress write interval.
    assert failed["current_step"] == "work"
    assert failed["step_details"] == {"tick": 10, "done": 10, "total": 10}
    assert failed["progress"] > 0
    # Its last event says so too, as a completed or cancelled job's does.
    end = read_events(client, job["id"])[-1]
    assert end["event"] == "failed" and end["data"]["progress"] == failed["progress"]


def test_list_filter_and_paginate(stack: Stack) -> None:
    client = stack.client("pager")  # an owner no other test uses: the list is all its own
    made = [submit(client, params={"seconds": 0.05})["id"] for _ in range(5)]
    for job_id in made:
        wait_for_status(client, job_id, {"completed"})
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "status": "completed", "kind": "sleep"}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(made))
    assert client.get("/v1/jobs", params={"status": "running"}).json()["items"] == []


def test_pages_go_on_after_their_last_job_is_deleted(stack: Stack) -> None:
    client = stack.client("pruner")  # an owner no other test uses
    made = [submit(client, params={"seconds": 0.05, "fail": "permanent"})["id"] for _ in range(5)]
    for job_id in made:
        wait_for_status(client, job_id, {"failed"})
    # A cursor is a place in the list: any of its form is one, and nothing else is.
    refused = client.get("/v1/jobs", params={"cursor": "job_nope"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"][0]["loc"] == ["query", "cursor"]
    beyond = client.get("/v1/jobs", params={"limit": 2, "cursor": "fffffffffffffff.job_x"})
    assert [j["id"] for j in beyond.json()["items"]] == [made[4], made[3]]
    # Walk the failed jobs, deleting each page's jobs (the cursor's last one too) before
    # asking for the next page.
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2, "status": "failed"}
    while True:
        response = client.get("/v1/jobs", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        for job in page["items"]:
            seen.append(job["id"])
            assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == list(reversed(made))


def test_delete_finished_job_removes_its_files(stack: Stack) -> None:
    client = stack.client()
    running = submit(client, params={"seconds": 2})
    wait_for_status(client, running["id"], {"running"})
    assert client.delete(f"/v1/jobs/{running['id']}").status_code == 409
    done = wait_for_status(client, running["id"], {"completed"})
    path = stack.data_dir / "files" / done["outputs"][0]["id"]
    assert path.is_file()
    assert client.delete(f"/v1/jobs/{running['id']}").status_code == 204
    assert not path.exists()
    assert client.get(f"/v1/jobs/{running['id']}").status_code == 404
    assert client.get(done["outputs"][0]["links"]["content"]).status_code == 404


def completed_with_an_upload(client: httpx.Client) -> tuple[dict[str, Any], str]:
    """A ``sleep`` job that read a file uploaded with it (``shared.txt``), once it has
    completed, and the upload's id."""
    made = client.post(
        "/v1/jobs",
        data={"kind": "sleep", "params": json.dumps({"seconds": 0.05})},
        files={"file": ("shared.txt", b"shared bytes", "text/plain")},
    )
    assert made.status_code == 202, made.text
    [upload] = made.json()["inputs"]
    return wait_for_status(client, made.json()["id"], {"completed"}), upload


def test_delete_keeps_an_upload_another_job_names(stack: Stack) -> None:
    client = stack.client("gina")
    first, upload = completed_with_an_upload(client)
    output = stack.data_dir / "files" / first["outputs"][0]["id"]
    # The second job reads the first one's upload, once a slow job it waits for ends,
    # so it reads it after the first job is deleted.
    gate = submit(client, params={"seconds": 3, "ticks": 6})
    second = submit(client, params={"seconds": 0.05}, inputs=[upload], after=[gate["id"]])
    assert second["status"] == "waiting"
    assert client.delete(f"/v1/jobs/{first['id']}").status_code == 204
    assert not output.exists(), "the deleted job's output goes with it"
    assert client.get(f"/v1/jobs/{second['id']}").json()["status"] == "waiting"
    shown = client.get(f"/v1/artifacts/{upload}")
    assert shown.status_code == 200 and shown.json()["name"] == "shared.txt"
    assert client.get(f"/v1/artifacts/{upload}/content").content == b"shared bytes"
    ended = wait_for_status(client, second["id"], {"completed", "failed", "cancelled"})
    assert ended["status"] == "completed", ended["error"]


def delete_while_held(
    stack: Stack,
    client: httpx.Client,
    job_id: str,
    hold: Callable[[Session], None],
    what: str,
) -> httpx.Response:
    """``DELETE`` the job while another transaction has done ``hold`` (a submission, a
    retry) and not committed yet: on PostgreSQL the delete must wait for ``what``; on
    SQLite it is refused as busy, and the client sends it again once ``hold`` is in.
    The delete's last answer."""
    deleting = ThreadPoolExecutor(1)
    try:
        with session_scope(stack.database_url) as session:
            hold(session)
            session.flush()
            answer = deleting.submit(client.delete, f"/v1/jobs/{job_id}")
            time.sleep(1.0)
            if stack.database_kind == "postgresql":
                assert not answer.done(), f"the delete waits for {what}"
        deleted = answer.result(timeout=60)
    finally:
        deleting.shutdown()
    if deleted.status_code == 503:  # SQLite: the store was busy; the client tries again
        deleted = client.delete(f"/v1/jobs/{job_id}")
    return deleted


def test_a_delete_meeting_a_submission_that_names_its_upload_loses_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job is deleted while a submission naming its upload is part way through: the
    delete waits for the submission (PostgreSQL) or is refused as busy (SQLite), and
    then keeps the upload, which the new job reads. Before, the delete did not see the
    job still being submitted and removed the upload, and the job failed without it."""
    client = stack.client("hana")
    first, upload = completed_with_an_upload(client)
    monkeypatch.setenv("LONGPLAY_DATABASE_URL", stack.database_url)
    get_settings.cache_clear()
    made: list[Any] = []

    def submission(session: Session) -> None:
        owner = get_or_create_owner(session, "hana")
        made.append(
            create_job(
                session, owner=owner, kind_name="sleep", params={"seconds": 0}, input_ids=[upload]
            )
        )

    try:
        deleted = delete_while_held(stack, client, first["id"], submission, "the submission")
    finally:
        get_settings.cache_clear()
    [second] = made
    assert deleted.status_code == 204, deleted.text
    assert client.get(f"/v1/artifacts/{upload}/content").content == b"shared bytes"
    submit(client, params={"seconds": 0})  # asks for the admission round that hands it over
    ended = wait_for_status(client, second.id, {"completed", "failed"})
    assert ended["status"] == "completed", ended["error"]


def test_a_delete_meeting_a_retry_leaves_the_retried_job(stack: Stack) -> None:
    """A failed job is deleted while a retry of it is part way through (its row updated,
    not yet committed): the delete waits (PostgreSQL) or is refused as busy (SQLite),
    then finds the job queued again and refuses (409). Before, it had read the job as
    failed without a lock, and deleted it under the retry that had just answered."""
    client = stack.client("ines")
    job = submit(client, params={"seconds": 0, "fail": "permanent"})
    assert wait_for_status(client, job["id"], {"failed"})["status"] == "failed"

    def retry(session: Session) -> None:
        session.execute(
            update(Job).where(Job.id == job["id"]).values(status=JobStatus.QUEUED.value)
        )

    deleted = delete_while_held(stack, client, job["id"], retry, "the retry")
    assert deleted.status_code == 409, deleted.text
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200, "the retried job stays"


@pytest.mark.parametrize("change", ["cancel", "retry"])
def test_a_cancel_or_retry_crossing_a_delete_finds_the_job_gone(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """A cancel or retry that read the job just before a delete took it is told the job
    is gone (404), not a 500 (it re-read the job it could not change, and found none)."""
    from longplay.jobs import refusals, service

    client = stack.client("jonas")
    params = {"seconds": 0, **({"fail": "permanent"} if change == "retry" else {})}
    job = submit(client, params=params)
    wait_for_status(client, job["id"], {"completed", "failed"})
    monkeypatch.setenv("LONGPLAY_DATABASE_URL", stack.database_url)
    get_settings.cache_clear()
    try:
        with session_scope(stack.database_url) as session:
            owner = get_or_create_owner(session, "jonas")
            service.get_job(session, owner=owner, job_id=job["id"])  # read, then deleted
            assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
            act = service.cancel_job if change == "cancel" else service.retry_job
            with pytest.raises(refusals.NotFound):
                act(session, owner=owner, job_id=job["id"])
    finally:
        get_settings.cache_clear()


def test_a_retried_jobs_stream_read_from_its_start_goes_on_to_its_new_end(stack: Stack) -> None:
    """A failed job retried by hand runs again: its stream, read from the start as a
    reconnecting or late client reads it, goes on past the old failure to the new end
    (it ended at the old ``failed``, so ``longplay watch`` showed a failed job)."""
    client = stack.client("uma")
    job = submit(client, "flaky", params={"failures": 3})  # its 3 attempts fail; a 4th passes
    failed = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=90)
    assert failed["status"] == "failed"
    assert read_events(client, job["id"])[-1]["event"] == "failed"
    assert client.post(f"/v1/jobs/{job['id']}/retry").status_code == 200
    wait_for_status(client, job["id"], {"completed"}, timeout=60)
    events = [e["event"] for e in read_events(client, job["id"])]
    assert events[-1] == "completed" and "failed" not in events
    assert events.count("retrying") == 2, "the automatic retries are still told"
    outcomes = [a["outcome"] for a in client.get(f"/v1/jobs/{job['id']}/attempts").json()]
    assert outcomes[-2:] == ["failed", "completed"], "the attempts keep the failure"


def test_health_reports_parts(stack: Stack) -> None:
    # The tests' shared deployment runs no beat (its upkeep would race the tests).
    health = stack.health()
    assert health == {
        "status": "degraded",
        "store": "ok",
        "redis": "ok",
        "workers": 1,
        "beat": "none",
        "disk": "ok",
        "down": ["beat"],
    }


def test_health_says_when_no_beat_schedules(make_stack) -> None:  # type: ignore[no-untyped-def]
    """Beat's reaper alone gives back a dead worker's jobs: with no beat, /healthz and
    /metrics said nothing, and such a job showed running for as long as none ran."""
    deployment: Stack = make_stack()
    deployment.start_api()
    deployment.start_worker(concurrency=1)

    def shown() -> tuple[int, dict[str, Any], str]:
        health = httpx.get(f"{deployment.api_url}/healthz", timeout=10)
        metrics = httpx.get(f"{deployment.api_url}/metrics", timeout=10).text
        [gauge] = [line for line in metrics.splitlines() if line.startswith("longplay_beat_")]
        return health.status_code, health.json(), gauge

    assert shown() == (
        503,
        {**deployment.health(), "status": "degraded", "beat": "none", "down": ["beat"]},
        "longplay_beat_scheduling 0.0",
    )
    deployment.start_beat()
    up = wait_until(lambda: (found := shown())[0] == 200 and found)
    assert up[1]["beat"] == "ok" and up[1]["down"] == [] and up[2].endswith(" 1.0"), up
    ready = httpx.get(f"{deployment.api_url}/readyz", timeout=10).json()
    assert ready["beat"] == "ok"
    deployment.stop("beat")  # a clean stop gives the lease back at once
    down = wait_until(lambda: (found := shown())[0] == 503 and found, timeout=20)
    assert down[1]["down"] == ["beat"] and down[2].endswith(" 0.0"), down
    # A missing beat is no fault of an API's: it is ready to serve.
    assert httpx.get(f"{deployment.api_url}/readyz", timeout=10).status_code == 200


def test_job_waits_for_a_worker(make_stack) -> None:  # type: ignore[no-untyped-def]
    deployment: Stack = make_stack()
    deployment.start_api()
    client = deployment.client()
    degraded = httpx.get(f"{deployment.api_url}/healthz", timeout=10)
    assert degraded.status_code == 503 and degraded.json()["workers"] == 0
    # No worker is no fault of the API's: it is ready to serve.
    ready = httpx.get(f"{deployment.api_url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ok",
        "store": "ok",
        "redis": "ok",
        "workers": 0,
        "beat": "none",
        "disk": "ok",
        "down": [],
    }
    job = submit(client, params={"seconds": 0.2})
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    deployment.start_worker(concurrency=1)
    assert wait_for_status(client, job["id"], {"completed"})["attempts"] == 1


def test_range_requests_let_players_seek(stack: Stack) -> None:
    client = stack.client()
    payload = bytes(range(256)) * 64
    artifact = client.post("/v1/artifacts", files={"file": ("x.bin", payload, "audio/wav")})
    url = artifact.json()["links"]["content"]
    part = client.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(payload)}"
    assert part.content == payload[1000:2000]
    assert client.get(url, headers={"Range": "bytes=99999-"}).status_code == 416


def test_gpu_work_waits_for_a_gpu_worker_and_says_so(make_stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A ``gpu`` kind where only CPU workers run waits, and its job says why: through
    the API, on the dashboard and when the CLI follows it."""
    deployment: Stack = make_stack()
    deployment.start_api()
    deployment.start_worker(concurrency=1)  # takes cpu work only
    client = deployment.client("gail")
    gpu_job = submit(client, "gpu_sleep", params={"seconds": 0.1})
    cpu_job = submit(client, params={"seconds": 0.1})
    assert wait_for_status(client, cpu_job["id"], {"completed"})["stalled"] is None
    why = (
        "no worker that takes gpu jobs is running or answering "
        "(longplay worker --queues gpu starts one)"
    )
    shown = client.get(f"/v1/jobs/{gpu_job['id']}").json()
    assert (shown["status"], shown["stalled"]) == ("queued", why), shown
    [listed] = client.get("/v1/jobs", params={"status": "queued"}).json()["items"]
    assert listed["stalled"] == why
    page = signed_in_browser(deployment, "gail").get(f"/jobs/{gpu_job['id']}")
    assert f"#1 in the queue: {why}" in page.text, page.text
    watching = subprocess.Popen(
        [sys.executable, "-m", "longplay", "watch", gpu_job["id"], "--out", str(tmp_path)],
        env={
            **deployment.env,
            "LONGPLAY_API_URL": deployment.api_url,
            "LONGPLAY_API_KEY": deployment.key("gail"),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watching.stderr is not None
        assert watching.stderr.readline().strip() == f"waiting: {why}"
        deployment.stop_worker()
        deployment.env["LONGPLAY_WORKER_QUEUES"] = "gpu"
        deployment.start_worker(concurrency=1)
        assert wait_for_status(client, gpu_job["id"], {"completed"})["stalled"] is None
        assert watching.wait(60) == 0, watching.stderr.read()
    finally:
        watching.kill()
    assert (tmp_path / "result.txt").read_text() == "done"


def test_retry_resumes_after_the_last_finished_step(stack: Stack) -> None:
    client = stack.client()
    job = submit(client, "flaky", params={"failures": 1})
    done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done["error"]
    assert done["attempts"] == 2
    assert done["error"] is None, "a completed job shows no error"
    tries = client.get(f"/v1/jobs/{job['id']}/attempts").json()
    assert [t["error"]["code"] if t["error"] else None for t in tries] == [
        "engine_timeout",
        None,
    ], tries
    names = {o["name"]: o for o in done["outputs"]}
    assert set(names) == {"first.txt", "second.txt"}
    second = client.get(names["second.txt"]["links"]["content"]).text
    assert second == "MADE BY THE FIRST STEP / done"
    events = [e["event"] for e in read_events(client, job["id"])]
    assert "retrying" in events and "step_skipped" in events
    counts = redis.Redis.from_url(stack.redis_url)
    assert int(counts.get(f"test:{job['id']}:first") or 0) == 1, "the first step ran once"
    assert int(counts.get(f"test:{job['id']}:second") or 0) == 2


def test_retries_stop_at_max_attempts(stack: Stack) -> None:
    client = stack.client()
    job = submit(client, "flaky", params={"failures": 5})
    failed = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=90)
    assert failed["status"] == "failed"
    assert failed["attempts"] == failed["max_attempts"] == 3
    assert failed["error"]["code"] == "engine_timeout" and failed["error"]["retryable"]


def test_workers_report_themselves(stack: Stack) -> None:
    client = stack.client()
    job = submit(client, params={"seconds": 0.1})
    wait_for_status(client, job["id"], {"completed"})

    def reported() -> list[dict[str, Any]] | None:
        workers = client.get("/v1/workers").json()
        return workers if any(w["last_job"] == job["id"] for w in workers) else None

    workers = wait_until(reported, timeout=10)
    assert len(workers) == 2, "one report per pool process"
    assert all(isinstance(w["engines"], list) for w in workers)
    assert httpx.get(f"{stack.api_url}/v1/workers").status_code == 401
    # Another owner sees the same processes, but not which job of alice's they ran.
    with stack.client("bob-workers") as bob, stack.client("admin-workers") as admin:
        seen = bob.get("/v1/workers").json()
        assert sorted(w["name"] for w in seen) == sorted(w["name"] for w in workers)
        assert job["id"] not in json.dumps(seen), seen
        assert any(w["last_job"] == job["id"] for w in admin.get("/v1/workers").json())


def test_a_method_a_path_does_not_take_is_told_with_those_it_takes(stack: Stack) -> None:
    with stack.client() as client:
        for method, path, allowed in [
            ("PUT", "/v1/jobs", "GET, POST"),
            ("POST", "/v1/jobs/job_x", "DELETE, GET"),
            ("DELETE", "/v1/kinds", "GET"),
            ("OPTIONS", "/v1/jobs/retry", "POST"),  # not the GET of /v1/jobs/{job_id}
        ]:
            answer = client.request(method, path)
            assert answer.status_code == 405, (method, path)
            assert answer.headers["allow"] == allowed, (method, path)


@pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)
def test_a_worker_lists_an_engine_once_it_is_loaded_not_once_the_job_ends(
    make_stack: Callable[[], Stack],
) -> None:
    """A fresh pool process loads the voice for a long synthesis: ``GET /v1/workers``
    shows it while that first job still runs (it showed none until the job ended)."""
    deployment = make_stack()
    deployment.start_api()
    deployment.start_worker(concurrency=1)
    client = deployment.client()
    assert [w["engines"] for w in client.get("/v1/workers").json()] == [[]]
    text = "The library opens early and stays open late on every weekday. " * 120
    job = submit(client, "synthesize", params={"text": text})

    def voice_listed() -> bool:
        workers = client.get("/v1/workers").json()
        return any(e["kind"] == "tts" for w in workers for e in w["engines"])

    wait_until(voice_listed, timeout=60, every=0.2)
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200


def test_time_limits_fail_the_job_and_the_worker_goes_on(stack: Stack) -> None:
    client = stack.client()
    soft = submit(client, "limited")
    hard = submit(client, "limited", params={"stubborn": True})
    for job, limit in ((soft, "time limit of 1 s"), (hard, "hard time limit of 3 s")):
        failed = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=30)
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "time_limit"
        assert limit in failed["error"]["message"]
        assert failed["attempts"] == 1
    after = [submit(client, params={"seconds": 0.1}) for _ in range(2)]
    for job in after:
        wait_for_status(client, job["id"], {"completed"}, timeout=30)


def test_idempotency_key_returns_the_first_job(stack: Stack) -> None:
    client = stack.client()
    headers = {"Idempotency-Key": "order-42"}
    first = client.post("/v1/jobs", json={"kind": "sleep"}, headers=headers)
    again = client.post("/v1/jobs", json={"kind": "sleep"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["inputs"] == []
    # A file sent again with its request (a retry after a lost answer) is the same job,
    # though it is stored under a new id until the key is found: its bytes are the same.
    sent = {"Idempotency-Key": "order-42-file"}
    with_file = [
        client.post(
            "/v1/jobs",
            data={"kind": "sleep"},
            files={"file": ("x.txt", b"the same bytes", "text/plain")},
            headers=sent,
        )
        for _ in range(2)
    ]
    assert [r.status_code for r in with_file] == [202, 202]
    assert with_file[0].json()["id"] == with_file[1].json()["id"]
    assert with_file[1].json()["inputs"] == with_file[0].json()["inputs"]
    other_owner = stack.client("bob").post("/v1/jobs", json={"kind": "sleep"}, headers=headers)
    assert other_owner.json()["id"] != first.json()["id"]
    wait_for_status(client, first.json()["id"], {"completed"})


def test_an_idempotency_key_reused_for_another_request_is_refused(stack: Stack) -> None:
    client = stack.client()
    headers = {"Idempotency-Key": "order-43"}
    first = client.post("/v1/jobs", json={"kind": "sleep"}, headers=headers)
    assert first.status_code == 202
    for other, differs in (
        ({"kind": "sleep", "params": {"seconds": 2}}, "other parameters"),
        ({"kind": "flaky"}, "other kind"),
        ({"kind": "sleep", "priority": "high"}, "other priority"),
        ({"kind": "sleep", "run_at": "2099-01-01T00:00:00Z"}, "other times"),
    ):
        again = client.post("/v1/jobs", json=other, headers=headers)
        assert again.status_code == 422, again.text
        said = again.json()["error"]
        assert said["code"] == "idempotency_key_reused"
        assert first.json()["id"] in said["message"] and differs in said["message"], said
    # Other files, or another upload named, with the key are another request: refused,
    # not answered with the first job, whose inputs are not these.
    sent = {"Idempotency-Key": "order-43-file"}
    files = {"file": ("a.txt", b"first bytes", "text/plain")}
    assert client.post("/v1/jobs", data={"kind": "sleep"}, files=files, headers=sent).is_success
    files = {"file": ("b.txt", b"other bytes", "text/plain")}
    again = client.post("/v1/jobs", data={"kind": "sleep"}, files=files, headers=sent)
    assert again.status_code == 422 and "other inputs" in again.text, again.text
    upload = client.post("/v1/artifacts", files={"file": ("c.txt", b"c", "text/plain")}).json()
    named = client.post("/v1/jobs", json={"kind": "sleep", "inputs": [upload["id"]]}, headers=sent)
    assert named.status_code == 422 and "other inputs" in named.text, named.text
    wait_for_status(client, first.json()["id"], {"completed"})


def test_failed_jobs_can_be_listed_and_retried(stack: Stack) -> None:
    client = stack.client("erin")
    job = submit(client, "flaky", params={"failures": 3})
    failed = wait_for_status(client, job["id"], {"failed"}, timeout=90)
    assert failed["attempts"] == 3
    listed = client.get("/v1/jobs", params={"status": "failed"}).json()["items"]
    assert [j["id"] for j in listed] == [job["id"]]
    attempts = client.get(f"/v1/jobs/{job['id']}/attempts").json()
    assert [a["outcome"] for a in attempts] == ["retrying", "retrying", "failed"]
    assert all(a["error"]["code"] == "engine_timeout" for a in attempts)
    # The retry resumes after the finished first step and this time succeeds.
    many = client.post("/v1/jobs/retry", json={"ids": [job["id"], "job_nope"]}).json()
    assert many["retried"] == [job["id"]]
    assert many["skipped"] == [{"id": "job_nope", "reason": "no job job_nope"}]
    done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed" and done["attempts"] == 4
    assert client.post(f"/v1/jobs/{job['id']}/retry").status_code == 409
    counts = redis.Redis.from_url(stack.redis_url)
    assert int(counts.get(f"test:{job['id']}:first") or 0) == 1


def test_only_admins_list_every_owner(stack: Stack) -> None:
    assert stack.client().get("/v1/jobs", params={"all_owners": True}).status_code == 403
    job = submit(stack.client("frank"), params={"seconds": 0.05})
    admin = stack.client("admin")
    listed = admin.get("/v1/jobs", params={"all_owners": True, "limit": 200}).json()["items"]
    assert job["id"] in [j["id"] for j in listed]
    assert admin.get(f"/v1/jobs/{job['id']}").status_code == 404, "reads stay scoped"


def test_a_pool_process_over_its_memory_bound_is_replaced_between_jobs(
    make_stack: Callable[[], Stack],
) -> None:
    """``LONGPLAY_WORKER_MAX_MEMORY_MB``: nothing replaced a pool process, so whatever
    its heap gathered stayed for the worker's life. Over the bound (1 MiB here: every
    process is), each job ends in a process that is then replaced; none is lost."""
    deployment = make_stack()
    deployment.env["LONGPLAY_WORKER_MAX_MEMORY_MB"] = "1"
    deployment.start_api()
    deployment.start_worker(concurrency=1)
    client = deployment.client()
    ran_in = []
    for _ in range(3):
        job = submit(client, params={"seconds": 0.1})
        done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=60)
        assert done["status"] == "completed" and done["attempts"] == 1, done
        [run] = client.get(f"/v1/jobs/{job['id']}/attempts").json()
        ran_in.append(run["worker"].rsplit(":", 1)[1])  # host:worker pid:pool pid
    assert len(set(ran_in)) == 3, ran_in


def test_killed_pool_process_job_runs_again_at_once(stack: Stack) -> None:
    client = stack.client()
    job = submit(client, params={"seconds": 4, "ticks": 40})
    wait_for_status(client, job["id"], {"running"})
    [attempt] = client.get(f"/v1/jobs/{job['id']}/attempts").json()
    os.kill(int(attempt["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    # Celery requeues the message; the next process sees the holder is dead and takes
    # the job over without waiting for its lease (60 s) to lapse.
    done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=30)
    assert done["status"] == "completed" and done["attempts"] == 2
    lost, completed = client.get(f"/v1/jobs/{job['id']}/attempts").json()
    assert (lost["outcome"], completed["outcome"]) == ("lost", "completed")
    assert lost["error"]["code"] == "worker_lost" and lost["error"]["retryable"]
    assert "worker process running it died" in lost["error"]["message"], lost
