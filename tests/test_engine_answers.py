"""The HTTP LLM engine against a server that answers badly: a reply that ignores
``stream``, a stream cut short or failing half-way, a connection dropped mid-answer, and
a model that refuses to translate. The server is a real one
(:func:`~openai_stub_server.create_chat_fault_app`); no model is loaded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai_stub_server import REFUSAL, ROME, StubServer, create_chat_fault_app

from longplay.engines.chat import ReplyOptions, write_reply
from longplay.engines.http import EngineClient
from longplay.engines.llm import HttpLanguageModel
from longplay.engines.translation import TranslationOptions, translate_lines
from longplay.framework.errors import PermanentError, RetryableError

API_KEY = "answers-test-key"
QUESTION = ReplyOptions.model_validate(
    {"messages": [{"role": "user", "content": "What is the capital of Italy?"}]}
)
LINES = ["The weather is lovely in the hills today.", "We walked along the river at dusk."]
GERMAN = TranslationOptions(target_language="German")


@pytest.fixture(scope="module")
def server() -> Iterator[StubServer]:
    with StubServer(create_chat_fault_app(api_key=API_KEY)) as running:
        yield running


def llm(server: StubServer, model: str) -> HttpLanguageModel:
    client = EngineClient(
        engine="LLM",
        base_url=server.url,
        api_key=API_KEY,
        settings_prefix="LONGPLAY_LLM",
        timeout_s=10,
    )
    return HttpLanguageModel(client, model=model)


def reply_of(server: StubServer, model: str) -> str:
    sent: list[str] = []
    reply = write_reply(llm(server, model), QUESTION, publish=sent.append, interval=0)
    assert "".join(sent) == reply.text
    return reply.text


def assert_readable(message: str) -> None:
    """What a person reads: no Python repr, no traceback, no page of server text."""
    assert "Error(" not in message and "Traceback" not in message, message
    assert len(message) < 700, message


# -- streaming replies ------------------------------------------------------------------


def test_a_server_that_ignores_stream_gives_its_whole_answer(server: StubServer) -> None:
    """It answered one JSON chat completion: that was an empty reply, taken as done."""
    assert reply_of(server, "ignores-stream") == "Rome is the capital of Italy."


@pytest.mark.parametrize(
    ("model", "code", "said"),
    [("refuses", "llm_refused", REFUSAL), ("refuses-quietly", "engine_empty_answer", "empty")],
)
def test_a_completion_without_content_for_a_stream_fails_clearly(
    server: StubServer, model: str, code: str, said: str
) -> None:
    """content null in place of a stream: an empty reply is not one, refused or not."""
    with pytest.raises(PermanentError) as caught:
        reply_of(server, model)
    assert caught.value.code == code
    assert said in caught.value.message
    assert_readable(caught.value.message)


def test_a_stream_that_ends_mid_answer_is_retryable(server: StubServer) -> None:
    """No finish_reason, no [DONE]: half an answer is not a reply."""
    with pytest.raises(RetryableError) as caught:
        reply_of(server, "stream-cut")
    assert caught.value.code == "engine_stream_cut"
    assert "ended its answer before it was finished" in caught.value.message
    assert server.url in caught.value.message
    assert_readable(caught.value.message)


def test_a_stream_cut_at_max_tokens_is_a_finished_answer(server: StubServer) -> None:
    """finish_reason length without [DONE] is an answer that ran out of tokens."""
    assert reply_of(server, "stream-length") == "".join(ROME)


def test_a_server_error_mid_stream_is_retryable_with_its_message(server: StubServer) -> None:
    with pytest.raises(RetryableError) as caught:
        reply_of(server, "stream-server-error")
    assert caught.value.code == "engine_server_error"
    assert "The server had an error" in caught.value.message
    assert "choices" not in caught.value.message
    assert_readable(caught.value.message)


def test_an_invalid_request_error_in_a_stream_is_permanent(server: StubServer) -> None:
    with pytest.raises(PermanentError) as caught:
        reply_of(server, "stream-invalid")
    assert not caught.value.retryable
    assert caught.value.code == "engine_rejected"
    assert "max_tokens is too large" in caught.value.message
    assert_readable(caught.value.message)


def test_a_connection_dropped_mid_answer_says_so(server: StubServer) -> None:
    """The server was reached and had sent tokens: "could not reach" would mislead."""
    with pytest.raises(RetryableError) as caught:
        reply_of(server, "stream-drops")
    assert caught.value.code == "engine_connection_lost"
    message = caught.value.message
    assert f"dropped the connection after {len(ROME)} pieces of its answer" in message
    assert "could not reach" not in message
    assert_readable(message)


# -- a model that will not translate --------------------------------------------------


@pytest.mark.parametrize(("model", "said"), [("refuses", REFUSAL), ("refuses-quietly", None)])
def test_no_line_translated_fails_with_the_refusal(
    server: StubServer, model: str, said: str | None
) -> None:
    """content null for every line made the input itself the "translation", completed."""
    with pytest.raises(PermanentError) as caught:
        translate_lines(LINES, GERMAN, llm=llm(server, model), context_tokens=4096)
    assert caught.value.code == "nothing_translated"
    message = caught.value.message
    assert "no translation for any of the 2 lines" in message
    assert (said in message) if said else ("refused" not in message)
    assert_readable(message)


def test_some_lines_empty_is_a_note_not_a_failure(server: StubServer) -> None:
    lines = ["The secret plan is ready for tomorrow.", *LINES]
    notes: list[str] = []
    translated, stats = translate_lines(
        lines, GERMAN, llm=llm(server, "refuses-secrets"), context_tokens=4096, note=notes.append
    )
    assert translated == [lines[0], *(f"[de] {line}" for line in LINES)]
    assert stats.untranslated_lines == 1
    assert any("1 of 3 lines came back empty" in note for note in notes), notes
