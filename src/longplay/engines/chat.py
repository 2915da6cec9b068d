"""Writing the assistant's next message in a conversation, streamed as it is written:
the whole ``reply`` job without the job.

The conversation must fit the model's context with room for the reply; if it does
not, it fails with ``context_too_long`` naming the sizes, or, when the caller allows,
its oldest messages are dropped (the system's stay) until it fits, and a note says so.
The reply's pieces go to ``publish`` in batches, at most one each
:data:`BATCH_SECONDS`, and each batch is a progress checkpoint (where a cancel stops
the generation).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from longplay.engines.llm import LanguageModel, Message
from longplay.framework import (
    FieldError,
    Note,
    PermanentError,
    Progress,
    no_note,
    no_progress,
)
from longplay.text.chunks import estimate_tokens

BATCH_SECONDS = 0.2
"""The shortest time between two published batches of the reply."""
SURELY_TOO_LONG = 2
"""A conversation estimated at this many times the room it has is refused at submit:
an estimate is not a count, but it is never off by that much for text."""


class ChatMessage(BaseModel):
    """One message of the conversation."""

    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1, max_length=1_000_000)

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a message holds only blanks; give it some text or leave it out")
        return value


class ReplyOptions(BaseModel):
    """What to reply to and how."""

    messages: list[ChatMessage] = Field(
        min_length=1, max_length=10_000, description="The conversation so far, oldest first."
    )
    system: str | None = Field(
        None, min_length=1, description="Instructions put before the conversation."
    )
    max_tokens: int = Field(256, ge=1, le=8192, description="The longest reply, in tokens.")
    temperature: float = Field(0.0, ge=0, le=2, description="0: the same reply every time.")
    stop: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, max_length=4, description="Sequences the reply ends before."
    )
    truncate: Literal["oldest"] | None = Field(
        None,
        description='"oldest": drop the oldest messages (not the system\'s) until the '
        "conversation fits the model's context, and say so in a note; unset: a "
        "conversation too long fails with `context_too_long`.",
    )

    def conversation(self) -> list[Message]:
        """The messages as sent to the model, the ``system`` instructions first."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, *({"role": m.role, "content": m.content} for m in self.messages)]


class ContextTooLong(PermanentError):
    """The conversation and the reply do not fit in the model's context."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="context_too_long")


@dataclass(frozen=True)
class Fitted:
    """The conversation as it will be sent: what fits, its tokens, what was dropped."""

    messages: list[Message]
    prompt_tokens: int
    dropped: int
    tokens_before: int
    """The whole conversation's tokens, before any was dropped."""


