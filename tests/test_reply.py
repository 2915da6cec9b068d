"""The ``reply`` kind: a reply streamed as ``token`` events through the API from the real
worker (Gemma 3 270M), followed and resumed with ``Last-Event-ID``; conversations too
long for the context; and the HTTP engine's streaming against a real OpenAI-style server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from conftest import Stack, wait_for_status
from openai_stub_server import StubServer, create_app

from longplay import keys
from longplay.engines import get_language_model, get_synthesizer, get_transcriber
from longplay.engines.chat import (
    Batcher,
    ContextTooLong,
    ReplyOptions,
    fit_conversation,
    write_reply,
)
from longplay.engines.llm import UntilStop
from longplay.settings import Settings

API_KEY = "reply-test-key"
ROME = {
    "system": "The assistant answers at length.",
    "messages": [
        {
            "role": "user",
            "content": "Describe the history of the city of Rome in detail, from its "
            "founding to today.",
        }
    ],
    "max_tokens": 64,
}
WORDS = "the old harbour town kept its lights burning through the long winter nights "
DATABASE = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)


def sse(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The events of an SSE response as they arrive: id, event name and data."""
    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if line.startswith("id:"):
            current["id"] = line[3:].strip()
        elif line.startswith("event:"):
            current["event"] = line[6:].strip()
        elif line.startswith("data:"):
            current["data"] = json.loads(line[5:])
        elif not line and current:
            yield current
            current = {}


