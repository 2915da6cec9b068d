"""Reading a JSON request body within its limits: a size of its own, far below the
upload limit, refused before the rest is read; and a nesting depth, refused before
anything walks the value (Python's parser would run out of stack at about a thousand)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import Message

from longplay.jobs.refusals import Invalid, TooLarge
from longplay.settings import get_settings

M = TypeVar("M", bound=BaseModel)
MAX_DEPTH = 32
"""Objects and arrays inside each other; a job's parameters need a few."""


def limited(request: Request, limit: int, what: str) -> Request:
    """``request`` whose body may be at most ``limit`` bytes: a ``Content-Length`` over
    it is refused (:class:`TooLarge`) before a byte is read, a body that runs past it
    as soon as it does; ``what`` names the limit in the refusal.

    Not the route's ``max_body_size``: Starlette's limiter answers over-long requests
    with a plain-text 413 of its own, in place of the API's one error shape."""
    refusal = TooLarge(f"{what} may have at most {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise refusal
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise refusal
        return message

    return Request(request.scope, receive)


async def read_json_body(request: Request) -> tuple[Any, bytes]:
    """The request's JSON body, read up to the JSON limit (``LONGPLAY_MAX_JSON_BYTES``)
    and parsed (no deeper than :data:`MAX_DEPTH`); with its bytes, for :func:`validated`."""
    limit = get_settings().api.max_json_bytes
    body = await limited(request, limit, "a JSON body (LONGPLAY_MAX_JSON_BYTES)").body()
    return parse_json(body, ("body",)), body


def validated(model: type[M], body: bytes) -> M:
    """A JSON body (checked by :func:`read_json_body`) as ``model``, strictly: a value of
    another JSON type than the schema says (``0`` for a boolean, ``"5"`` for a number)
    is refused, not coerced; :class:`Invalid` names each field."""
    try:
        return model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False, include_context=False)
        first = problems[0]
        raise Invalid(
            f"{'.'.join(map(str, ['body', *first['loc']]))}: {first['msg']}",
            [{**p, "loc": ["body", *p["loc"]]} for p in problems],
        ) from exc


def parse_json(text: str | bytes, loc: Sequence[str]) -> Any:
    """``text`` parsed, no deeper than :data:`MAX_DEPTH`; ``loc`` says where it came
    from in a refusal (``("body",)``, ``("body", "params")``)."""
    where = ".".join(loc)
    try:
        value = json.loads(text)
    except RecursionError:
        raise _too_deep(loc) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problem = f"not valid JSON: {exc}"
        raise Invalid(
            f"{where} is {problem}", [{"loc": list(loc), "msg": problem, "type": "json_invalid"}]
        ) from exc
    if depth(value) > MAX_DEPTH:
        raise _too_deep(loc)
    return value


def depth(value: Any) -> int:
    """How deep objects and arrays nest in ``value`` (a scalar: 0), without recursion."""
    deepest, level = 0, [(value, 1)]
    while level:
        item, d = level.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, d)
        if d <= MAX_DEPTH:  # past the limit the answer is known
            level.extend((child, d + 1) for child in children)
    return deepest


def _too_deep(loc: Sequence[str]) -> Invalid:
    problem = f"nests objects and arrays more than {MAX_DEPTH} deep"
    return Invalid(
        f"{'.'.join(loc)} {problem}", [{"loc": list(loc), "msg": problem, "type": "json_too_deep"}]
    )
