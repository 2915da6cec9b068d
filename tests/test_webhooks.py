"""Webhooks end to end: a real receiver on a free port, the API, a worker and beat.

The receiver records every request and answers from a script per URL (500, 410,
429 with Retry-After, too slow), so each test sees exactly what a customer's
server would. Signatures are checked with an implementation written here from the
Standard Webhooks spec, not with longplay's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from conftest import Stack, submit, wait_for_status, wait_until

from longplay.http_time import parse_retry_after
from longplay.jobs.webhooks import addresses, delivery, signing
from longplay.store.db import session_scope
from longplay.store.models import WebhookDelivery

# The spec's published test vector (standard-webhooks, libraries/python/tests).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = '{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

PROGRESS_INTERVAL = 1.0
TIMEOUT = 1.0
SECRET_OVERLAP = 3.0


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """A receiver's check, from the spec: any ``v1,`` signature in the header that
    matches HMAC-SHA256(base64decode(secret after whsec_), "id.timestamp.body")."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = headers["webhook-signature"].split(" ")
    return any(
        version == "v1" and hmac.compare_digest(sig, expected)
        for version, _, sig in (o.partition(",") for o in offered)
    )


# -- the receiver ---------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drip: float = 0.0
    """Seconds between header lines, 100 of them: an answer that drags on."""
    endless: bool = False
    """A body that never ends."""


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


class Receiver:
    """Records POSTs to ``/hooks/<name>`` and answers each name's script in turn
    (then 200)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Reply]] = {}
        self._received: dict[str, list[Received]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                name = self.path.rsplit("/", 1)[-1]
                reply = receiver._record(
                    name, {k.lower(): v for k, v in self.headers.items()}, body
                )
                time.sleep(reply.delay)
                try:
                    if reply.drip or reply.endless:
                        self.drag(reply)
                        return
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the sender gave up waiting
                    pass

            def drag(self, reply: Reply) -> None:
                """Answer slowly or without end, until the sender hangs up."""
                self.wfile.write(f"HTTP/1.1 {reply.status} Whatever\r\n".encode())
                for line in range(100 if reply.drip else 0):
                    self.wfile.write(f"x-line-{line}: 1\r\n".encode())
                    self.wfile.flush()
                    time.sleep(reply.drip)
                self.wfile.write(b"\r\n")
                while reply.endless:
                    self.wfile.write(b"x" * 65536)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _record(self, name: str, headers: dict[str, str], body: bytes) -> Reply:
        with self._lock:
            self._received.setdefault(name, []).append(Received(time.monotonic(), headers, body))
            script = self._scripts.get(name) or []
            return script.pop(0) if script else Reply()

    def url(self, *replies: Reply) -> tuple[str, str]:
        """A fresh URL that answers ``replies`` first; returns it and its name."""
        name = uuid.uuid4().hex[:12]
        with self._lock:
            self._scripts[name] = list(replies)
        return f"http://127.0.0.1:{self.port}/hooks/{name}", name

    def received(self, name: str) -> list[Received]:
        with self._lock:
            return list(self._received.get(name, []))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


@pytest.fixture(scope="module")
def hooks_stack(database_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """API, a worker of 2 processes and beat, with short webhook timings."""
    deployment = Stack(tmp_path_factory.mktemp(f"webhooks-{database_kind}"), database_kind)
    deployment.env.update(
        LONGPLAY_WEBHOOK_RETRY_BASE="0.3",
        LONGPLAY_WEBHOOK_TIMEOUT=str(TIMEOUT),
        LONGPLAY_WEBHOOK_MAX_ATTEMPTS="5",
        LONGPLAY_WEBHOOK_PROGRESS_INTERVAL=str(PROGRESS_INTERVAL),
        LONGPLAY_WEBHOOK_SWEEP_INTERVAL="1",
        LONGPLAY_SHUTDOWN_GRACE="1",
        LONGPLAY_WEBHOOK_SECRET_OVERLAP=str(SECRET_OVERLAP),
    )
    try:
        deployment.start_api()
        deployment.start_beat()
        deployment.start_worker()
        yield deployment
    finally:
        deployment.close()


def deliveries(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/jobs/{job_id}/webhooks")
    assert response.status_code == 200, response.text
    return list(response.json())


def settled(client: httpx.Client, job_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The job's deliveries once ``count`` of them exist and none is pending."""

    def check() -> list[dict[str, Any]] | None:
        rows = deliveries(client, job_id)
        done = len(rows) >= count and all(r["status"] not in ("pending", "sending") for r in rows)
        return rows if done else None

    return list(wait_until(check, timeout=30, every=0.2))