def follow(
    client: httpx.Client, job_id: str, *, last_id: str | None = None, stop_after_tokens: int = 0
) -> list[dict[str, Any]]:
    """Follow a job's events to their end, or, with ``stop_after_tokens``, hang up after
    that many ``token`` events."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    events: list[dict[str, Any]] = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=60) as r:
        assert r.status_code == 200, r.read()
        for event in sse(r):
            events.append(event)
            tokens = [e for e in events if e["event"] == "token"]
            if stop_after_tokens and len(tokens) == stop_after_tokens:
                break
    return events


def output(client: httpx.Client, job: dict[str, Any], name: str) -> str:
    [found] = [o for o in job["outputs"] if o["name"] == name]
    return client.get(found["links"]["content"]).text


def words(tokens: int) -> str:
    """Plain English text of about ``tokens`` tokens for Gemma (a word a token)."""
    return (WORDS * (tokens // len(WORDS.split()) + 1)).strip()


# -- through the API, on the shared stack's worker ---------------------------------------


@DATABASE
def test_a_reply_streams_tokens_that_resume_with_last_event_id(stack: Stack) -> None:
    client = stack.client("replier")
    response = client.post("/v1/jobs", json={"kind": "reply", "params": ROME})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["priority"] == "normal"

    first = follow(client, job["id"], stop_after_tokens=1)
    rest = follow(client, job["id"], last_id=first[-1]["id"])
    assert rest[-1]["event"] == "completed"
    ids = [e["id"] for e in first + rest]
    assert len(ids) == len(set(ids)), "a resumed stream repeats nothing"

    tokens = [e["data"] for e in first + rest if e["event"] == "token"]
    assert len(tokens) >= 2, "the reply came in more than one batch"
    streamed = "".join(t["text"] for t in tokens)
    assert [t["offset"] for t in tokens] == [
        sum(len(t["text"]) for t in tokens[:i]) for i in range(len(tokens))
    ]
    done = wait_for_status(client, job["id"], {"completed"})
    assert streamed == output(client, done, "reply.txt")
    data = json.loads(output(client, done, "reply.json"))
    assert data["content"] == streamed and data["role"] == "assistant"
    usage = data["usage"]
    assert usage["prompt_tokens"] > 10 and 2 <= usage["completion_tokens"] <= 64
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    whole = [e for e in follow(client, job["id"]) if e["event"] == "token"]
    assert "".join(e["data"]["text"] for e in whole) == streamed, "from the start, all of it"


@DATABASE
def test_a_conversation_too_long_for_the_context(stack: Stack) -> None:
    client = stack.client("replier")
    huge = {"messages": [{"role": "user", "content": words(20_000)}]}
    refused = client.post("/v1/jobs", json={"kind": "reply", "params": huge})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "context_too_long"
    assert "4096" in error["message"]
    [detail] = error["details"]
    assert detail["loc"] == ["body", "params", "messages"]
    no_room = {"messages": [{"role": "user", "content": "Hi."}], "max_tokens": 4096}
    refused = client.post("/v1/jobs", json={"kind": "reply", "params": no_room})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"][0]["loc"] == ["body", "params", "max_tokens"]
    truncated = {**huge, "truncate": "oldest"}
    refused = client.post("/v1/jobs", json={"kind": "reply", "params": truncated})
    assert refused.status_code == 422, "truncation never drops the last message"
    assert "last message take about" in refused.json()["error"]["message"]
    assert refused.json()["error"]["details"][0]["loc"] == ["body", "params", "messages"]
    # Nor the system text: when it is what is too long, it is the field to shorten.
    instructions = {**truncated, "messages": [{"role": "user", "content": "Hi."}]}
    refused = client.post(
        "/v1/jobs", json={"kind": "reply", "params": {**instructions, "system": words(20_000)}}
    )
    assert refused.status_code == 422, refused.text
    assert "send shorter instructions" in refused.json()["error"]["message"]
    assert refused.json()["error"]["details"][0]["loc"] == ["body", "params", "system"]

    long = [{"role": "user", "content": words(5_000)}]
    over = client.post("/v1/jobs", json={"kind": "reply", "params": {"messages": long}})
    assert over.status_code == 202, "an estimate cannot be sure of this one"
    trimmed = client.post(
        "/v1/jobs",
        json={
            "kind": "reply",
            "params": {
                "messages": [
                    *long,
                    {"role": "assistant", "content": "That is a long story."},
                    {"role": "user", "content": "Say hello."},
                ],
                "max_tokens": 8,
                "truncate": "oldest",
            },
        },
    )
    failed = wait_for_status(client, over.json()["id"], {"completed", "failed"})
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "context_too_long"
    message = failed["error"]["message"]
    assert "4096" in message and "with up to 256 for the reply" in message

    done = wait_for_status(client, trimmed.json()["id"], {"completed", "failed"})
    assert done["status"] == "completed", done["error"]
    [warning] = done["warnings"]
    assert warning["code"] == "conversation_truncated"
    assert "oldest 1 message" in warning["message"]
    assert json.loads(output(client, done, "reply.json"))["dropped_messages"] == 1


@DATABASE
def test_a_blank_message_or_an_empty_stop_is_refused_at_its_field(stack: Stack) -> None:
    client = stack.client("replier")
    hello = [{"role": "user", "content": "Hello."}]
    for params, loc in [
        ({"messages": [{"role": "user", "content": " \n\t"}]}, ["messages", 0, "content"]),
        ({"messages": hello, "stop": ["\n", ""]}, ["stop", 1]),
    ]:
        refused = client.post("/v1/jobs", json={"kind": "reply", "params": params})
        assert refused.status_code == 422, refused.text
        [detail] = refused.json()["error"]["details"]
        assert detail["loc"] == ["body", "params", *loc], detail


@DATABASE
def test_cancel_stops_the_generation_at_the_next_batch(stack: Stack) -> None:
    client = stack.client("replier")
    counting = {
        "messages": [{"role": "user", "content": "Count from 1 to 900: 1, 2, 3, 4, 5, 6,"}],
        "max_tokens": 2000,
    }
    job = client.post("/v1/jobs", json={"kind": "reply", "params": counting}).json()
    follow(client, job["id"], stop_after_tokens=2)
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    until_cancel = follow(client, job["id"])
    assert until_cancel[-1]["event"] == "cancelled"
    time.sleep(2)  # a generation going on would publish about ten batches meanwhile
    # A follower stops at the end (resuming after it is a 204): the stream itself says
    # what was published after it.
    ended = client.get(
        f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": until_cancel[-1]["id"]}
    )
    assert ended.status_code == 204
    stream = redis.Redis.from_url(stack.redis_url).xrange(
        keys.events_stream(job["id"]), min="(" + until_cancel[-1]["id"]
    )
    after = [json.loads(fields[b"data"]) for _, fields in stream]
    assert len([e for e in after if e["type"] == "token"]) <= 2
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"


# -- the parts, in this process ------------------------------------------------------------


def test_truncation_drops_the_fewest_oldest_messages_and_keeps_the_system() -> None:
    def count(messages: Any) -> int:
        return sum(len(m["content"].split()) for m in messages)

    system = {"role": "system", "content": "be brief"}
    turns = [{"role": "user", "content": "word " * n} for n in (50, 40, 30, 20, 5)]
    fitted = fit_conversation(
        [system, *turns], count=count, context_tokens=40, max_tokens=10, truncate=True
    )
    assert fitted.messages == [system, turns[3], turns[4]]
    assert (fitted.dropped, fitted.prompt_tokens, fitted.tokens_before) == (3, 27, 147)
    with pytest.raises(ContextTooLong, match="147 tokens with up to 10 for the reply: 157"):
        fit_conversation(
            [system, *turns], count=count, context_tokens=40, max_tokens=10, truncate=False
        )
    with pytest.raises(ContextTooLong, match="does not fit even alone"):
        fit_conversation(
            [system, *turns], count=count, context_tokens=6, max_tokens=2, truncate=True
        )
    # A system message later in the conversation is kept where it stands too.
    later = {"role": "system", "content": "now answer in French"}
    mixed = [turns[0], later, turns[1], turns[3], turns[4]]
    fitted = fit_conversation(mixed, count=count, context_tokens=40, max_tokens=10, truncate=True)
    assert fitted.messages == [later, turns[3], turns[4]] and fitted.dropped == 2
    # One message too long is refused, with or without a system message: dropping it
    # would leave the model nothing to answer.
    for alone in ([system, turns[0]], [turns[0]]):
        with pytest.raises(ContextTooLong, match="does not fit even alone"):
            fit_conversation(alone, count=count, context_tokens=40, max_tokens=10, truncate=True)


def test_a_stop_split_across_pieces_is_found_and_a_near_miss_let_through() -> None:
    def reply(stops: list[str], pieces: list[str]) -> str:
        until, shown = UntilStop(stops), []
        for piece in pieces:
            shown.append(until.feed(piece))
            if until.stopped:
                break
        return "".join([*shown, until.rest()])

    assert reply(["\n"], ["1.", "\n", "2."]) == "1."
    assert reply(["\n\n"], ["1.", "\n", "\n2."]) == "1."
    assert reply(["\n\n"], ["1.", "\n", "two"]) == "1.\ntwo"
    assert reply(["END"], ["and the E", "N", "D of it"]) == "and the "
    assert reply(["END"], ["and the E", "N"]) == "and the EN"
    assert reply(["2.", "\n"], ["1. one", "\n2."]) == "1. one"
    assert reply([], ["a", "b"]) == "ab"


def test_batches_come_at_a_bounded_rate_and_hold_back_trailing_blanks() -> None:
    now = [0.0]
    sent: list[str] = []
    batcher = Batcher(sent.append, interval=0.2, clock=lambda: now[0])
    for piece in ["Hello", " there", ",", " friend", " \n"]:
        now[0] += 0.1
        batcher.add(piece)
    assert sent == ["Hello there", ", friend"]
    batcher.add("\n")
    batcher.flush()
    assert batcher.text == "Hello there, friend" == "".join(sent)


@pytest.fixture(scope="module")
def local_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("reply-data"),
        stt={"engine": "local"},
        tts={"engine": "local"},
        llm={"engine": "local"},
    )


def test_a_stop_ends_the_reply_as_written_not_the_blank_before_it(
    local_settings: Settings,
) -> None:
    """The model writes a line break before its reply; a stop of a line or paragraph
    break ends the reply at its first one, not before the reply begins."""
    model = get_language_model(local_settings)
    count = [{"role": "user", "content": "Count: one, two, three, four, five,"}]
    whole = model.chat(count, max_tokens=40)
    assert "\n\n" in whole, whole
    for stop in ("\n", "\n\n"):
        cut = model.chat(count, max_tokens=40, stop=[stop])
        assert cut and cut == whole.split(stop)[0].strip(), (stop, cut, whole)
        streamed = "".join(model.stream_chat(count, max_tokens=40, stop=[stop]))
        assert streamed.strip() == cut


def test_the_http_engine_streams_what_the_local_model_writes(local_settings: Settings) -> None:
    local = get_language_model(local_settings)
    app = create_app(
        api_key=API_KEY,
        transcriber=get_transcriber(local_settings),
        synthesizer=get_synthesizer(local_settings),
        language_model=local,
    )
    options = ReplyOptions.model_validate({**ROME, "max_tokens": 24})
    with StubServer(app) as server:
        settings = local_settings.model_copy(
            update={
                "llm": local_settings.llm.model_copy(
                    update={"engine": "http", "url": server.url, "api_key": API_KEY}
                )
            }
        )
        remote = get_language_model(settings)
        sent: list[str] = []
        reply = write_reply(remote, options, publish=sent.append, interval=0)
    [request] = app.state.chat_requests
    assert request["stream"] is True and request["max_tokens"] == 24
    assert reply.text == local.chat(options.conversation(), max_tokens=24)
    assert "".join(sent) == reply.text and reply.completion_tokens >= len(sent) > 2
    assert reply.prompt_tokens > 10
