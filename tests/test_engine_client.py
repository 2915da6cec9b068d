"""The HTTP engines' client against a server that misbehaves as real ones do: rate
limits with ``Retry-After``, a restart, an answer that drips, megabytes of error text,
a key or password said back. A real server on a free port answers each request from
a script, and records what it was sent."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import Stack, free_port, wait_for_status

from longplay.engines.http import SAID_CHARS, EngineClient
from longplay.engines.tts import HttpSynthesizer
from longplay.framework.errors import PermanentError, RetryableError

KEY = "sk-test-SECRET-4242"
Answer = Callable[[BaseHTTPRequestHandler], None]


def answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
    def write(handler: BaseHTTPRequestHandler) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return write


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    return answer(status, {"error": {"message": message, "type": "server_error"}}, headers)


OK = answer(200, {"text": "done"})


def dripping(handler: BaseHTTPRequestHandler) -> None:
    """A 200 whose body comes a byte every half second."""
    handler.send_response(200)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", "100")
    handler.end_headers()
    try:
        for _ in range(100):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.5)
    except OSError:  # the client gave up
        pass


class Server:
    """Answers each POST with the next of ``script`` (then 200), recording them."""

    def __init__(self, *script: Answer, port: int = 0) -> None:
        self.script = list(script)
        self.seen: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                server.seen.append(
                    {"path": self.path, "at": time.monotonic(), "headers": dict(self.headers)}
                )
                (server.script.pop(0) if server.script else OK)(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def start(*script: Answer, port: int = 0) -> Server:
        made.append(Server(*script, port=port))
        return made[-1]

    yield start
    for server in made:
        server.close()


def client(url: str, *, retry_within: float = 0, timeout: float = 10, **kw: Any) -> EngineClient:
    return EngineClient(
        engine="LLM",
        base_url=url,
        api_key=kw.get("api_key", KEY),
        settings_prefix="LONGPLAY_LLM",
        timeout_s=timeout,
        retry_within_s=retry_within,
    )


def test_a_rate_limit_is_waited_out_as_the_server_asks_within_the_call(
    serve: Callable[..., Server],
) -> None:
    """A 429 with ``Retry-After`` failed the call at once, and the job's three attempts
    went by in five seconds; a long job's hundreds of calls rarely all got through."""
    limited = error(429, "Rate limit reached", {"Retry-After": "1"})
    server = serve(limited, limited)
    started = time.monotonic()
    assert client(server.url, retry_within=20).post_json("/v1/chat/completions") == {"text": "done"}
    assert len(server.seen) == 3
    gaps = [b["at"] - a["at"] for a, b in zip(server.seen, server.seen[1:], strict=False)]
    assert all(gap >= 0.95 for gap in gaps), gaps
    assert time.monotonic() - started < 10


def test_a_wait_longer_than_the_calls_patience_goes_to_the_jobs_retries(
    serve: Callable[..., Server],
) -> None:
    server = serve(error(429, "Rate limit reached", {"Retry-After": "120"}))
    started = time.monotonic()
    with pytest.raises(RetryableError) as caught:
        client(server.url, retry_within=20).post_json("/v1/chat/completions")
    assert caught.value.code == "engine_rate_limited"
    assert time.monotonic() - started < 5 and len(server.seen) == 1


def test_a_server_that_restarts_is_waited_for(serve: Callable[..., Server]) -> None:
    """Connection refused failed every job sent while a GPU server restarted."""
    port = free_port()
    threading.Timer(1.5, lambda: serve(port=port)).start()
    body = client(f"http://127.0.0.1:{port}", retry_within=20).post_json("/v1/embeddings")
    assert body == {"text": "done"}


def test_an_answer_that_drips_is_cut_at_the_requests_timeout(
    serve: Callable[..., Server],
) -> None:
    """The timeout bounded each read: a byte every two seconds held a job for ten
    minutes against a timeout of fifteen seconds."""
    server = serve(dripping)
    started = time.monotonic()
    with pytest.raises(RetryableError) as caught:
        client(server.url, timeout=1).post_json("/v1/audio/speech")
    assert caught.value.code == "engine_timeout"
    assert "within 1 s (LONGPLAY_LLM_TIMEOUT)" in caught.value.message
    assert time.monotonic() - started < 4