# -- tests ----------------------------------------------------------------------------


def test_signing_matches_the_spec_test_vector() -> None:
    body = VECTOR_BODY.encode()
    assert signing.sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, body) == VECTOR_SIGNATURE
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    assert verify(VECTOR_SECRET, headers, body)
    assert not verify(VECTOR_SECRET, headers, body + b" ")
    made = signing.headers_for(VECTOR_SECRET, VECTOR_ID, body, timestamp=VECTOR_TIMESTAMP)
    assert made["webhook-signature"] == VECTOR_SIGNATURE


def test_retry_after_and_backoff_rules() -> None:
    assert parse_retry_after("7") == 7.0
    when = datetime.now(UTC) + timedelta(seconds=30)
    from_date = parse_retry_after(when.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert from_date is not None and 25 <= from_date <= 31
    assert parse_retry_after("soon") is None
    assert delivery.Answer(status_code=410).final
    assert delivery.Answer(status_code=302).final
    assert not delivery.Answer(status_code=429).final
    assert not delivery.Answer(status_code=408).final
    assert not delivery.Answer(status_code=503).final
    assert not delivery.Answer(error="ConnectError").final
    assert delivery.Answer(error="not sent", refused=True).final


def test_a_message_through_the_environments_proxy_is_held_to_the_timeout_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through ``HTTP_PROXY`` (an HTTP proxy of this machine here), a message goes to
    the proxy, which decides where it may go; an answer that drags on there is cut at
    the attempt's timeout as it is on a direct one."""
    asked: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            asked.append(self.path)
            if self.path.endswith("/slow"):
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                for line in range(20):
                    self.wfile.write(f"x-line-{line}: 1\r\n".encode())
                    self.wfile.flush()
                    time.sleep(0.25)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        answer = delivery.post("http://hooks.example/fast", b"{}", {}, timeout=2)
        assert answer.accepted and asked == ["http://hooks.example/fast"], (answer, asked)
        began = time.monotonic()
        slow = delivery.post("http://hooks.example/slow", b"{}", {}, timeout=1)
        assert not slow.accepted and "ReadTimeout" in (slow.error or ""), slow
        assert time.monotonic() - began < 2.5, "cut at the timeout, not after 5 s of lines"
    finally:
        server.shutdown()
        server.server_close()


def test_a_name_that_resolves_to_this_machine_is_not_sent_to_unless_allowed(
    receiver: Receiver,
) -> None:
    """The check is on the address connected to, after resolving: ``localhost`` here is
    a name the sender resolves itself, as it would a public-looking one."""
    url, name = receiver.url()
    named = url.replace("127.0.0.1", "localhost")
    refused = delivery.post(named, b"{}", {}, timeout=5)
    assert refused.refused and refused.final and refused.status_code is None
    assert refused.error is not None
    assert "loopback" in refused.error and "LONGPLAY_WEBHOOK_ALLOWED_NETWORKS" in refused.error
    mapped = delivery.post(url.replace("127.0.0.1", "[::ffff:127.0.0.1]"), b"{}", {}, timeout=5)
    assert mapped.refused, "an IPv4 address written as IPv6 is the same address"
    assert receiver.received(name) == []
    allowed = [ipaddress.ip_network("127.0.0.0/8")]
    sent = delivery.post(named, b"{}", {}, timeout=5, allowed=allowed)
    assert sent.accepted, sent
    assert len(receiver.received(name)) == 1
    said = addresses.refusal("https://app.localhost/x", ())
    assert said is not None and said.startswith("app.localhost is 127.0.0.1, a loopback address")
    assert addresses.refusal("https://app.localhost/x", allowed) is None
    assert addresses.refusal("https://example.com/x", ()) is None, "a name is checked when sent"


@pytest.mark.parametrize(
    "host",
    [
        "[::7f00:1]",
        "[::ffff:0:7f00:1]",
        "[64:ff9b::a9fe:a9fe]",
        "[2002:7f00:1::]",
        "[fec0::1]",
        "[::ffff:127.0.0.1]",
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "127.1",
    ],
)
def test_an_address_in_another_form_is_judged_as_the_address_it_reaches(host: str) -> None:
    """IPv6 forms that carry an IPv4 address (NAT64, 6to4, mapped, compatible) and the
    short, decimal, hex and octal IPv4 forms (which the URL parser writes out as the
    address they are) all reach a private address: refused at submission."""
    from pydantic import ValidationError

    from longplay.api.schemas import JobCreateFields

    with pytest.raises(ValidationError, match="webhooks go only to public addresses"):
        JobCreateFields(callback_url=f"http://{host}/hook")


def test_a_public_address_in_any_form_is_taken() -> None:
    for host in ("8.8.8.8", "[2606:4700::1111]", "[64:ff9b::808:808]", "[2002:808:808::1]"):
        assert addresses.refusal(f"http://{host}/hook", ()) is None, host


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://10.1.2.3/hook", "10.1.2.3 is a private address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
        ("http://[::1]:8080/hook", "::1 is a loopback address"),
    ],
)
def test_a_callback_written_as_an_address_not_allowed_is_refused_at_submission(
    hooks_stack: Stack, url: str, said: str
) -> None:
    client = hooks_stack.client("alice")
    as_json = client.post("/v1/jobs", json={"kind": "sleep", "callback_url": url})
    as_form = client.post("/v1/jobs", files={"kind": (None, "sleep"), "callback_url": (None, url)})
    flow = client.post("/v1/flows", json={"stages": {"a": {"kind": "sleep"}}, "callback_url": url})
    for response in (as_json, as_form, flow):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert f"callback_url: {said}" in error["message"], error
        assert "LONGPLAY_WEBHOOK_ALLOWED_NETWORKS" in error["message"]
        assert error["details"][0]["type"] == "callback_not_allowed", error
        assert error["details"][0]["loc"][-1] == "callback_url", error
    jobs = client.get("/v1/jobs", params={"limit": 100}).json()["items"]
    assert all(job.get("callback_url") != url for job in jobs), "nothing was stored"


