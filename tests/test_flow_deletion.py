"""Deleting a flow's jobs deletes what the flow keeps of them, end to end: the HTTP API,
a real worker, Redis, and SQLite or PostgreSQL.

A flow's event stream interleaves every stage's events; ``DELETE /v1/jobs/{id}`` of a
stage takes that stage's out of it, and the flow itself (row and stream) goes with its
last stage, whether the owner or retention deleted it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis
from conftest import Stack, wait_for_status, wait_until
from sqlalchemy import select
from test_cleanup import cleanup as run_cleanup
from test_flows import post_flow, read_events, wait_for_flow

from longplay import keys, redis_client
from longplay.jobs import events, flow_events
from longplay.jobs.hooks import Announcement
from longplay.settings import get_settings
from longplay.store.db import session_scope
from longplay.store.models import Flow, Job, new_id

RETENTION = 3.0


def stream_of(stack: Stack, flow_or_job_id: str) -> list[dict[str, Any]]:
    """What the Redis stream of a flow (or job) holds, read directly."""
    client = redis.Redis.from_url(stack.redis_url)
    entries: Any = client.xrange(keys.events_stream(flow_or_job_id))
    return [json.loads(fields[b"data"]) for _, fields in entries]


def stream_exists(stack: Stack, flow_or_job_id: str) -> bool:
    return bool(redis.Redis.from_url(stack.redis_url).exists(keys.events_stream(flow_or_job_id)))


def entry_id(event: dict[str, Any]) -> tuple[int, int]:
    ms, seq = event["id"].split("-")
    return int(ms), int(seq)


def two_stage_flow(client: httpx.Client) -> tuple[dict[str, Any], str, str]:
    """A flow of two short stages, the second reading the first's output, ended."""
    flow = post_flow(
        client,
        {
            "first": {"kind": "sleep", "params": {"seconds": 0.3, "ticks": 3, "text": "one"}},
            "second": {
                "kind": "sleep",
                "inputs": [{"stage": "first", "suffix": ".txt"}],
                "params": {"seconds": 0.3, "ticks": 3},
            },
        },
    )
    done = wait_for_flow(client, flow["id"], timeout=60)
    assert done["status"] == "completed", done
    return done, done["stages"]["first"]["id"], done["stages"]["second"]["id"]


