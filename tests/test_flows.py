"""Jobs that wait for other jobs and read their outputs, and flows of them, end to end:
the HTTP API, a real worker, Redis, and SQLite or PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from conftest import Stack, submit, wait_for_status, wait_until
from sqlalchemy import select

from longplay import Client, keys, redis_client
from longplay.api.routes.jobs import present_page
from longplay.engines import get_synthesizer
from longplay.jobs import flow_events
from longplay.jobs.unit import unit_of_work
from longplay.media import AudioEncoder
from longplay.settings import get_settings
from longplay.store.db import session_scope
from longplay.store.models import Flow, Job, Owner, utcnow

SPEECH = "The library opens early in the morning. Children borrow books every week."
ENDED = {"completed", "failed", "cancelled", "expired"}


class Receiver:
    """A webhook receiver on a local port; records each POST's JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received.append(json.loads(body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.server.shutdown()
    made.server.server_close()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few seconds of speech, as a WAV file."""
    said = get_synthesizer().synthesize(SPEECH)
    path = tmp_path_factory.mktemp("speech") / "talk.wav"
    with AudioEncoder(path, format="wav", sample_rate=said.sample_rate, channels=1) as encoder:
        encoder.write(said.samples.astype(np.float32)[:, None])
    return path


def post_flow(client: httpx.Client, stages: dict[str, Any], **more: Any) -> dict[str, Any]:
    response = client.post("/v1/flows", json={"stages": stages, **more})
    assert response.status_code == 202, response.text
    return dict(response.json())


def wait_for_flow(client: httpx.Client, flow_id: str, *, timeout: float = 120) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        flow = client.get(f"/v1/flows/{flow_id}").json()
        return flow if flow["status"] != "running" else None

    return dict(wait_until(ended, timeout=timeout, every=0.2))


def read_events(client: httpx.Client, flow_id: str, last_id: str | None = None) -> list[dict]:
    """A flow's SSE stream to its end: each event's SSE id and data."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with client.stream("GET", f"/v1/flows/{flow_id}/events", headers=headers, timeout=60) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("id:"):
                current["id"] = line[3:].strip()
            elif line.startswith("data:"):
                current["data"] = json.loads(line[5:])
            elif not line and current:
                events.append(current)
                current = {}
    return events


def outputs(job: dict[str, Any]) -> list[str]:
    return [o["name"] for o in job["outputs"]]


def test_a_transcript_flows_into_two_translations(stack: Stack, speech: Path) -> None:
    """transcribe → (translate its JSON, translate its subtitles). The flow
    transcribe → (summarize, translate) of a said meeting is in ``test_summarize``."""
    client = stack.client()
    upload = client.post("/v1/artifacts", files={"file": ("talk.wav", speech.read_bytes())})
    assert upload.status_code == 201, upload.text
    flow = post_flow(
        client,
        {
            "t": {"kind": "transcribe", "inputs": [upload.json()["id"]]},
            "fr": {
                "kind": "translate",
                "inputs": [{"stage": "t", "suffix": ".json"}],
                "params": {"target_language": "fr"},
            },
            "es": {
                "kind": "translate",
                "inputs": [{"stage": "t", "output": "talk.srt"}],
                "params": {"target_language": "es"},
            },
        },
    )
    t, fr, es = (flow["stages"][name] for name in ("t", "fr", "es"))
    # The first stage may have been handed over already as the answer was made.
    assert flow["status"] == "running" and t["status"] in {"queued", "running"}
    assert fr["status"] == es["status"] == "waiting"
    assert fr["waiting_for"] == es["waiting_for"] == [t["id"]]
    assert fr["inputs"] == [{"job": t["id"], "suffix": ".json", "output": None}]
    assert {fr["flow_id"], es["flow_id"]} == {flow["id"]} and es["stage"] == "es"

    done = wait_for_flow(client, flow["id"])

    assert done["status"] == "completed", done
    assert done["progress"] == 100.0 and done["finished_at"]
    stages = done["stages"]
    assert outputs(stages["t"]) == ["talk.json", "talk.txt", "talk.srt", "talk.vtt"]
    # Each translation read the file its stage named: the JSON transcript, the subtitles.
    made = {name: {n.rsplit(".", 1)[1] for n in outputs(stages[name])} for name in ("fr", "es")}
    assert "json" in made["fr"] and "srt" not in made["fr"], made
    assert "srt" in made["es"] and "json" not in made["es"], made
    [srt] = [o for o in stages["es"]["outputs"] if o["name"].endswith(".srt")]
    subtitles = client.get(srt["links"]["content"]).text
    assert subtitles.count("-->") == client.get(
        stages["t"]["outputs"][2]["links"]["content"]
    ).text.count("-->")

    events = read_events(client, flow["id"])
    kinds = [(e["data"].get("stage"), e["data"]["type"]) for e in events]
    for stage in ("t", "fr", "es"):
        assert (stage, "completed") in kinds, kinds
    assert ("fr", "queued") in kinds and kinds.index(("t", "completed")) < kinds.index(
        ("fr", "queued")
    )
    assert events[-1]["data"]["type"] == "flow_ended"
    assert events[-1]["data"]["status"] == "completed"
    middle = len(events) // 2
    assert read_events(client, flow["id"], events[middle]["id"]) == events[middle + 1 :]
    ended = client.get(
        f"/v1/flows/{flow['id']}/events", headers={"Last-Event-ID": events[-1]["id"]}
    )
    assert ended.status_code == 204 and ended.content == b"", "resumed after flow_ended"


