"""The ``reply`` kind: a conversation in, the assistant's next message out, streamed.

The work is :func:`~longplay.engines.chat.write_reply`; its batches go out as the job's
``token`` events (:meth:`StepContext.stream`), so a chat front end shows the reply as
it is written, and the finished reply is kept as ``reply.txt`` and ``reply.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from longplay.engines.chat import ReplyOptions, refuse_surely_too_long, write_reply
from longplay.engines.llm import get_language_model
from longplay.framework import JobKind, Step, StepContext, SubmittedInput, register
from longplay.settings import get_settings


class ReplyParams(ReplyOptions):
    """Parameters of a ``reply`` job."""


def reply(ctx: StepContext[ReplyParams]) -> None:
    """Write the reply, streaming it, then keep it as text and as JSON with its counts."""
    llm = get_language_model(on_fallback=lambda f: ctx.note(f.describe()))
    written = write_reply(llm, ctx.params, publish=ctx.stream, progress=ctx.advance, note=ctx.note)
    text_file = ctx.workdir / "reply.txt"
    text_file.write_text(written.text, encoding="utf-8")
    data_file = ctx.workdir / "reply.json"
    data = {
        "role": "assistant",
        "content": written.text,
        "model": llm.model if llm.device == "remote" else Path(llm.model).name,
        "usage": {
            "prompt_tokens": written.prompt_tokens,
            "completion_tokens": written.completion_tokens,
            "total_tokens": written.prompt_tokens + written.completion_tokens,
        },
        "dropped_messages": written.dropped_messages,
    }
    data_file.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    ctx.add_output(text_file, media_type="text/plain")
    ctx.add_output(data_file, media_type="application/json")


def check_fits(params: ReplyParams, inputs: Sequence[SubmittedInput]) -> None:
    """At submit: refuse what the local model's context surely cannot hold (the exact
    count waits for the model, at run time; a server knows its own context)."""
    settings = get_settings().llm
    if settings.engine == "local":
        refuse_surely_too_long(params, settings.context_tokens)


register(
    JobKind(
        name="reply",
        description=(
            "The assistant's next message in a conversation (messages with role and "
            "content), streamed as `token` events while it is written."
        ),
        params=ReplyParams,
        steps=[Step("reply", reply)],
        max_inputs=0,
        check=check_fits,
        priority="normal",
    )
)
