"""Language models: llama.cpp in the worker, or an OpenAI-compatible chat server.

The packaged Gemma 3 270M is a base model, not instruction-tuned: it continues text.
Ask it with a document and the start of the answer (``"...\\n\\nSummary:"``) through
:meth:`LanguageModel.complete`, and stop it at a line or paragraph break. ``chat`` on a
local model writes the messages as a plain ``Role: text`` transcript and lets the model
continue the assistant's turn, which is the best a base model can do with a chat.

Runs are deterministic by default (temperature 0, a fixed seed, and a fresh context for
every call, since llama.cpp's reuse of a cached prompt prefix evaluates tokens in other
batches and can change a near-tie), so the same prompt gives the same text.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from longplay.engines.cache import Loaded, cached_engine
from longplay.engines.device import (
    Device,
    FallbackCallback,
    choose_device,
    cpu_threads,
    is_out_of_memory,
    load_on_device,
)
from longplay.engines.grammar import generate_held
from longplay.engines.http import EngineClient, briefly
from longplay.engines.models import gguf_model_file
from longplay.framework.errors import (
    InvalidParams,
    JobError,
    PermanentError,
    RetryableError,
)
from longplay.settings import Settings, get_settings
from longplay.text.chunks import estimate_tokens

CONTEXT_TOKENS = 8192
"""Default llama.cpp context size, prompt plus answer (``LONGPLAY_LLM_CONTEXT_TOKENS``;
Gemma 3 270M was trained on 32k)."""
SEED = 0
CHAT_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
TURN_ENDS = ("\nUser:", "\nSystem:")
"""Where a base model writing the assistant's turn has started the next one."""
MESSAGE_TOKENS = 4
"""What a chat message costs a server beyond its text (role, separators), estimated."""
TOKENS_EVERY_S = 0.25
"""Seconds at least between two counts of tokens told to ``on_tokens``: often enough
for a progress bar, without a call (and a progress event) per token."""

CHAT_PATH = "/v1/chat/completions"
PERMANENT_ERROR_TYPES = frozenset(
    {"invalid_request_error", "authentication_error", "permission_error", "not_found_error"}
)
"""OpenAI error types a retry cannot fix; any other (``server_error``, none) it may."""

Message = Mapping[str, str]
"""An OpenAI chat message: ``{"role": "system" | "user" | "assistant", "content": ...}``."""
TokenCount = Callable[[int, int], None]
"""Told ``(read, written)``: the tokens of the prompt the model has read so far and
those of its answer it has written."""


class LanguageModel(Protocol):
    """What every LLM engine does."""

    model: str
    device: str

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> str:
        """The text the model writes after ``prompt``, without the stop sequence."""
        ...

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> str:
        """The assistant's next message."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes: exact for a local model, estimated for a server."""
        ...

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> Generator[str, None, None]:
        """:meth:`chat`'s message piece by piece (about a token each) as it is written;
        stopping the iteration stops the generation."""
        ...

    def chat_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens the prompt for ``messages`` takes (see :meth:`count_tokens`)."""
        ...

    def complete_json(
        self,
        prompt: str,
        schema: Mapping[str, Any],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        on_tokens: TokenCount | None = None,
    ) -> str:
        """The text the model writes after ``prompt``, held to JSON that fits ``schema``
        (a JSON Schema): a grammar on a local model, ``response_format`` to a server. A
        server may not honour it, so check what comes back.

        ``on_tokens`` hears how many tokens of the prompt are read and of the answer
        written (:data:`TokenCount`): a local model tells it as it goes (every
        :data:`TOKENS_EVERY_S` at most, and the last count at the end; reading a long
        prompt can take longer than writing the answer), a server once, when its
        answer has come. An exception it raises stops the generation."""
        ...

    @property
    def context_tokens(self) -> int | None:
        """Tokens the model's context holds, prompt and answer; None: the server knows."""
        ...