def test_a_flow_whose_stream_expired_still_ends_its_followers_once(stack: Stack) -> None:
    """Its stream gone (expired after a week, or lost), an ended flow's stream was an
    empty 200: a browser's EventSource reconnected every few seconds for ever. It now
    sends the flow's end from the store, with an id that resuming after is a 204."""
    client = stack.client()
    flow = post_flow(client, {"only": {"kind": "sleep", "params": {"seconds": 0}}})
    wait_for_flow(client, flow["id"])
    redis.Redis.from_url(stack.redis_url).delete(keys.events_stream(flow["id"]))
    [end] = read_events(client, flow["id"])
    assert end["data"]["type"] == "flow_ended", end
    assert end["data"]["status"] == "completed" and end["data"]["progress"] == 100
    ended = client.get(f"/v1/flows/{flow['id']}/events", headers={"Last-Event-ID": end["id"]})
    assert ended.status_code == 204 and ended.content == b""


def test_a_failing_stage_cancels_its_dependents_not_its_siblings(
    stack: Stack, receiver: Receiver
) -> None:
    client = stack.client()
    flow = post_flow(
        client,
        {
            "bad": {"kind": "sleep", "params": {"seconds": 0.2, "ticks": 2, "fail": "permanent"}},
            "next": {"kind": "sleep", "after": ["bad"]},
            "last": {"kind": "sleep", "inputs": [{"stage": "next", "suffix": ".txt"}]},
            "sibling": {"kind": "sleep", "params": {"seconds": 1.5, "ticks": 3}},
        },
        callback_url=receiver.url,
    )

    done = wait_for_flow(client, flow["id"], timeout=60)

    stages = done["stages"]
    assert done["status"] == "failed"
    assert stages["bad"]["status"] == "failed"
    assert stages["sibling"]["status"] == "completed", "a sibling runs on"
    for name, upstream in (("next", "bad"), ("last", "next")):
        job = stages[name]
        assert job["status"] == "cancelled" and job["attempts"] == 0
        assert job["error"]["code"] == "upstream_failed"
        assert stages[upstream]["id"] in job["error"]["message"]
    # Its followers hear the dependents' cancels before the flow's end, where they stop.
    told = [e["data"] for e in read_events(client, flow["id"])]
    assert told[-1]["type"] == "flow_ended", told
    assert {e["stage"] for e in told if e["type"] == "cancelled"} == {"next", "last"}, told
    wait_until(lambda: [b for b in receiver.bodies if b["data"]["id"] == flow["id"]], timeout=30)
    time.sleep(1.0)  # a second webhook would come now
    sent = [b for b in receiver.bodies if b["data"]["id"] == flow["id"]]
    assert [b["type"] for b in sent] == ["flow.failed"]
    assert sent[0]["data"]["stages"]["next"]["error"]["code"] == "upstream_failed"

    # The dependent stays cancelled when its upstream job is retried, and cannot be
    # retried itself while that job has not completed.
    refused = client.post(f"/v1/jobs/{stages['next']['id']}/retry")
    assert refused.status_code == 409 and stages["bad"]["id"] in refused.json()["error"]["message"]
    assert client.post(f"/v1/jobs/{stages['bad']['id']}/retry").status_code == 200
    wait_for_status(client, stages["bad"]["id"], {"failed"})
    assert client.get(f"/v1/jobs/{stages['next']['id']}").json()["status"] == "cancelled"