def test_completed_job_posts_one_signed_webhook(hooks_stack: Stack, receiver: Receiver) -> None:
    client = hooks_stack.client("alice")
    secret = client.get("/v1/webhooks/secret").json()["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    url, name = receiver.url()
    job = submit(client, params={"seconds": 0.2, "ticks": 2, "text": "hi"}, callback_url=url)
    wait_for_status(client, job["id"], {"completed"})
    [row] = settled(client, job["id"])
    [request] = receiver.received(name)

    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == row["id"]
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert verify(secret, request.headers, request.body)
    assert not verify(secret, request.headers, request.body.replace(b"hi", b"ho"))
    message = request.json
    assert message["type"] == "job.completed"
    assert datetime.fromisoformat(message["timestamp"]).tzinfo is not None
    data = message["data"]
    assert data["id"] == job["id"] and data["kind"] == "sleep"
    assert data["status"] == "completed" and data["progress"] == 100.0
    [output] = data["outputs"]
    assert output["name"] == "result.txt"
    assert client.get(output["links"]["content"]).text == "hi"
    assert row["event"] == "completed" and row["status"] == "delivered"
    assert row["attempts"] == 1 and row["last_status_code"] == 200 and row["delivered_at"]
    time.sleep(0.5)
    assert len(receiver.received(name)) == 1, "no started or progress message unasked"


def test_failing_receiver_gets_retries_with_the_same_id(
    hooks_stack: Stack, receiver: Receiver
) -> None:
    client = hooks_stack.client("alice")
    url, name = receiver.url(Reply(500), Reply(500))
    job = submit(client, params={"seconds": 0.1, "ticks": 1}, callback_url=url)
    [row] = settled(client, job["id"])
    received = receiver.received(name)
    assert len(received) == 3
    assert {r.headers["webhook-id"] for r in received} == {row["id"]}
    secret = client.get("/v1/webhooks/secret").json()["secret"]
    assert all(verify(secret, r.headers, r.body) for r in received)
    assert received[0].body == received[2].body, "a retry sends the same message"
    assert row["status"] == "delivered" and row["attempts"] == 3
    assert row["last_status_code"] == 200 and row["delivered_at"]


def test_gone_receiver_is_not_retried(hooks_stack: Stack, receiver: Receiver) -> None:
    client = hooks_stack.client("alice")
    url, name = receiver.url(Reply(410))
    job = submit(client, params={"seconds": 0.1, "ticks": 1}, callback_url=url)
    [row] = settled(client, job["id"])
    assert row["status"] == "failed" and row["attempts"] == 1
    assert row["last_status_code"] == 410 and row["last_error"] == "HTTP 410: ok"
    assert row["delivered_at"] is None
    time.sleep(1.0)
    assert len(receiver.received(name)) == 1
    # A redirect is not followed, and the message says where it pointed.
    moved = "https://hooks.example.com/new-home"
    url, name = receiver.url(Reply(308, headers={"Location": moved}))
    job = submit(client, params={"seconds": 0.1, "ticks": 1}, callback_url=url)
    [row] = settled(client, job["id"])
    assert row["status"] == "failed" and row["attempts"] == 1
    assert row["last_error"] == (
        f"HTTP 308: ok; redirects are not followed: use the address it points to ({moved})"
    )


def test_slow_receiver_and_retry_after(hooks_stack: Stack, receiver: Receiver) -> None:
    client = hooks_stack.client("alice")
    url, name = receiver.url(
        Reply(200, delay=TIMEOUT + 1.0),  # answers too late: counts as failed
        Reply(429, headers={"Retry-After": "2"}),
    )
    job = submit(client, params={"seconds": 0.1, "ticks": 1}, callback_url=url)
    [waiting] = wait_until(
        lambda: [r for r in deliveries(client, job["id"]) if r["last_status_code"] == 429],
        timeout=30,
    )
    assert waiting["status"] == "pending" and waiting["attempts"] == 2
    assert waiting["next_attempt_at"] and "429" in waiting["last_error"]
    [row] = settled(client, job["id"])
    received = receiver.received(name)
    assert len(received) == 3 and row["status"] == "delivered" and row["attempts"] == 3
    assert received[2].at - received[1].at >= 1.8, "Retry-After is honoured"


def test_an_answer_that_drags_on_ends_the_attempt_at_its_timeout(
    hooks_stack: Stack, receiver: Receiver
) -> None:
    """The timeout bounded each read, not the attempt: an answer a header line every
    half second held an attempt (and a worker process) past its lease, and the message
    was sent again beside it; a body without end was read without end. Now the attempt
    ends at the timeout, and of an answer only what says why is read."""
    client = hooks_stack.client("alice")
    url, name = receiver.url(
        Reply(200, drip=0.5),  # 50 s of headers
        Reply(500, endless=True),  # the first bytes say why; the rest is not read
        Reply(200, endless=True),  # a 2xx says all
    )
    job = submit(client, params={"seconds": 0.1, "ticks": 1}, callback_url=url)
    [row] = settled(client, job["id"])
    received = receiver.received(name)
    assert len(received) == 3 and row["status"] == "delivered" and row["attempts"] == 3
    assert received[1].at - received[0].at < TIMEOUT + 5, "the drip was cut at the timeout"


def test_started_progress_and_final_in_order(hooks_stack: Stack, receiver: Receiver) -> None:
    client = hooks_stack.client("alice")
    url, name = receiver.url()
    seconds = 4.0
    job = submit(
        client,
        params={"seconds": seconds, "ticks": 80},
        callback_url=url,
        callback_events=["started", "progress"],
    )
    wait_for_status(client, job["id"], {"completed"}, timeout=30)
    rows = settled(client, job["id"], count=3)
    messages = [r.json for r in receiver.received(name)]
    types = [m["type"] for m in messages]
    assert types[0] == "job.started" and types[-1] == "job.completed", types
    assert messages[0]["data"]["status"] == "running"
    progress = [m["data"]["progress"] for m in messages[1:-1]]
    assert set(types[1:-1]) == {"job.progress"}, types
    # The first progress goes at once, then one per interval at most.
    assert 1 <= len(progress) <= seconds / PROGRESS_INTERVAL + 2, progress
    assert [int(p) for p in progress] == sorted({int(p) for p in progress}), progress
    assert all(0 < p < 100 for p in progress)
    assert all(m["data"]["current_step"] in ("prepare", "work") for m in messages[1:-1])
    # A progress message not sent yet when the job ended is dropped, never sent late.
    sent = [r for r in rows if r["status"] != "superseded"]
    assert len(sent) == len(messages) and {r["status"] for r in sent} == {"delivered"}
    assert all(r["event"] == "progress" for r in rows if r["status"] == "superseded")


def test_a_jobs_messages_go_out_while_every_worker_process_runs_a_job(
    hooks_stack: Stack, receiver: Receiver
) -> None:
    """Messages waited for a free worker process: with both running a job, a job's
    ``started`` came after its run and its progress not at all (superseded unsent)."""
    client = hooks_stack.client("alice")
    urls = [receiver.url() for _ in range(2)]
    jobs = [
        submit(
            client,
            params={"seconds": 4.0, "ticks": 40},
            callback_url=url,
            callback_events=["started", "progress"],
        )
        for url, _ in urls
    ]
    for job, (_, name) in zip(jobs, urls, strict=True):
        wait_for_status(client, job["id"], {"completed"}, timeout=30)
        settled(client, job["id"], count=3)
        types = [r.json["type"] for r in receiver.received(name)]
        assert types[0] == "job.started" and types[-1] == "job.completed", types
        assert types.count("job.progress") >= 2, types


def test_a_retry_goes_at_its_time_while_every_worker_process_runs_a_job(
    hooks_stack: Stack, receiver: Receiver
) -> None:
    """A retry was a task for a free worker process: with both running a job, a
    ``started`` answered 500 was tried again only once a job had ended, after it."""
    client = hooks_stack.client("alice")
    urls = [receiver.url(Reply(500)) for _ in range(2)]
    jobs = [
        submit(
            client,
            params={"seconds": 4.0, "ticks": 4},
            callback_url=url,
            callback_events=["started"],
        )
        for url, _ in urls
    ]
    for job, (_, name) in zip(jobs, urls, strict=True):
        wait_for_status(client, job["id"], {"completed"}, timeout=30)
        settled(client, job["id"], count=2)
        got = receiver.received(name)
        assert [r.json["type"] for r in got] == ["job.started"] * 2 + ["job.completed"]
        assert got[1].at - got[0].at < 2.5, "tried again after its backoff, not the job"


def test_the_end_supersedes_a_started_message_waiting_for_its_retry(
    hooks_stack: Stack, receiver: Receiver
) -> None:
    """A ``started`` answered 503 with ``Retry-After`` came after the job's final
    message, and a receiver going by ``data.status`` was left with a running job."""
    client = hooks_stack.client("alice")
    url, name = receiver.url(Reply(503, headers={"Retry-After": "3"}))
    job = submit(
        client, params={"seconds": 0.5, "ticks": 1}, callback_url=url, callback_events=["started"]
    )
    wait_for_status(client, job["id"], {"completed"}, timeout=30)
    rows = settled(client, job["id"], count=2)
    time.sleep(3.5)  # past the retry the started message would have had
    assert {r["event"]: r["status"] for r in rows} == {
        "started": "superseded",
        "completed": "delivered",
    }, rows
    types = [r.json["type"] for r in receiver.received(name)]
    assert types == ["job.started", "job.completed"], types


def test_a_progress_message_on_the_wire_when_its_job_ends_is_not_sent_again(
    hooks_stack: Stack, receiver: Receiver
) -> None:
    """Its retry went out after the job's final message ("running" after "completed"):
    the end superseded only the progress messages waiting at that moment."""
    client = hooks_stack.client("alice")
    url, name = receiver.url(Reply(500, delay=0.8))  # the first progress, while the job ends
    job = submit(
        client,
        params={"seconds": 0.6, "ticks": 6},
        callback_url=url,
        callback_events=["progress"],
    )
    wait_for_status(client, job["id"], {"completed"}, timeout=30)
    rows = settled(client, job["id"], count=2)
    progress = [r for r in rows if r["event"] == "progress"]
    assert {r["status"] for r in progress} == {"superseded"}, rows
    assert max(r["attempts"] for r in progress) == 1, rows  # the one tried, then dropped
    assert [r["status"] for r in rows if r["event"] == "completed"] == ["delivered"], rows
    types = [r.json["type"] for r in receiver.received(name)]
    assert types == ["job.progress", "job.completed"], types


def test_a_flows_webhook_outlives_the_stage_it_is_listed_under(
    hooks_stack: Stack, receiver: Receiver
) -> None:
    """A flow's message is kept as one about the stage that ended it; deleting that
    stage while the message was retried dropped it, though the flow was still there."""
    client = hooks_stack.client("alice")
    url, name = receiver.url(Reply(500), Reply(500), Reply(500))
    made = client.post(
        "/v1/flows",
        json={
            "stages": {"a": {"kind": "sleep"}, "b": {"kind": "sleep", "params": {"seconds": 0.3}}},
            "callback_url": url,
        },
    )
    assert made.status_code == 202, made.text
    stage_ids = [stage["id"] for stage in made.json()["stages"].values()]

    def listed() -> tuple[str, str] | None:
        for job_id in stage_ids:
            if any(r["event"].startswith("flow.") for r in deliveries(client, job_id)):
                return job_id, next(other for other in stage_ids if other != job_id)
        return None

    holder, other = wait_until(listed, timeout=30)
    wait_until(lambda: receiver.received(name), timeout=30)  # tried once, refused
    assert client.delete(f"/v1/jobs/{holder}").status_code == 204
    [row] = wait_until(
        lambda: [r for r in deliveries(client, other) if r["status"] == "delivered"], timeout=30
    )
    assert row["event"] == "flow.completed" and row["attempts"] == 4, row
    assert [r.json["type"] for r in receiver.received(name)] == ["flow.completed"] * 4


def test_failed_and_cancelled_jobs(hooks_stack: Stack, receiver: Receiver) -> None:
    client = hooks_stack.client("alice")
    fail_url, fail_name = receiver.url()
    failing = submit(
        client, params={"seconds": 0.1, "ticks": 1, "fail": "permanent"}, callback_url=fail_url
    )
    cancel_url, cancel_name = receiver.url()
    long = submit(client, params={"seconds": 30, "ticks": 300}, callback_url=cancel_url)
    wait_for_status(client, long["id"], {"running"})
    assert client.post(f"/v1/jobs/{long['id']}/cancel").status_code == 200

    settled(client, failing["id"])
    [failed] = receiver.received(fail_name)
    assert failed.json["type"] == "job.failed"
    assert failed.json["data"]["status"] == "failed"
    assert failed.json["data"]["error"]["code"] == "asked_to_fail"
    assert failed.json["data"]["outputs"] == []

    settled(client, long["id"])
    [cancelled] = receiver.received(cancel_name)
    assert cancelled.json["type"] == "job.cancelled"
    assert cancelled.json["data"]["status"] == "cancelled"


def test_owner_scoping_validation_and_rotation(hooks_stack: Stack, receiver: Receiver) -> None:
    alice, bob = hooks_stack.client("alice"), hooks_stack.client("bob")
    url, _ = receiver.url()
    job = submit(alice, params={"seconds": 0.1, "ticks": 1}, callback_url=url)
    assert bob.get(f"/v1/jobs/{job['id']}/webhooks").status_code == 404
    assert bob.get("/v1/jobs/job_nope/webhooks").status_code == 404
    bad = alice.post("/v1/jobs", json={"kind": "sleep", "callback_url": "ftp://example.com/x"})
    assert bad.status_code == 422
    odd = alice.post(
        "/v1/jobs", json={"kind": "sleep", "callback_url": url, "callback_events": ["finished"]}
    )
    assert odd.status_code == 422
    # Events asked for with nowhere to send them: said, not taken and dropped.
    nowhere = alice.post("/v1/jobs", json={"kind": "sleep", "callback_events": ["progress"]})
    assert nowhere.status_code == 422, nowhere.text
    assert "callback_events needs a callback_url" in nowhere.json()["error"]["message"]
    # What was asked for shows on the job.
    asked = submit(alice, params={"seconds": 0}, callback_url=url, callback_events=["started"])
    assert asked["callback_events"] == ["started"] and job["callback_events"] == []

    carol = hooks_stack.client("carol")
    old = carol.get("/v1/webhooks/secret").json()["secret"]
    assert old != bob.get("/v1/webhooks/secret").json()["secret"]
    rotated = carol.post("/v1/webhooks/secret/rotate").json()
    new = rotated["secret"]
    assert new != old and carol.get("/v1/webhooks/secret").json()["secret"] == new
    assert rotated["previous_signs_until"] is not None
    # Right after the rotation a message verifies with either secret, so a receiver
    # that has not changed over yet still takes it; once the overlap is over, only new.
    for overlapping in (True, False):
        url, name = receiver.url()
        later = submit(carol, params={"seconds": 0.1, "ticks": 1}, callback_url=url)
        settled(carol, later["id"])
        [request] = receiver.received(name)
        assert len(request.headers["webhook-signature"].split()) == (2 if overlapping else 1)
        assert verify(new, request.headers, request.body)
        assert verify(old, request.headers, request.body) is overlapping
        if overlapping:
            time.sleep(SECRET_OVERLAP + 0.5)
    assert carol.get("/v1/webhooks/secret").json()["previous_signs_until"] is None


def test_sweep_sends_a_delivery_whose_message_was_lost(
    hooks_stack: Stack, receiver: Receiver
) -> None:
    client = hooks_stack.client("alice")
    url, name = receiver.url()
    job = submit(client, params={"seconds": 0.1, "ticks": 1}, callback_url=url)
    settled(client, job["id"])
    # A delivery committed, but whose task message never reached a worker.
    lost_id = f"msg_lost{uuid.uuid4().hex[:8]}"
    with session_scope(hooks_stack.database_url) as session:
        session.add(
            WebhookDelivery(
                id=lost_id,
                job_id=job["id"],
                event="completed",
                url=url,
                payload={"type": "job.completed", "timestamp": "x", "data": {"id": job["id"]}},
                status="pending",
                attempts=0,
                next_attempt_at=datetime.now(UTC) - timedelta(seconds=5),
            )
        )
    wait_until(
        lambda: any(r.headers["webhook-id"] == lost_id for r in receiver.received(name)),
        timeout=20,
    )
    rows = settled(client, job["id"], count=2)
    assert {r["id"]: r["status"] for r in rows}[lost_id] == "delivered"


def test_expired_job(hooks_stack: Stack, receiver: Receiver) -> None:
    client = hooks_stack.client("alice")
    url, name = receiver.url()
    now = datetime.now(UTC)
    job = submit(  # no worker here takes GPU work: it waits until its deadline
        client,
        "gpu_sleep",
        params={"seconds": 0.1, "ticks": 1},
        callback_url=url,
        callback_events=["started"],
        deadline=(now + timedelta(seconds=1)).isoformat(),
    )
    wait_for_status(client, job["id"], {"expired"}, timeout=20)
    [row] = settled(client, job["id"])
    [request] = receiver.received(name)
    assert request.json["type"] == "job.expired" and row["event"] == "expired"
    assert request.json["data"]["error"]["code"] == "deadline_passed"


@pytest.fixture(scope="module")
def public_only_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An API that sends webhooks to public addresses alone, as a deployment does unless
    its operator allows more (the other stacks allow this machine, for their receivers)."""
    deployment = Stack(tmp_path_factory.mktemp("public-only"), "sqlite")
    deployment.env.update(LONGPLAY_WEBHOOK_ALLOWED_NETWORKS="")
    try:
        deployment.start_api()
        yield deployment
    finally:
        deployment.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/x",
        "http://localhost.:8199/x",
        "http://LOCALHOST./",
        "http://a.localhost./",
    ],
)
def test_localhost_with_a_root_dot_is_refused_at_submission(
    public_only_api: Stack, url: str
) -> None:
    """``localhost.`` (a name with its root dot) passed the check at submission; only
    sending refused it."""
    sent = public_only_api.client("alice").post(
        "/v1/jobs", json={"kind": "sleep", "callback_url": url}
    )
    assert sent.status_code == 422, sent.text
    error = sent.json()["error"]
    assert "is 127.0.0.1, a loopback address" in error["message"], error
    assert error["details"][0]["type"] == "callback_not_allowed", error
