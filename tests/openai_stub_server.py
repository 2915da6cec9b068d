"""A small OpenAI-compatible server for the HTTP engine tests, backed by real engines.

It serves the endpoints the HTTP adapters call, answering from the local Whisper,
Piper, llama.cpp and (when given one) embedding engines, so an HTTP round trip is
tested against real audio and text. Some model names make it misbehave the way real servers do:

- ``fail-500``: 500 with an OpenAI error body;
- ``busy-429``: 429, rate limited;
- ``bad-400``: 400, the model does not exist;
- ``slow``: answers (with a 504) only after :data:`SLOW_S` seconds;
- ``miscount-once``: the first chat answer keeps fewer lines than the request's last
  message numbered (a model that drops a subtitle line); later answers are the model's.
- ``thinks-aloud``: answers a ``response_format`` JSON-schema request with a
  ``<think>`` block before the JSON, and the first such request with reasoning alone.

The chat models of :data:`CHAT_FAULTS` misbehave without a model behind them (a reply
ignoring ``stream``, a stream cut short, an error mid-stream, a refusal):
:func:`create_chat_fault_app` serves them alone, for tests that need no engine.

A ``response_format: {"type": "json_schema"}`` request is answered by the local model
held to that schema (:meth:`LanguageModel.complete_json`).

A chat request with ``"stream": true`` is answered as OpenAI streams one (server-sent
``chat.completion.chunk`` events, then ``data: [DONE]``). A request without the right
``Authorization: Bearer`` key gets a 401. The chat requests
the app received are kept, in order, in ``app.state.chat_requests``.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from longplay.engines import LanguageModel, Synthesizer, Transcriber
from longplay.engines.audio import decode_audio, resample, to_wav
from longplay.engines.embeddings import Embedder
from longplay.engines.stt import SAMPLE_RATE
from longplay.engines.tts import PCM_SAMPLE_RATE

SLOW_S = 2.0
_NUMBERED_LINE = re.compile(r"^\s*\d+[.):]", re.MULTILINE)
_FAULTS = {
    "fail-500": (500, "the engine crashed"),
    "busy-429": (429, "rate limit reached, retry in 1s"),
    "bad-400": (400, "The model 'bad-400' does not exist"),
    "slow": (504, "too slow"),
}


def create_app(
    *,
    api_key: str,
    transcriber: Transcriber,
    synthesizer: Synthesizer,
    language_model: LanguageModel,
    embedder: Embedder | None = None,
) -> FastAPI:
    """The app: real engines behind the OpenAI routes."""
    app = FastAPI()
    app.state.chat_requests = []
    app.state.miscounted = False
    app.state.thought_aloud = False

    def refusal(request: Request, model: str) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {api_key}":
            return _error(401, "Incorrect API key provided")
        if model == "slow":
            time.sleep(SLOW_S)
        if model in _FAULTS:
            return _error(*_FAULTS[model])
        return None

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        form = await request.form()
        if (refused := await run_in_threadpool(refusal, request, str(form["model"]))) is not None:
            return refused
        upload: Any = form["file"]
        samples, rate = decode_audio(await upload.read())
        audio = resample(samples, round(len(samples) * SAMPLE_RATE / rate))
        words = "word" in form.getlist("timestamp_granularities[]")
        language = form.get("language")
        prompt = form.get("prompt")

        def transcribe() -> dict[str, Any]:
            run = transcriber.transcribe(
                audio,
                language=str(language) if language else None,
                word_timestamps=words,
                initial_prompt=str(prompt) if prompt else None,
            )
            segments = list(run.segments)
            return {
                "task": "transcribe",
                "language": run.language,
                "duration": run.duration,
                "text": " ".join(s.text for s in segments),
                "segments": [
                    {"id": i, "start": s.start, "end": s.end, "text": " " + s.text}
                    for i, s in enumerate(segments)
                ],
                "words": [
                    {"word": w.text, "start": w.start, "end": w.end}
                    for s in segments
                    for w in s.words
                ],
            }

        return JSONResponse(await run_in_threadpool(transcribe))

    @app.post("/v1/audio/speech")
    async def speech(request: Request) -> Response:
        body = await request.json()
        if (refused := await run_in_threadpool(refusal, request, body["model"])) is not None:
            return refused
        spoken = await run_in_threadpool(
            synthesizer.synthesize,
            body["input"],
            voice=body.get("voice"),
            length_scale=1.0 / float(body.get("speed", 1.0)),
        )
        if body.get("response_format") == "pcm":
            samples = resample(
                spoken.samples, round(len(spoken.samples) * PCM_SAMPLE_RATE / spoken.sample_rate)
            )
            pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
            return Response(pcm, media_type="audio/pcm")
        return Response(to_wav(spoken.samples, spoken.sample_rate), media_type="audio/wav")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        body = await request.json()
        if (refused := await run_in_threadpool(refusal, request, body["model"])) is not None:
            return refused
        if embedder is None:
            return _error(404, "no embedding model on this server")
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        vectors = await run_in_threadpool(embedder.embed, texts)
        # Newest first, as a server may: each vector names the text it is for.
        data = [
            {"object": "embedding", "index": i, "embedding": vector.tolist()}
            for i, vector in reversed(list(enumerate(vectors)))
        ]
        return JSONResponse({"object": "list", "model": body["model"], "data": data})

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        app.state.chat_requests.append(body)
        if body["model"] in CHAT_FAULTS:
            return _chat_fault(request, body, api_key)
        if (refused := await run_in_threadpool(refusal, request, body["model"])) is not None:
            return refused
        if body.get("stream"):
            return await _streamed_chat(language_model, body)
        if (schema := _json_schema(body)) is not None:
            answer = await _json_answer(app, language_model, body, schema)
            return JSONResponse(_completion(body, answer))
        text = await run_in_threadpool(
            language_model.chat,
            body["messages"],
            max_tokens=body.get("max_tokens", 256),
            temperature=body.get("temperature", 0.0),
            stop=body.get("stop") or (),
        )
        if body["model"] == "miscount-once" and not app.state.miscounted:
            app.state.miscounted = True
            asked = len(_NUMBERED_LINE.findall(body["messages"][-1]["content"]))
            text = "\n".join(text.splitlines()[: max(asked - 1, 0)])
        return JSONResponse(
            {
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
            }
        )

    return app


def create_chat_fault_app(*, api_key: str) -> FastAPI:
    """An app with only ``/v1/chat/completions``, answering the :data:`CHAT_FAULTS`
    models (and nothing else) the way :func:`create_app` does; requests are kept in
    ``app.state.chat_requests``."""
    app = FastAPI()
    app.state.chat_requests = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        app.state.chat_requests.append(body)
        if body["model"] not in CHAT_FAULTS:
            return _error(404, f"The model '{body['model']}' does not exist")
        return _chat_fault(request, body, api_key)

    return app


ROME = ["Rome", " is the capital", " of Italy.", " It"]
"""The pieces a faulty stream sends: an answer that is not finished."""
REFUSAL = "I'm sorry, but I can't help with translating this text."
CHAT_FAULTS = {
    "ignores-stream": "answers a streamed request with one JSON chat completion",
    "stream-cut": "streams part of an answer, then ends with no finish_reason or [DONE]",
    "stream-length": "streams an answer ended by finish_reason length, without [DONE]",
    "stream-server-error": "streams part of an answer, then an error of type server_error",
    "stream-invalid": "streams an error of type invalid_request_error",
    "stream-drops": "streams part of an answer, then drops the connection",
    "refuses": "answers content null with a refusal, as OpenAI does",
    "refuses-quietly": "answers content null and nothing else",
    "refuses-secrets": "answers one line with content null where it has 'secret' in it, "
    "else with the line after '[de] '; numbered lines with content null",
}
"""Chat models that misbehave in a fixed way, whatever is asked."""


def _chat_fault(request: Request, body: dict[str, Any], api_key: str) -> Response:
    """The answer of one of the :data:`CHAT_FAULTS` models to ``body``."""
    if request.headers.get("authorization") != f"Bearer {api_key}":
        return _error(401, "Incorrect API key provided")
    model = body["model"]
    if model == "ignores-stream":
        return JSONResponse(_completion(body, "".join(ROME[:3])))
    if model == "refuses":
        return JSONResponse(_completion(body, None, refusal=REFUSAL))
    if model == "refuses-quietly":
        return JSONResponse(_completion(body, None))
    if model == "refuses-secrets":
        line = body["messages"][-1]["content"]
        numbered = _NUMBERED_LINE.match(line) is not None
        text = None if numbered or "secret" in line else f"[de] {line}"
        return JSONResponse(_completion(body, text))
    deltas: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"content": p}}]} for p in ROME
    ]
    if model == "stream-length":
        deltas.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    elif model == "stream-server-error":
        deltas.append(
            {"error": {"message": "The server had an error " + "x" * 2000, "type": "server_error"}}
        )
    elif model == "stream-invalid":
        deltas = [
            {"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}}
        ]
    events = [f"data: {json.dumps({'object': 'chat.completion.chunk', **d})}\n\n" for d in deltas]
    return StreamingResponse(
        _sent(events, drop=model == "stream-drops"), media_type="text/event-stream"
    )


async def _sent(events: list[str], *, drop: bool) -> AsyncIterator[str]:
    """``events`` one at a time, as a server writes them; with ``drop``, the connection
    is then closed mid-answer (the app fails, and uvicorn cuts the response short)."""
    for event in events:
        yield event
        await asyncio.sleep(0.01)
    if drop:
        raise ConnectionAbortedError("the stub server drops the connection mid-answer")


def _json_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema of a ``response_format: {"type": "json_schema"}`` request."""
    response_format = body.get("response_format") or {}
    if response_format.get("type") != "json_schema":
        return None
    return dict(response_format["json_schema"]["schema"])