def test_retrying_a_stage_reopens_an_ended_flow(stack: Stack, receiver: Receiver) -> None:
    client = stack.client("rita")
    flow = post_flow(
        client,
        {
            # Fails its three attempts; a fourth, retried by hand, completes.
            "flaky": {"kind": "flaky", "params": {"failures": 3}},
            "next": {"kind": "sleep", "after": ["flaky"], "params": {"seconds": 0.2}},
        },
        callback_url=receiver.url,
    )
    failed = wait_for_flow(client, flow["id"], timeout=90)
    assert failed["status"] == "failed" and failed["finished_at"]
    first_end = read_events(client, flow["id"])[-1]
    assert first_end["data"]["type"] == "flow_ended"
    assert first_end["data"]["status"] == "failed"
    wait_until(lambda: [b for b in receiver.bodies if b["data"]["id"] == flow["id"]], timeout=30)

    stages = failed["stages"]
    assert client.post(f"/v1/jobs/{stages['flaky']['id']}/retry").status_code == 200
    assert client.post(f"/v1/jobs/{stages['next']['id']}/retry").status_code == 200
    reopened = client.get(f"/v1/flows/{flow['id']}").json()
    assert reopened["status"] == "running" and reopened["finished_at"] is None

    # Followed from its start, or on from the old end, the stream goes on to the new end.
    events = read_events(client, flow["id"])
    ends = [e["data"] for e in events if e["data"]["type"] == "flow_ended"]
    assert [e["status"] for e in ends] == ["completed"]
    resumed = read_events(client, flow["id"], first_end["id"])
    assert resumed[-1] == events[-1]
    done = client.get(f"/v1/flows/{flow['id']}").json()
    assert done["status"] == "completed"
    assert at(done["finished_at"]) > at(failed["finished_at"])
    wait_until(
        lambda: len([b for b in receiver.bodies if b["data"]["id"] == flow["id"]]) > 1, timeout=30
    )
    time.sleep(1.0)  # a third webhook would come now
    sent = [b for b in receiver.bodies if b["data"]["id"] == flow["id"]]
    assert [b["type"] for b in sent] == ["flow.failed", "flow.completed"]
    assert sent[1]["data"]["status"] == "completed"