@dataclass(frozen=True)
class Reply:
    """The finished reply and what it took."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    """Pieces the model streamed: a token each (a server may merge a few)."""
    dropped_messages: int


def fit_conversation(
    messages: Sequence[Message],
    *,
    count: Callable[[Sequence[Message]], int],
    context_tokens: int | None,
    max_tokens: int,
    truncate: bool,
) -> Fitted:
    """The conversation that fits ``context_tokens`` with ``max_tokens`` to spare
    (None: the server knows its own context; everything is sent). With ``truncate``,
    the fewest oldest messages are dropped, never the leading system ones nor the last
    one; else, or when even that is not enough, :class:`ContextTooLong`."""
    whole = list(messages)
    tokens = count(whole)
    if context_tokens is None or tokens + max_tokens <= context_tokens:
        return Fitted(whole, tokens, 0, tokens)
    sizes = f"{tokens} tokens with up to {max_tokens} for the reply: {tokens + max_tokens}"
    if not truncate:
        raise ContextTooLong(
            f"the conversation takes {sizes}, more than the {context_tokens} the model's "
            "context holds; send fewer or shorter messages, lower max_tokens, or set "
            'truncate: "oldest"'
        )
    droppable = _droppable(whole)
    # Dropping more never makes it longer: find the fewest drops that fit by bisection.
    low, high = 1, len(droppable)
    fits: tuple[int, int] | None = None
    while low <= high:
        middle = (low + high) // 2
        needed = count(_without(whole, droppable[:middle]))
        if needed + max_tokens <= context_tokens:
            fits, high = (middle, needed), middle - 1
        else:
            low = middle + 1
    if fits is None:
        raise ContextTooLong(
            f"the conversation takes {sizes}, more than the {context_tokens} the model's "
            "context holds, and its last message does not fit even alone; send a shorter "
            "one or lower max_tokens"
        )
    dropped, needed = fits
    return Fitted(_without(whole, droppable[:dropped]), needed, dropped, tokens)


def _droppable(messages: list[Message]) -> list[int]:
    """Where the messages truncation may drop are, oldest first: all but the system's,
    wherever they stand, and the last one."""
    return [i for i, m in enumerate(messages[:-1]) if m["role"] != "system"]


def _without(messages: list[Message], dropped: Sequence[int]) -> list[Message]:
    gone = set(dropped)
    return [m for i, m in enumerate(messages) if i not in gone]


def refuse_surely_too_long(options: ReplyOptions, context_tokens: int) -> None:
    """Refuse (:class:`FieldError`, ``context_too_long``) what cannot fit a context of
    ``context_tokens`` whatever the count: a ``max_tokens`` that fills it, or, unless
    truncation is allowed, a conversation whose estimate is far too long (with it, the
    system text and the last message, which are never dropped). The rest only the
    model's own count can tell, at run time."""
    room = context_tokens - options.max_tokens
    if room <= 0:
        raise FieldError(
            f"a reply of up to {options.max_tokens} tokens leaves no room for the "
            f"conversation in the model's context of {context_tokens}; lower max_tokens",
            code="context_too_long",
            field="max_tokens",
        )
    kept = options.conversation()
    if options.truncate is not None:
        kept = _without(kept, _droppable(kept))
        estimate = sum(estimate_tokens(m["content"]) for m in kept)
        if estimate > SURELY_TOO_LONG * room:
            last = estimate_tokens(kept[-1]["content"])
            system_text = options.system is not None and estimate_tokens(options.system) > last
            raise FieldError(
                f"the system text and the last message take about {estimate} tokens "
                f"({last} the last message), far more than the {room} the model's context "
                f"of {context_tokens} leaves beside a reply of {options.max_tokens}, and "
                "they are never dropped; send "
                + ("shorter instructions" if system_text else "a shorter message")
                + " or lower max_tokens",
                code="context_too_long",
                field="system" if system_text else "messages",
            )
        return
    estimate = sum(estimate_tokens(m["content"]) for m in kept)
    if estimate > SURELY_TOO_LONG * room:
        raise FieldError(
            f"the conversation takes about {estimate} tokens, far more than the {room} the "
            f"model's context of {context_tokens} leaves beside a reply of "
            f'{options.max_tokens}; send fewer or shorter messages, or set truncate: "oldest"',
            code="context_too_long",
            field="messages",
        )


class Batcher:
    """Gathers the reply's pieces and hands them on at most once each ``interval``.

    Whitespace at the end is held back until more text follows it, so what was handed
    on, joined, is always the reply as it ends: without trailing blanks."""

    def __init__(
        self,
        publish: Callable[[str], None],
        interval: float = BATCH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._publish = publish
        self._interval = interval
        self._clock = clock
        self._pending = ""
        self._last = clock()
        self.text = ""
        """Everything handed on so far."""

    def add(self, piece: str) -> bool:
        """Take a piece; whether a batch went out (time for a checkpoint)."""
        self._pending += piece
        if self._clock() - self._last < self._interval:
            return False
        return self.flush()

    def flush(self) -> bool:
        """Hand on what is pending but its trailing blanks; whether anything went."""
        ready = self._pending.rstrip()
        if not ready:
            return False
        self._pending = self._pending[len(ready) :]
        self._last = self._clock()
        self.text += ready
        self._publish(ready)
        return True


def write_reply(
    llm: LanguageModel,
    options: ReplyOptions,
    *,
    publish: Callable[[str], None],
    progress: Progress = no_progress,
    note: Note = no_note,
    interval: float = BATCH_SECONDS,
) -> Reply:
    """The assistant's next message, its pieces published as they are written."""
    fitted = fit_conversation(
        options.conversation(),
        count=llm.chat_tokens,
        context_tokens=llm.context_tokens,
        max_tokens=options.max_tokens,
        truncate=options.truncate == "oldest",
    )
    if fitted.dropped:
        note(
            f"the conversation took {fitted.tokens_before} tokens, more than the model's "
            f"context of {llm.context_tokens} holds beside a reply of {options.max_tokens}: "
            f"its oldest {fitted.dropped} message(s) were left out",
            code="conversation_truncated",
            dropped_messages=fitted.dropped,
        )
    batcher = Batcher(publish, interval)
    pieces = 0
    progress(0, options.max_tokens, tokens=0)
    stream = llm.stream_chat(
        fitted.messages,
        max_tokens=options.max_tokens,
        temperature=options.temperature,
        stop=options.stop,
    )
    with closing(stream):
        for piece in stream:
            pieces += 1
            if batcher.add(piece):
                progress(pieces, options.max_tokens, tokens=pieces)
    batcher.flush()
    progress(options.max_tokens, options.max_tokens, tokens=pieces)
    return Reply(batcher.text, fitted.prompt_tokens, pieces, fitted.dropped)