def test_what_a_server_says_is_cut_and_keeps_no_secret(serve: Callable[..., Server]) -> None:
    """A 2 MB error message went whole into the job (and its events, attempts and
    log); a key or a request's headers said back went there in clear."""
    server = serve(
        error(500, f"Authorization: Bearer {KEY} " + "x" * 2_000_000),
        error(401, f"Incorrect API key provided: {KEY}."),
    )
    with pytest.raises(RetryableError) as failed:
        client(server.url).post_json("/v1/chat/completions")
    with pytest.raises(PermanentError) as refused:
        client(server.url).post_json("/v1/chat/completions")
    for said in (failed.value.message, refused.value.message):
        assert KEY not in said and "***" in said, said[:600]
        assert len(said) < SAID_CHARS + 200, len(said)
    assert refused.value.code == "engine_auth_failed"
    assert "check LONGPLAY_LLM_API_KEY" in refused.value.message


def test_a_url_with_v1_or_a_password_is_taken_and_the_password_never_shown(
    serve: Callable[..., Server],
) -> None:
    """``…/v1``, as OpenAI writes its base URL, was asked for ``/v1/v1/…`` and failed
    for good; a password in the URL was shown in every error and replaced the key."""
    server = serve(error(404, "no such model"), error(404, "no such model"))
    with_password = server.url.replace("http://", "http://admin:hunter2pw@") + "/v1/"
    for key in (KEY, None):
        with pytest.raises(PermanentError) as caught:
            client(with_password, api_key=key).post_json("/v1/chat/completions")
        assert "hunter2pw" not in caught.value.message and "admin" not in caught.value.message
        assert "check LONGPLAY_LLM_HTTP_MODEL" in caught.value.message
    assert [seen["path"] for seen in server.seen] == ["/v1/chat/completions"] * 2
    assert server.seen[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    assert server.seen[1]["headers"]["Authorization"].startswith("Basic ")


def test_speech_that_is_not_audio_names_the_server_and_what_it_sent(
    serve: Callable[..., Server],
) -> None:
    """It said "the engine answered with undecodable audio: [Errno 1094995529] Invalid
    data found when processing input: '<none>'"."""
    server = serve(OK)
    with pytest.raises(PermanentError) as caught:
        HttpSynthesizer(client(server.url), model="tts-1").synthesize("Hello.")
    assert caught.value.message == (
        f"the LLM server {server.url}/v1/audio/speech (application/json) answered with "
        "16 bytes that could not be decoded as audio"
    )


def test_through_the_environments_proxy_a_request_is_held_to_its_timeout_too(
    serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client makes its own connections (to hold a request to its timeout), so it
    must still go through ``HTTP_PROXY`` as httpx would: a team's way out to the API."""
    proxy = serve(OK, dripping)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    engine = client("http://engine.example", timeout=1)
    assert engine.post_json("/v1/embeddings") == {"text": "done"}
    started = time.monotonic()
    with pytest.raises(RetryableError) as caught:
        engine.post_json("/v1/embeddings")
    assert caught.value.code == "engine_timeout" and time.monotonic() - started < 4
    assert [seen["path"] for seen in proxy.seen] == ["http://engine.example/v1/embeddings"] * 2


def test_a_job_whose_engine_rate_limits_once_completes_in_its_first_attempt(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    """Through the API and a worker, with ``LONGPLAY_ENGINE_RETRY_WITHIN`` set: the 429
    is waited out within the call, and the job is not sent back to the queue."""
    heard = {
        "text": "Hello there.",
        "language": "en",
        "duration": 1.0,
        "segments": [{"start": 0.0, "end": 1.0, "text": "Hello there."}],
    }
    server = serve(error(429, "Rate limit reached", {"Retry-After": "1"}), answer(200, heard))
    with Stack(tmp_path / "stack", "sqlite") as stack:
        stack.env.update(
            LONGPLAY_STT_ENGINE="http",
            LONGPLAY_STT_URL=server.url,
            LONGPLAY_STT_API_KEY=KEY,
            LONGPLAY_ENGINE_RETRY_WITHIN="20",
        )
        stack.start_api()
        stack.start_worker(concurrency=1)
        client = stack.client()
        audio = Path(__file__).parents[1] / "examples" / "hello.ogg"
        with audio.open("rb") as file:
            job = client.post(
                "/v1/jobs", data={"kind": "transcribe"}, files={"file": ("hello.ogg", file)}
            )
        assert job.status_code == 202, job.text
        done = wait_for_status(client, job.json()["id"], {"completed", "failed"}, timeout=120)
    assert done["status"] == "completed" and done["attempts"] == 1, done
    assert len(server.seen) == 2 and server.seen[1]["at"] - server.seen[0]["at"] >= 0.95