class LlamaCppModel:
    """A GGUF model through llama-cpp-python; one generation at a time per process."""

    def __init__(
        self, llama: Any, *, model: str, device: Device, context_tokens: int = CONTEXT_TOKENS
    ) -> None:
        self._llama = llama
        self._lock = threading.Lock()  # a llama.cpp context is not thread-safe
        self.model = model
        self.device: str = device
        self.context_tokens = context_tokens

    @classmethod
    def load(
        cls,
        model_file: Path,
        *,
        device: Device,
        threads: int,
        context_tokens: int = CONTEXT_TOKENS,
    ) -> LlamaCppModel:
        """Load with every layer on the GPU for ``cuda``, none for ``cpu``."""
        from llama_cpp import Llama

        llama = Llama(
            model_path=str(model_file),
            n_ctx=context_tokens,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=-1 if device == "cuda" else 0,
            seed=SEED,
            verbose=False,
        )
        return cls(llama, model=str(model_file), device=device, context_tokens=context_tokens)

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> str:
        """See :meth:`LanguageModel.complete`."""
        self._check_fits(prompt, max_tokens)
        with self._lock:
            self._llama.reset()
            try:
                result = self._llama.create_completion(
                    prompt,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    stop=list(stop) or None,
                    seed=SEED,
                )
            except RuntimeError as exc:
                if is_out_of_memory(exc):
                    raise RetryableError(
                        f"llama.cpp ran out of memory: {exc}", code="out_of_memory"
                    ) from exc
                raise
        return str(result["choices"][0]["text"])

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> str:
        """See :meth:`LanguageModel.chat`; a turn ends at the next ``User:`` line."""
        pieces = self.stream_chat(
            messages, max_tokens=max_tokens, temperature=temperature, stop=stop
        )
        return "".join(pieces).strip()

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> Generator[str, None, None]:
        """See :meth:`LanguageModel.stream_chat`; the pieces join to :meth:`chat`'s text
        less its leading blank (the trailing one is the caller's to strip).

        The model writes a blank after ``Assistant:`` before the reply, so ``stop`` is
        looked for in the reply as the caller sees it, from its first visible
        character, not in what llama.cpp writes: a stop of ``"\n"`` ends the reply at
        its first line break, not before it begins."""
        prompt = chat_prompt(messages)
        self._check_fits(prompt, max_tokens)
        with self._lock:
            self._llama.reset()
            chunks = self._llama.create_completion(
                prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                stop=list(TURN_ENDS),
                seed=SEED,
                stream=True,
            )
            started = False
            until = UntilStop(stop)
            try:
                for chunk in chunks:
                    piece = str(chunk["choices"][0]["text"])
                    if not started:
                        piece = piece.lstrip()
                        started = bool(piece)
                    piece = until.feed(piece)
                    if piece:
                        yield piece
                    if until.stopped:
                        return
                if rest := until.rest():
                    yield rest
            except RuntimeError as exc:
                if is_out_of_memory(exc):
                    raise RetryableError(
                        f"llama.cpp ran out of memory: {exc}", code="out_of_memory"
                    ) from exc
                raise
            finally:
                chunks.close()

    def chat_tokens(self, messages: Sequence[Message]) -> int:
        """See :meth:`LanguageModel.chat_tokens`."""
        return self.count_tokens(chat_prompt(messages))

    def complete_json(
        self,
        prompt: str,
        schema: Mapping[str, Any],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        on_tokens: TokenCount | None = None,
    ) -> str:
        """See :meth:`LanguageModel.complete_json`: only tokens the grammar made from
        ``schema`` allows are written (:func:`~longplay.engines.grammar.generate_held`)."""
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        self._check_fits(prompt, max_tokens)
        grammar = json_schema_to_gbnf(json.dumps(schema))
        counted = EveryFewTokens(on_tokens) if on_tokens is not None else None
        with self._lock:
            answer = generate_held(
                self._llama,
                prompt,
                grammar,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=SEED,
                on_tokens=counted,
            )
        if counted is not None:
            counted.finish()
        return answer

    def count_tokens(self, text: str) -> int:
        """See :meth:`LanguageModel.count_tokens`."""
        return len(self._llama.tokenize(text.encode(), add_bos=True, special=False))

    def _check_fits(self, prompt: str, max_tokens: int) -> None:
        needed = self.count_tokens(prompt) + max_tokens
        if needed > self.context_tokens:
            raise InvalidParams(
                f"the prompt and answer need {needed} tokens, more than the "
                f"{self.context_tokens} the model's context holds; send shorter chunks",
                code="prompt_too_long",
            )