@pytest.fixture
def in_process(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process talks to the stack's store and Redis, as one of its workers does."""
    for name, value in stack.env.items():
        if name.startswith("LONGPLAY_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    monkeypatch.setattr(redis_client, "_client", None)
    try:
        yield
    finally:
        get_settings.cache_clear()


def test_a_stage_whose_outputs_a_later_stage_reads_is_kept_until_that_one_ends(
    stack: Stack,
) -> None:
    client = stack.client()
    flow = post_flow(
        client,
        {
            "a": {"kind": "sleep", "params": {"seconds": 0, "text": "from a"}},
            "gate": {"kind": "sleep", "params": {"seconds": 3, "ticks": 3}},
            "b": {
                "kind": "sleep",
                "inputs": [{"stage": "a", "output": "result.txt"}],
                "after": ["gate"],
            },
        },
    )
    a, b = flow["stages"]["a"]["id"], flow["stages"]["b"]["id"]
    wait_for_status(client, a, {"completed"})
    refused = client.delete(f"/v1/jobs/{a}")
    assert refused.status_code == 409, refused.text
    assert f"job {b} reads this job's outputs" in refused.json()["error"]["message"]
    wait_for_status(client, b, {"completed"})
    assert client.delete(f"/v1/jobs/{a}").status_code == 204


def test_deleting_a_stage_removes_exactly_its_events_from_the_flow(stack: Stack) -> None:
    client = stack.client("della")
    flow, first, second = two_stage_flow(client)
    before = read_events(client, flow["id"])
    of_first = [e for e in before if e["data"].get("job_id") == first]
    kept = [e for e in before if e["data"].get("job_id") != first]
    assert {e["data"]["type"] for e in of_first} >= {"queued", "running", "completed"}
    assert [e["data"]["stage"] for e in of_first] == ["first"] * len(of_first)
    assert any(e["data"].get("job_id") == second for e in kept)
    assert kept[-1]["data"]["type"] == "flow_ended"

    assert client.delete(f"/v1/jobs/{first}").status_code == 204

    after = read_events(client, flow["id"])
    assert after == kept, "the other stage's events and the end stay, with their ids"
    assert not [e for e in stream_of(stack, flow["id"]) if e.get("job_id") == first]
    assert not [e for e in stream_of(stack, flow["id"]) if e.get("stage") == "first"]
    # Resuming still works: after a kept event, and after one that went.
    assert read_events(client, flow["id"], kept[0]["id"]) == kept[1:]
    assert read_events(client, flow["id"], of_first[0]["id"]) == [
        e for e in kept if entry_id(e) > entry_id(of_first[0])
    ]
    shown = client.get(f"/v1/flows/{flow['id']}").json()
    assert list(shown["stages"]) == ["second"]
    assert shown["stages"]["second"]["id"] == second


def test_a_failed_flow_stays_failed_when_its_failed_stage_is_deleted(stack: Stack) -> None:
    """Its stream's ``flow_ended`` and its webhook said ``failed``: deleting the stage
    that failed must not turn it into a completed flow."""
    client = stack.client("della")
    flow = post_flow(
        client,
        {
            "bad": {"kind": "sleep", "params": {"seconds": 0.1, "fail": "permanent"}},
            "good": {"kind": "sleep", "params": {"seconds": 0.1}},
        },
    )
    failed = wait_for_flow(client, flow["id"], timeout=60)
    assert failed["status"] == "failed", failed
    assert failed["stages"]["good"]["status"] == "completed"
    ends = [stage["finished_at"] for stage in failed["stages"].values()]
    assert failed["finished_at"] == max(ends), "a flow ends when its last stage does"

    assert client.delete(f"/v1/jobs/{failed['stages']['bad']['id']}").status_code == 204

    shown = client.get(f"/v1/flows/{flow['id']}").json()
    assert list(shown["stages"]) == ["good"]
    assert shown["status"] == "failed", "as its end announced"
    assert shown["finished_at"] == failed["finished_at"]
    assert read_events(client, flow["id"])[-1]["data"]["status"] == "failed"


def test_deleting_the_last_stage_deletes_the_flow(stack: Stack) -> None:
    client = stack.client("della")
    flow, first, second = two_stage_flow(client)
    assert stream_exists(stack, flow["id"])

    assert client.delete(f"/v1/jobs/{second}").status_code == 204
    assert client.get(f"/v1/flows/{flow['id']}").status_code == 200, "one stage is left"
    assert client.delete(f"/v1/jobs/{first}").status_code == 204

    gone = client.get(f"/v1/flows/{flow['id']}")
    assert gone.status_code == 404, gone.text
    assert gone.json()["error"]["code"] == "not_found"
    assert client.get(f"/v1/flows/{flow['id']}/events").status_code == 404
    assert client.post(f"/v1/flows/{flow['id']}/cancel").status_code == 404
    assert not stream_exists(stack, flow["id"])
    with session_scope(stack.database_url) as session:
        assert session.get(Flow, flow["id"]) is None


def test_an_event_sent_late_does_not_bring_a_deleted_stage_back(
    stack: Stack, in_process: None
) -> None:
    """A job's ``completed`` is sent after the change that completed it commits: a
    delete that comes in between reads the streams before the event is there. The late
    event must not write the deleted job into its stream or its flow's again."""
    client = stack.client("della")
    flow, first, second = two_stage_flow(client)
    assert client.delete(f"/v1/jobs/{first}").status_code == 204

    late = Announcement("completed", first, {"status": "completed", "progress": 100.0})
    pipe = redis_client.get_redis().pipeline(transaction=False)
    events.send(pipe, late)
    pipe.execute()
    event = {"type": "completed", "job_id": first, "at": datetime.now(UTC).isoformat()}
    flow_events._append(flow["id"], {**event, "stage": "first"})
    assert not stream_exists(stack, first), "the job's own stream stays deleted"
    assert not [e for e in stream_of(stack, flow["id"]) if e.get("job_id") == first]
    assert stream_of(stack, flow["id"])[-1]["type"] == "flow_ended"

    assert client.delete(f"/v1/jobs/{second}").status_code == 204
    assert not stream_exists(stack, flow["id"])
    flow_events._append(flow["id"], {**event, "job_id": second, "stage": "second"})
    flow_events._append(flow["id"], {"type": "flow_ended", "job_id": None, "status": "x"})
    assert not stream_exists(stack, flow["id"]), "the deleted flow's stream stays deleted"


def cleanup(stack: Stack, *args: str) -> dict[str, Any]:
    """Run ``longplay cleanup`` once, with finished jobs kept ``RETENTION`` seconds."""
    return run_cleanup(
        stack, *args, job_retention=f"{RETENTION}s", result_retention=0, upload_retention=0
    )


def test_retention_deletes_a_flow_with_its_last_jobs(make_stack) -> None:  # type: ignore[no-untyped-def]
    deployment: Stack = make_stack()
    deployment.start_api()
    deployment.start_worker(concurrency=2)
    client = deployment.client("rhea")
    old, first, second = two_stage_flow(client)
    # A flow that runs on is kept, though a stage of it ended long enough ago.
    young = post_flow(
        client,
        {
            "quick": {"kind": "sleep", "params": {"seconds": 0.1}},
            "slow": {"kind": "sleep", "params": {"seconds": 60, "ticks": 60}},
        },
    )
    quick, slow = young["stages"]["quick"]["id"], young["stages"]["slow"]["id"]
    wait_until(lambda: client.get(f"/v1/jobs/{quick}").json()["status"] == "completed")
    wait_until(lambda: client.get(f"/v1/jobs/{slow}").json()["status"] == "running")
    assert [e for e in stream_of(deployment, young["id"]) if e.get("job_id") == quick]
    # A flow an earlier delete left with no job (as deletes did before they took the
    # flow with its last job).
    with session_scope(deployment.database_url) as session:
        owner_id = session.scalar(select(Job.owner_id).where(Job.id == first))
        empty = new_id("flow")
        session.add(Flow(id=empty, owner_id=owner_id))
    assert client.get(f"/v1/flows/{empty}").status_code == 404, "a flow of no job is none"
    time.sleep(RETENTION + 0.5)

    dry = cleanup(deployment, "--dry-run")
    assert (dry["jobs"], dry["flows"]) == (3, 2)
    assert client.get(f"/v1/flows/{old['id']}").status_code == 200

    real = cleanup(deployment)
    assert (real["jobs"], real["flows"]) == (3, 2)
    for flow_id in (old["id"], empty):
        assert client.get(f"/v1/flows/{flow_id}").status_code == 404
        assert not stream_exists(deployment, flow_id)
    for job_id in (first, second, quick):
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    with session_scope(deployment.database_url) as session:
        assert session.get(Flow, old["id"]) is None and session.get(Flow, empty) is None
    kept = client.get(f"/v1/flows/{young['id']}")
    assert kept.status_code == 200 and list(kept.json()["stages"]) == ["slow"]
    left = stream_of(deployment, young["id"])
    assert left and not [e for e in left if e.get("job_id") == quick or e["stage"] == "quick"]
    assert cleanup(deployment)["flows"] == 0
    client.post(f"/v1/flows/{young['id']}/cancel")
