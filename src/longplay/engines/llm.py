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

import threading
from collections.abc import Mapping, Sequence
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
from longplay.engines.http import EngineClient
from longplay.engines.models import gguf_model_file
from longplay.framework.errors import InvalidParams, PermanentError, RetryableError
from longplay.settings import Settings, get_settings
from longplay.text.chunks import estimate_tokens

CONTEXT_TOKENS = 8192
"""Default llama.cpp context size, prompt plus answer (``LONGPLAY_LLM_CONTEXT_TOKENS``;
Gemma 3 270M was trained on 32k)."""
SEED = 0
CHAT_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}

Message = Mapping[str, str]
"""An OpenAI chat message: ``{"role": "system" | "user" | "assistant", "content": ...}``."""


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
        needed = self.count_tokens(prompt) + max_tokens
        if needed > self.context_tokens:
            raise InvalidParams(
                f"the prompt and answer need {needed} tokens, more than the "
                f"{self.context_tokens} the model's context holds; send shorter chunks",
                code="prompt_too_long",
            )
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
        lines = []
        for message in messages:
            role = CHAT_ROLES.get(message["role"])
            if role is None:
                raise InvalidParams(f"unknown chat role {message['role']!r}")
            lines.append(f"{role}: {message['content'].strip()}")
        prompt = "\n\n".join([*lines, "Assistant:"])
        text = self.complete(
            prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            stop=[*stop, "\nUser:", "\nSystem:"],
        )
        return text.strip()

    def count_tokens(self, text: str) -> int:
        """See :meth:`LanguageModel.count_tokens`."""
        return len(self._llama.tokenize(text.encode(), add_bos=True, special=False))


class HttpLanguageModel:
    """An OpenAI-compatible ``POST /v1/chat/completions`` server."""

    device = "remote"

    def __init__(self, client: EngineClient, *, model: str) -> None:
        self._client = client
        self.model = model

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
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": SEED,
        }
        if stop:
            request["stop"] = list(stop)
        body = self._client.post_json("/v1/chat/completions", json=request)
        try:
            return str(body["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError) as exc:
            raise PermanentError(
                f"the LLM server answered without choices[0].message.content: {exc!r}",
                code="engine_bad_response",
            ) from exc

    def count_tokens(self, text: str) -> int:
        """See :meth:`LanguageModel.count_tokens`."""
        return estimate_tokens(text)


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