class EveryFewTokens:
    """Counts of tokens passed on to ``on_tokens`` every :data:`TOKENS_EVERY_S` at most
    (the first at once), and the last one by :meth:`finish`."""

    def __init__(
        self, on_tokens: TokenCount, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._on_tokens = on_tokens
        self._clock = clock
        self._told_at = -math.inf
        self._told: tuple[int, int] | None = None
        self._count = (0, 0)

    def __call__(self, read: int, written: int) -> None:
        self._count = (read, written)
        now = self._clock()
        if now - self._told_at >= TOKENS_EVERY_S:
            self._told_at = now
            self._tell()

    def finish(self) -> None:
        """Tell the count that came since the last one told, if any."""
        if self._count != self._told:
            self._tell()

    def _tell(self) -> None:
        self._told = self._count
        self._on_tokens(*self._count)


class UntilStop:
    """Text fed piece by piece, let through up to the first of the stop sequences; a
    tail that may be the start of one is held back until the next piece tells."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False
        """A stop sequence was met: nothing more is let through."""

    def feed(self, piece: str) -> str:
        """What of the text so far may be shown now."""
        if self.stopped:
            return ""
        text = self._held + piece
        found = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        if found:
            self.stopped, self._held = True, ""
            return text[: min(found)]
        held = max(
            (
                n
                for s in self._stops
                for n in range(min(len(s) - 1, len(text)), 0, -1)
                if text.endswith(s[:n])
            ),
            default=0,
        )
        self._held = text[len(text) - held :]
        return text[: len(text) - held]

    def rest(self) -> str:
        """The tail held back, once the text has ended without a stop."""
        rest, self._held = self._held, ""
        return "" if self.stopped else rest


def chat_prompt(messages: Sequence[Message]) -> str:
    """Messages as the plain ``Role: text`` transcript a base model continues, ending
    with the assistant's turn to speak."""
    lines = []
    for message in messages:
        role = CHAT_ROLES.get(message["role"])
        if role is None:
            raise InvalidParams(f"unknown chat role {message['role']!r}")
        lines.append(f"{role}: {message['content'].strip()}")
    return "\n\n".join([*lines, "Assistant:"])


class HttpLanguageModel:
    """An OpenAI-compatible ``POST /v1/chat/completions`` server."""

    device = "remote"
    context_tokens: int | None = None

    def __init__(
        self,
        client: EngineClient,
        *,
        model: str,
        on_refusal: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        self._on_refusal = on_refusal
        self.model = model

    def noting_refusals(self, on_refusal: Callable[[str], None]) -> HttpLanguageModel:
        """This model, telling ``on_refusal`` what the server said each time it refused to
        answer (OpenAI's ``message.refusal``). A copy for one job: the model itself is
        shared by all the jobs of a process."""
        return HttpLanguageModel(self._client, model=self.model, on_refusal=on_refusal)

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> str:
        """See :meth:`LanguageModel.complete`: sent as one user message."""
        return self.chat(
            [{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=temperature,
            stop=stop,
        )

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> str:
        """See :meth:`LanguageModel.chat`."""
        request = self._request(messages, max_tokens, temperature, stop)
        return self._answer(request)

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> Generator[str, None, None]:
        """See :meth:`LanguageModel.stream_chat`: OpenAI's ``stream: true``, whose
        server-sent events carry ``choices[0].delta.content`` until ``data: [DONE]``.

        A server that ignores ``stream`` and answers one chat completion gives its
        message as one piece. A stream that stops with neither ``[DONE]`` nor a
        ``finish_reason`` was cut short, and the reply so far is not taken for the whole
        of it."""
        request = {**self._request(messages, max_tokens, temperature, stop), "stream": True}
        lines = self._client.stream_lines(CHAT_PATH, json=request)
        received = pieces = 0
        events = finished = False
        other: list[str] = []  # lines that are not events: a plain JSON answer
        try:
            for line in lines:
                received += 1
                if not line.startswith("data:"):
                    if not line.startswith((":", "event:", "id:", "retry:")):
                        other.append(line)
                    continue
                data = line.removeprefix("data:").strip()
                if not data:
                    continue
                if data == "[DONE]":
                    return
                events = True
                piece, done = self._chunk(data)
                finished = finished or done
                if piece:
                    pieces += 1
                    yield piece
        except RetryableError as exc:
            if exc.code != "engine_unreachable" or not received:
                raise
            if finished:
                return  # the answer was whole; only the [DONE] after it was lost
            # Tokens had come, so the server was reached: it let the answer fall mid-way.
            raise RetryableError(
                f"the LLM server at {self._url} dropped the connection after {pieces} "
                "pieces of its answer; the job is tried again, and if this keeps "
                "happening the server's own logs say why",
                code="engine_connection_lost",
            ) from exc
        finally:
            lines.close()
        if finished:
            return
        if not events and "".join(other).strip():
            yield self._streamed_completion("\n".join(other))
            return
        raise RetryableError(
            f"the LLM server at {self._url} ended its answer before it was finished "
            f"(after {pieces} pieces, with no finish_reason and no [DONE]); the job is "
            "tried again, and if this keeps happening the server's own logs say why",
            code="engine_stream_cut",
        )

    def count_tokens(self, text: str) -> int:
        """See :meth:`LanguageModel.count_tokens`."""
        return estimate_tokens(text)

    def chat_tokens(self, messages: Sequence[Message]) -> int:
        """See :meth:`LanguageModel.chat_tokens`: estimated."""
        return sum(estimate_tokens(m["content"]) + MESSAGE_TOKENS for m in messages)

    def complete_json(
        self,
        prompt: str,
        schema: Mapping[str, Any],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        on_tokens: TokenCount | None = None,
    ) -> str:
        """See :meth:`LanguageModel.complete_json`: one user message, with the schema as
        OpenAI's ``response_format``. The answer comes whole (servers differ in whether
        and how they stream a ``response_format`` answer), so ``on_tokens`` hears once,
        when it has come: the server's ``usage``, else estimates."""
        request = self._request([{"role": "user", "content": prompt}], max_tokens, temperature, ())
        request["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": dict(schema)},
        }
        return self._answer(request, on_tokens)

    @property
    def _url(self) -> str:
        return f"{self._client.base_url}{CHAT_PATH}"

    def _answer(self, request: dict[str, Any], on_tokens: TokenCount | None = None) -> str:
        """The text of the server's one answer to a chat completion ``request``; empty
        where the server gave none (``content: null``, as OpenAI sends with a refusal).
        ``on_tokens`` hears how many tokens it has."""
        body = self._client.post_json(CHAT_PATH, json=request)
        content, refusal = self._message(body)
        if refusal and self._on_refusal is not None:
            self._on_refusal(refusal)
        if on_tokens is not None:
            on_tokens(*_usage(body, self.chat_tokens(request["messages"]), content))
        return content

    def _message(self, body: Mapping[str, Any]) -> tuple[str, str | None]:
        """``choices[0].message.content`` of a chat completion (empty for none) and the
        ``refusal`` beside it, if any."""
        if (error := _server_error(body, self._client)) is not None:
            raise error
        try:
            message = body["choices"][0]["message"]
            content, refusal = message.get("content"), message.get("refusal")
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise PermanentError(
                f"the LLM server at {self._url} answered without choices[0].message.content "
                f"({briefly(json.dumps(body))}); check that LONGPLAY_LLM_URL points at an "
                "OpenAI-compatible server",
                code="engine_bad_response",
            ) from exc
        return str(content or ""), str(refusal) if refusal else None

    def _streamed_completion(self, text: str) -> str:
        """The message of a whole chat completion sent for a streamed request."""
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise PermanentError(
                f"the LLM server at {self._url} answered a streamed chat request with "
                f"neither server-sent events nor a JSON chat completion ({briefly(text)}); "
                "check that LONGPLAY_LLM_URL points at an OpenAI-compatible server",
                code="engine_bad_response",
            )
        answer, refusal = self._message(body)
        if refusal and not answer:
            raise PermanentError(
                f"the LLM declined to answer: {briefly(refusal)}; rephrase the "
                "conversation or use another model (LONGPLAY_LLM_HTTP_MODEL)",
                code="llm_refused",
            )
        if not answer:  # an empty reply taken for a finished one is what this guards
            raise PermanentError(
                f"the LLM server at {self._url} answered a streamed chat request with one "
                "chat completion whose message is empty; try another model "
                "(LONGPLAY_LLM_HTTP_MODEL) or a server that streams",
                code="engine_empty_answer",
            )
        return answer

    def _chunk(self, data: str) -> tuple[str, bool]:
        """The text a streamed chat chunk adds (empty for a chunk with none), and
        whether it finishes the answer (a ``finish_reason``)."""
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise self._bad_chunk(data) from exc
        if isinstance(chunk, dict) and (error := _server_error(chunk, self._client)) is not None:
            raise error
        try:
            if not chunk["choices"]:
                return "", False
            choice = chunk["choices"][0]
            piece = str(choice["delta"].get("content") or "")
            return piece, bool(choice.get("finish_reason"))
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise self._bad_chunk(data) from exc

    def _bad_chunk(self, data: str) -> PermanentError:
        return PermanentError(
            f"the LLM server at {self._url} streamed a chunk without choices[0].delta "
            f"({briefly(data)}); check that LONGPLAY_LLM_URL points at an OpenAI-compatible "
            "server",
            code="engine_bad_response",
        )

    def _request(
        self, messages: Sequence[Message], max_tokens: int, temperature: float, stop: Sequence[str]
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": SEED,
        }
        if stop:
            request["stop"] = list(stop)
        return request


def _usage(body: Mapping[str, Any], prompt_estimate: int, content: str) -> tuple[int, int]:
    """The tokens of a chat completion's prompt and answer, as its ``usage`` says, else
    estimated."""
    usage = body.get("usage")
    said = usage if isinstance(usage, dict) else {}
    prompt, answer = said.get("prompt_tokens"), said.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else prompt_estimate,
        answer if isinstance(answer, int) else estimate_tokens(content),
    )


def _server_error(body: Mapping[str, Any], client: EngineClient) -> JobError | None:
    """The error an answer or streamed chunk carries in place of choices (OpenAI's
    ``{"error": {"message": ..., "type": ...}}``), classified: a request the server
    calls invalid will not pass on a retry, anything else (a server error) may."""
    error = body.get("error")
    if not error:
        return None
    said, kind = str(error), None
    if isinstance(error, dict):
        said, kind = str(error.get("message") or json.dumps(error)), error.get("type")
    said, url = briefly(client.redacted(said)), f"{client.base_url}{CHAT_PATH}"
    if kind in PERMANENT_ERROR_TYPES:
        return PermanentError(
            f"the LLM server at {url} refused the request ({kind}): {said}",
            code="engine_rejected",
        )
    return RetryableError(
        f"the LLM server at {url} failed while answering: {said}; the job is "
        "tried again, and if this keeps happening the server's own logs say why",
        code="engine_server_error",
    )


def get_language_model(
    settings: Settings | None = None, *, on_fallback: FallbackCallback | None = None
) -> LanguageModel:
    """This process's LLM engine for ``settings``, loaded on first use."""
    return cached_engine("llm", settings or get_settings(), _load, on_fallback)


def _load(settings: Settings) -> Loaded[LanguageModel]:
    if settings.llm.engine == "http":
        client = EngineClient(
            engine="LLM",
            base_url=settings.llm.url,
            api_key=settings.llm.api_key,
            settings_prefix="LONGPLAY_LLM",
            timeout_s=settings.llm.timeout,
            retry_within_s=settings.engines.engine_retry_within,
        )
        model = settings.llm.http_model
        return Loaded(HttpLanguageModel(client, model=model), "http", model, "remote")
    import llama_cpp

    model_file = gguf_model_file(settings)
    threads = cpu_threads(settings)
    device = choose_device(
        settings.engines.device,
        engine="llama.cpp",
        cuda_available=bool(llama_cpp.llama_supports_gpu_offload()),
    )
    engine, used, fallback = load_on_device(
        "llama.cpp",
        lambda d: LlamaCppModel.load(
            model_file, device=d, threads=threads, context_tokens=settings.llm.context_tokens
        ),
        device,
        strict=settings.engines.device == "cuda",
    )
    return Loaded(engine, "llama.cpp", str(model_file), used, fallback)