async def _json_answer(
    app: FastAPI, language_model: LanguageModel, body: dict[str, Any], schema: dict[str, Any]
) -> str:
    """The model's JSON for the last message, held to ``schema``; ``thinks-aloud`` puts
    its reasoning before it, and answers its first such request with reasoning alone."""
    text = await run_in_threadpool(
        language_model.complete_json,
        body["messages"][-1]["content"],
        schema,
        max_tokens=body.get("max_tokens", 512),
        temperature=body.get("temperature", 0.0),
    )
    if body["model"] != "thinks-aloud":
        return text
    thinking = "<think>The user wants JSON. Let me think it through first.</think>\n"
    if not app.state.thought_aloud:
        app.state.thought_aloud = True
        return thinking + "I am still thinking about it."
    return thinking + text


def _completion(
    body: dict[str, Any], text: str | None, *, refusal: str | None = None
) -> dict[str, Any]:
    message = {"role": "assistant", "content": text, "refusal": refusal}
    return {
        "object": "chat.completion",
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }


async def _streamed_chat(language_model: LanguageModel, body: dict[str, Any]) -> Response:
    """A chat answer as OpenAI streams it: a ``chat.completion.chunk`` event a piece,
    then ``data: [DONE]``."""

    def pieces() -> list[str]:
        return list(
            language_model.stream_chat(
                body["messages"],
                max_tokens=body.get("max_tokens", 256),
                temperature=body.get("temperature", 0.0),
                stop=body.get("stop") or (),
            )
        )

    chunks = [
        {"role": "assistant"},
        *({"content": piece} for piece in await run_in_threadpool(pieces)),
    ]
    events = [
        "data: "
        + json.dumps(
            {
                "object": "chat.completion.chunk",
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta}],
            }
        )
        + "\n\n"
        for delta in chunks
    ]
    return StreamingResponse(iter([*events, "data: [DONE]\n\n"]), media_type="text/event-stream")


class StubServer:
    """Serves ``app`` with uvicorn in a thread on 127.0.0.1, on a port the OS picks."""

    def __init__(self, app: FastAPI) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> StubServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the stub server did not start")
            time.sleep(0.02)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": {"message": message, "type": "stub_error"}}, status_code=status)