def test_an_end_written_after_a_retry_reopened_the_flow_is_taken_back(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process that ends a flow writes its ``flow_ended`` after the end commits. A
    retry that reopens the flow in between finds no end in the stream to remove, so the
    late one must remove itself, or a follower stops at it while the flow runs again."""
    client = stack.client("remy")
    failing = {"seconds": 0.1, "fail": "permanent"}
    flow = post_flow(client, {"only": {"kind": "sleep", "params": failing}})
    ended = wait_for_flow(client, flow["id"])
    assert ended["status"] == "failed"
    for name, value in stack.env.items():
        if name.startswith("LONGPLAY_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    monkeypatch.setattr(redis_client, "_client", None)  # this stack's Redis
    try:
        late = flow_events.Ending("failed", 100.0, at(ended["finished_at"]))
        stage = ended["stages"]["only"]["id"]
        # The stage's rerun is long enough for the late end to come while it runs.
        with session_scope(stack.database_url) as session:
            session.get_one(Job, stage).params = {"seconds": 3.0, "ticks": 6}
        assert client.post(f"/v1/jobs/{stage}/retry").status_code == 200
        assert client.get(f"/v1/flows/{flow['id']}").json()["status"] == "running"
        flow_events._announce_end(flow["id"], late, unit_of_work)  # the end, late
    finally:
        get_settings.cache_clear()
    events = read_events(client, flow["id"])
    ends = [e["data"] for e in events if e["data"]["type"] == "flow_ended"]
    assert len(ends) == 1 and events[-1]["data"] == ends[0], "the late end was taken back"
    again = client.get(f"/v1/flows/{flow['id']}").json()
    assert again["status"] == "completed"
    assert at(again["finished_at"]) > at(ended["finished_at"])


def test_after_waits_then_reads_the_outputs(stack: Stack) -> None:
    client = stack.client()
    first = submit(client, params={"seconds": 1.0, "ticks": 4, "text": "first"})
    reader = submit(client, inputs=[{"job": first["id"], "output": "result.txt"}])
    form = client.post(
        "/v1/jobs",
        data={"kind": "sleep", "after": [first["id"]], "params": '{"seconds": 0.1}'},
        files={"file": ("note.txt", b"a note", "text/plain")},
    )
    assert form.status_code == 202, form.text
    missing = submit(client, inputs=[{"job": first["id"], "output": "nope.txt"}])

    for job in (reader, form.json(), missing):
        assert job["status"] == "waiting" and job["waiting_for"] == [first["id"]]
    shown = client.get(f"/v1/jobs/{reader['id']}").json()
    assert shown["status"] == "waiting" and shown["waiting_for"] == [first["id"]]

    assert wait_for_status(client, reader["id"], ENDED)["status"] == "completed"
    assert wait_for_status(client, form.json()["id"], ENDED)["status"] == "completed"
    failed = wait_for_status(client, missing["id"], ENDED)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "input_missing"
    assert "nope.txt" in failed["error"]["message"]
    # A job whose upstream already completed is queued at once.
    late = submit(client, after=[first["id"]])
    assert late["status"] in {"queued", "running"} and late["waiting_for"] == []


def test_only_your_own_existing_jobs_can_be_waited_for(stack: Stack) -> None:
    alice, bob = stack.client(), stack.client("bob")
    theirs = submit(bob, params={"seconds": 0.1})
    for body in (
        {"kind": "sleep", "after": [theirs["id"]]},
        {"kind": "sleep", "inputs": [{"job": theirs["id"], "suffix": ".txt"}]},
        {"kind": "sleep", "after": ["job_doesnotexist"]},
    ):
        refused = alice.post("/v1/jobs", json=body)
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"]["code"] == "not_found"
    their_flow = post_flow(bob, {"a": {"kind": "sleep", "params": {"seconds": 0.1}}})
    for path in ("", "/events"):
        assert alice.get(f"/v1/flows/{their_flow['id']}{path}").status_code == 404
    assert alice.post(f"/v1/flows/{their_flow['id']}/cancel").status_code == 404

    failed = submit(alice, params={"seconds": 0.1, "ticks": 1, "fail": "permanent"})
    wait_for_status(alice, failed["id"], {"failed"})
    refused = alice.post("/v1/jobs", json={"kind": "sleep", "after": [failed["id"]]})
    assert refused.status_code == 409 and failed["id"] in refused.json()["error"]["message"]

    before = alice.get("/v1/jobs", params={"limit": 200}).json()["items"]
    # In a flow, such a refusal names its stage; a stage's name given as a job's id is
    # told how to read that stage's outputs.
    first = {"kind": "sleep", "params": {"seconds": 0}}
    for reads, status, says in (
        ({"job": "job_doesnotexist", "suffix": ".txt"}, 404, "stage 'b': no job"),
        ({"job": failed["id"], "suffix": ".txt"}, 409, "stage 'b': job"),
        ({"job": "a", "suffix": ".txt"}, 404, 'read its outputs with {"stage": "a", ...}'),
    ):
        stages = {"a": first, "b": {"kind": "sleep", "inputs": [reads]}}
        refused = alice.post("/v1/flows", json={"stages": stages})
        assert refused.status_code == status, refused.text
        assert says in refused.json()["error"]["message"], refused.text
    for stages, code in (
        (
            {"a": {"kind": "sleep", "after": ["b"]}, "b": {"kind": "sleep", "after": ["a"]}},
            "flow_cycle",
        ),
        ({"a": {"kind": "sleep", "after": ["nobody"]}}, "invalid_request"),
        ({"a": {"kind": "sleep"}, "b": {"kind": "sleep", "params": {"seconds": -1}}}, "stage 'b'"),
    ):
        refused = alice.post("/v1/flows", json={"stages": stages})
        assert refused.status_code == 422, refused.text
        assert code in (refused.json()["error"]["code"], refused.json()["error"]["message"][:9])
    # Where a stage names a stage it cannot wait for is told at that place.
    for stages, loc in (
        (
            {"a": {"kind": "sleep", "after": ["b"]}, "b": {"kind": "sleep", "after": ["a"]}},
            ["body", "stages", "b", "after", 0],
        ),
        (
            {"a": {"kind": "sleep", "inputs": [{"stage": "zz", "suffix": ".txt"}]}},
            ["body", "stages", "a", "inputs", 0],
        ),
    ):
        placed = alice.post("/v1/flows", json={"stages": stages})
        assert placed.status_code == 422, placed.text
        assert placed.json()["error"]["details"][0]["loc"] == loc, placed.text
    # A stage's bad value is told as /v1/jobs tells it: invalid_params, at its field.
    error = refused.json()["error"]
    assert error["code"] == "invalid_params", error
    assert error["details"][0]["loc"] == ["body", "stages", "b", "params", "seconds"], error
    # A kind's own check says its words, without pydantic's "Value error, " before them.
    stage = {"kind": "convert", "params": {"format": "wav", "bitrate": 128}}
    checked = alice.post("/v1/flows", json={"stages": {"c": stage}}).json()["error"]
    assert checked["details"][0]["message"] == "bitrate applies to mp3 and ogg, not wav", checked
    after = alice.get("/v1/jobs", params={"limit": 200}).json()["items"]
    assert len(after) == len(before), "a refused flow stores none of its jobs"


def test_an_answer_about_a_flow_agrees_with_itself(stack: Stack) -> None:
    """A stage read as running is in its dependent's ``waiting_for``, though it completed
    between the reads that make one answer."""
    client = stack.client("reader")
    flow = post_flow(
        client,
        {
            "first": {"kind": "sleep", "params": {"seconds": 1, "ticks": 10}},
            "then": {"kind": "sleep", "after": ["first"]},
        },
    )
    first = flow["stages"]["first"]["id"]
    wait_for_status(client, first, {"running"})
    with session_scope(stack.database_url) as session:
        stages = list(session.scalars(select(Job).where(Job.flow_id == flow["id"])))
        assert {job.status for job in stages} == {"running", "waiting"}
        wait_for_status(client, first, {"completed"})
        shown = {job.stage: job for job in present_page(session, stages)}
    assert shown["first"].status == "running"
    assert shown["then"].status == "waiting" and shown["then"].waiting_for == [first]


def test_a_mistyped_input_is_told_against_what_it_looks_like(stack: Stack) -> None:
    """Not "should be a valid string" first: an input is judged by its shape alone."""
    client = stack.client("typist")
    for path, body, loc, says in (
        (
            "/v1/jobs",
            {"kind": "sleep", "inputs": [{"job": "job_x", "sufix": ".txt"}]},
            ["body", "inputs", 0, "job", "sufix"],
            "Extra inputs are not permitted",
        ),
        (
            "/v1/flows",
            {"stages": {"s": {"kind": "sleep", "inputs": [{"stage": "t", "sufix": ".txt"}]}}},
            ["body", "stages", "s", "inputs", 0, "stage", "sufix"],
            "Extra inputs are not permitted",
        ),
        (
            "/v1/flows",
            {"stages": {"s": {"kind": "sleep", "inputs": [{"stg": "t"}]}}},
            ["body", "stages", "s", "inputs", 0],
            "or another stage's",
        ),
    ):
        refused = client.post(path, json=body)
        assert refused.status_code == 422, refused.text
        [detail] = refused.json()["error"]["details"]
        assert detail["loc"] == loc and says in detail["message"], detail
    # A name the client made up is told cut, not echoed whole in the loc and the message.
    long = "n" * 10_000
    refused = client.post("/v1/flows", json={"stages": {long: {"kind": "sleep"}}})
    assert refused.status_code == 422 and len(refused.content) < 2_000, refused.text[:300]
    assert refused.json()["error"]["details"][0]["loc"][2] == "n" * 99 + "…"


def test_a_stage_that_reads_another_stages_output_is_checked_at_submit(stack: Stack) -> None:
    """Its params by its kind's own check, and its input's type as far as the name asked
    for tells it, though the file is made only later."""
    client = stack.client("stage-checker")
    before = client.get("/v1/jobs").json()["items"]
    first = {"kind": "sleep", "params": {"seconds": 0}}
    for stage, says, field in (
        (
            {
                "kind": "dub",
                "inputs": [{"stage": "a", "suffix": ".mp3"}],
                "params": {"target_language": "de", "voice": "nobody"},
            },
            "no voice 'nobody'",
            ["body", "stages", "b", "params", "voice"],
        ),
        (
            {
                "kind": "translate",
                "inputs": [{"stage": "a", "suffix": ".txt"}],
                "params": {"target_language": "de", "text": "Hello."},
            },
            "give either text or one file to translate, not both",
            ["body", "stages", "b", "params", "text"],
        ),
        (
            {"kind": "transcribe", "inputs": [{"stage": "a", "suffix": ".json"}]},
            "transcribe takes audio/*, video/* inputs; *.json of stage 'a' is application/json",
            ["body", "stages", "b", "inputs", 0],
        ),
    ):
        refused = client.post("/v1/flows", json={"stages": {"a": first, "b": stage}})
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["message"].startswith("stage 'b': ") and says in error["message"]
        assert error["details"][0]["loc"] == field
    assert "job_" not in error["message"] + error["details"][0]["message"], error
    assert client.get("/v1/jobs").json()["items"] == before, "nothing is stored"


def test_cancelling_a_flow_cancels_what_has_not_ended(stack: Stack) -> None:
    client = stack.client()
    flow = post_flow(
        client,
        {
            "quick": {"kind": "sleep", "params": {"seconds": 0.1, "ticks": 1}},
            "slow": {"kind": "sleep", "params": {"seconds": 30, "ticks": 300}, "after": ["quick"]},
            "then": {"kind": "sleep", "after": ["slow"]},
            "also": {"kind": "sleep", "after": ["slow"]},
        },
    )
    wait_for_status(client, flow["stages"]["slow"]["id"], {"running"})

    cancelled = client.post(f"/v1/flows/{flow['id']}/cancel")

    assert cancelled.status_code == 200, cancelled.text
    stages = cancelled.json()["stages"]
    assert stages["quick"]["status"] == "completed"
    assert {stages[name]["status"] for name in ("slow", "then", "also")} == {"cancelled"}
    assert stages["then"]["error"] is None, "cancelled by its owner, not by its upstream"
    assert wait_for_flow(client, flow["id"])["status"] == "cancelled"
    # Its followers hear every stage's cancel before the flow's end, where they stop.
    told = [e["data"] for e in read_events(client, flow["id"])]
    assert told[-1]["type"] == "flow_ended", told
    ended = {e["stage"] for e in told if e["type"] == "cancelled"}
    assert ended == {"slow", "then", "also"}, told


def test_the_cli_follows_a_flow_and_saves_each_stage(stack: Stack, tmp_path: Path) -> None:
    flow_file = tmp_path / "flow.json"
    flow_file.write_text(
        json.dumps(
            {
                "stages": {
                    "first": {"kind": "sleep", "params": {"seconds": 0.3, "text": "one"}},
                    "second": {
                        "kind": "sleep",
                        "inputs": [{"stage": "first", "output": "result.txt"}],
                        "params": {"seconds": 0.3, "text": "two"},
                    },
                }
            }
        )
    )
    out = tmp_path / "out"
    env = {**stack.env, "LONGPLAY_API_URL": stack.api_url, "LONGPLAY_API_KEY": stack.key("flora")}
    command = [
        sys.executable,
        "-m",
        "longplay",
        "flow",
        str(flow_file),
        "--wait",
        "--out",
        str(out),
    ]

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "submitted flow flow_" in done.stdout
    assert (out / "first" / "result.txt").read_text() == "one"
    assert (out / "second" / "result.txt").read_text() == "two"
    broken = flow_file.with_name("broken.json")
    broken.write_text('{"stages": {"a": {"kind": "sleep", "after": ["a"]}}}')
    refused = subprocess.run(
        [*command[:4], str(broken)], env=env, capture_output=True, text=True, timeout=60
    )
    assert (
        refused.returncode == 1 and "circle" in refused.stderr and "Traceback" not in refused.stderr
    )
    # A stage that did not complete is said with its reason, the jobs it names as stages.
    failing = flow_file.with_name("failing.json")
    bad = {"kind": "sleep", "params": {"seconds": 0.1, "ticks": 1, "fail": "permanent"}}
    failing.write_text(
        json.dumps({"stages": {"bad": bad, "next": {"kind": "sleep", "after": ["bad"]}}})
    )
    ended = subprocess.run(
        [*command[:4], str(failing), "--wait", "--out", str(tmp_path / "failed")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = " ".join(ended.stderr.split())
    assert ended.returncode == 1, ended.stdout + ended.stderr
    assert "bad failed: the test asked this job to fail" in said, said
    assert "next cancelled: stage 'bad'" in said and "job_" not in said.split("next")[-1], said


def end_behind_the_hooks(deployment: Stack, job_id: str, status: str) -> None:
    """End a job the way a process dying right after its commit leaves it: the row says
    it ended, and nothing after the commit (waking its dependents, ending its flow) ran."""
    with session_scope(deployment.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "queued"
        job.status, job.finished_at = status, utcnow()
        if status == "completed":
            job.progress = 1.0


def flow_finished_at(deployment: Stack, flow_id: str) -> datetime | None:
    """When the store recorded the flow's end (the API shows an end being recorded too)."""
    with session_scope(deployment.database_url) as session:
        return session.scalar(select(Flow.finished_at).where(Flow.id == flow_id))


def test_beat_settles_what_a_lost_wake_up_left(stack: Stack, receiver: Receiver) -> None:
    client = stack.client("lost")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    done_up = submit(client, run_at=later)  # held: no worker takes it before the test ends it
    failed_up = submit(client, run_at=later)
    runs = submit(client, after=[done_up["id"]], params={"seconds": 0.1})
    stops = submit(client, after=[failed_up["id"]])
    flow = post_flow(
        client, {"solo": {"kind": "sleep", "run_at": later}}, callback_url=receiver.url
    )
    end_behind_the_hooks(stack, done_up["id"], "completed")
    end_behind_the_hooks(stack, failed_up["id"], "failed")
    end_behind_the_hooks(stack, flow["stages"]["solo"]["id"], "cancelled")
    time.sleep(1.0)  # no wake-up comes by itself: only beat's sweep can move them
    assert client.get(f"/v1/jobs/{runs['id']}").json()["status"] == "waiting"
    assert flow_finished_at(stack, flow["id"]) is None

    # The sweep runs at the reaper's pace; this beat only for this test.
    beat = [sys.executable, "-m", "longplay", "beat"]
    stack.spawn("beat", beat, {**stack.env, "LONGPLAY_REAPER_INTERVAL": "0.5"})
    try:
        assert wait_for_status(client, runs["id"], ENDED, timeout=30)["status"] == "completed"
        stopped = wait_for_status(client, stops["id"], ENDED, timeout=30)
        assert stopped["status"] == "cancelled"
        assert stopped["error"]["code"] == "upstream_failed"
        assert failed_up["id"] in stopped["error"]["message"]
        recorded = wait_until(lambda: flow_finished_at(stack, flow["id"]), timeout=30)
        assert client.get(f"/v1/flows/{flow['id']}").json()["status"] == "cancelled"
        hooked = wait_until(
            lambda: [b for b in receiver.bodies if b["data"]["id"] == flow["id"]], timeout=30
        )
        time.sleep(1.5)  # more sweeps: none ends the flow again
    finally:
        stack.stop("beat", timeout=10)
    assert [b["type"] for b in hooked] == ["flow.cancelled"]
    assert [b for b in receiver.bodies if b["data"]["id"] == flow["id"]] == hooked
    assert flow_finished_at(stack, flow["id"]) == recorded


def set_owner(deployment: Stack, name: str, **limits: Any) -> None:
    """Set an owner's limits in the store, as ``longplay owners set`` does."""
    deployment.key(name)
    with session_scope(deployment.database_url) as session:
        owner = session.scalar(select(Owner).where(Owner.name == name))
        assert owner is not None
        for field, value in limits.items():
            setattr(owner, field, value)


def test_waiting_jobs_count_toward_the_queued_cap(stack: Stack) -> None:
    set_owner(stack, "parker", max_queued=3)
    client = stack.client("parker")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    upstream = submit(client, run_at=later)
    waiting = [submit(client, after=[upstream["id"]]) for _ in range(2)]
    assert [j["status"] for j in waiting] == ["waiting", "waiting"]

    refused = client.post("/v1/jobs", json={"kind": "sleep", "after": [upstream["id"]]})
    assert refused.status_code == 429, refused.text
    assert "queued or waiting" in refused.json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    flow = client.post("/v1/flows", json={"stages": {"one": {"kind": "sleep"}}})
    assert flow.status_code == 429, flow.text
    # A flow is counted whole, its own stages not taken for jobs already there; one
    # larger than the cap can never be taken, which waiting will not mend.
    two = {"one": {"kind": "sleep"}, "two": {"kind": "sleep"}}
    flow = client.post("/v1/flows", json={"stages": two})
    assert flow.status_code == 429, flow.text
    message = flow.json()["error"]["message"]
    assert "this flow's 2 stages need room for 2 jobs" in message, message
    assert "you have 3 of the 3 allowed" in message, message
    four = {name: {"kind": "sleep"} for name in ("a", "b", "c", "d")}
    flow = client.post("/v1/flows", json={"stages": four})
    assert flow.status_code == 422, flow.text
    refused = flow.json()["error"]
    assert refused["code"] == "too_many_stages" and refused["retryable"] is False, refused
    assert "split it into flows of at most 3 stages" in refused["message"], refused
    listed = client.get("/v1/jobs", params={"limit": 50}).json()["items"]
    assert len(listed) == 3, "nothing of a refused submission is stored"

    # Once the upstream job ends, its dependents end too and free the room.
    assert client.post(f"/v1/jobs/{upstream['id']}/cancel").status_code == 200
    for job in waiting:
        assert wait_for_status(client, job["id"], ENDED, timeout=20)["status"] == "cancelled"
    submitted = [submit(client, params={"seconds": 0.1}) for _ in range(3)]
    for job in submitted:
        wait_for_status(client, job["id"], ENDED, timeout=30)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_a_released_stage_takes_its_fair_turn(stack: Stack) -> None:
    """Fairness and priority apply when a waiting job is released: it neither starves
    behind another owner's backlog nor overtakes that owner's higher-priority jobs."""
    busy, flowing = stack.client("busy"), stack.client("flowing")
    backlog = [submit(busy, params={"seconds": 0.8, "ticks": 2}) for _ in range(12)]
    flow = post_flow(
        flowing,
        {
            "a": {"kind": "sleep", "params": {"seconds": 0.2, "ticks": 1}},
            "b": {"kind": "sleep", "params": {"seconds": 0.2, "ticks": 1}, "after": ["a"]},
        },
    )
    b = wait_for_status(flowing, flow["stages"]["b"]["id"], {"completed"}, timeout=30)
    a = flowing.get(f"/v1/jobs/{flow['stages']['a']['id']}").json()
    seen = [busy.get(f"/v1/jobs/{j['id']}").json() for j in backlog]
    before = [j for j in seen if j["started_at"] and at(j["started_at"]) < at(b["started_at"])]
    # Started first: the two running, one handed ahead, and those whose slots freed
    # while b was being released; first come, first served would be all twelve.
    assert len(before) <= 7, f"{len(before)} of the backlog's 12 jobs started before stage b"
    assert at(b["started_at"]) >= at(a["finished_at"])
    for job in backlog:
        busy.post(f"/v1/jobs/{job['id']}/cancel")

    # A released normal job waits for the high-priority jobs queued meanwhile.
    flow = post_flow(
        flowing,
        {
            "a": {"kind": "sleep", "params": {"seconds": 1.2, "ticks": 2}},
            "b": {"kind": "sleep", "params": {"seconds": 0.1, "ticks": 1}, "after": ["a"]},
        },
    )
    wait_for_status(flowing, flow["stages"]["a"]["id"], {"running"})
    urgent = [submit(busy, priority="high", params={"seconds": 0.3, "ticks": 1}) for _ in range(4)]
    b = wait_for_status(flowing, flow["stages"]["b"]["id"], {"completed"}, timeout=30)
    a = flowing.get(f"/v1/jobs/{flow['stages']['a']['id']}").json()
    ran = [wait_for_status(busy, j["id"], {"completed"}, timeout=30) for j in urgent]
    queued_first = [j for j in ran if at(j["created_at"]) < at(a["finished_at"])]
    assert len(queued_first) >= 2, "the high jobs were submitted while a ran"
    assert all(at(j["started_at"]) <= at(b["started_at"]) for j in queued_first), (
        "b overtook a high job queued before it was released"
    )


def test_a_flow_sent_again_with_its_idempotency_key_is_the_same_flow(stack: Stack) -> None:
    """A backend that sends a flow again after a lost answer gets the first one back,
    not a second pipeline; the same key with another flow is refused."""
    client = stack.client("flow-retrier")
    body = {"stages": {"a": {"kind": "sleep", "params": {"seconds": 0}}, "b": {"kind": "sleep"}}}
    key = {"Idempotency-Key": "flow-key-1"}
    first = client.post("/v1/flows", json=body, headers=key)
    assert first.status_code == 202, first.text
    reordered = json.dumps({"stages": {"b": {"kind": "sleep"}, **{"a": body["stages"]["a"]}}})
    again = client.post(
        "/v1/flows", content=reordered, headers={**key, "Content-Type": "application/json"}
    )
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    ids = {name: stage["id"] for name, stage in first.json()["stages"].items()}
    assert {n: st["id"] for n, st in again.json()["stages"].items()} == ids, "the same jobs"
    other = client.post("/v1/flows", json={"stages": {"c": {"kind": "sleep"}}}, headers=key)
    assert other.status_code == 422, other.text
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    jobs = client.get("/v1/jobs", params={"limit": 200}).json()["items"]
    assert len([j for j in jobs if j.get("flow_id") == first.json()["id"]]) == 2
    empty = {"Idempotency-Key": ""}  # names no key: two flows, not a refusal
    ids = {
        client.post("/v1/flows", json=b, headers=empty).json()["id"]
        for b in (body, {"stages": {"e": {"kind": "sleep"}}})
    }
    assert len(ids) == 2
    with Client(stack.api_url, stack.key("flow-retrier")) as sdk:
        made = sdk.submit_flow({"stages": {"d": {"kind": "sleep"}}}, idempotency_key="sdk-1")
        assert (
            sdk.submit_flow({"stages": {"d": {"kind": "sleep"}}}, idempotency_key="sdk-1").id
            == made.id
        )
        assert sdk.submit_flow({"stages": {"d": {"kind": "sleep"}}}).id != made.id
