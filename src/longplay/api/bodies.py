"""Reading a JSON request body within its limits: a size of its own, far below the
upload limit, refused before the rest is read; and a nesting depth, refused before
anything walks the value (Python's parser would run out of stack at about a thousand).
A text with a NUL character (``\u0000``) is refused too, naming where: PostgreSQL
stores none, and the same request must not pass on SQLite and fail on PostgreSQL."""

from __future__ import annotations

import json
import sys
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


def media_type(request: Request) -> str:
    """The request's ``Content-Type`` without its parameters, in lower case: media
    types are case-insensitive (RFC 9110 8.3.1), ``Application/JSON`` is JSON."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def parse_json(text: str | bytes, loc: Sequence[str]) -> Any:
    """``text`` parsed, no deeper than :data:`MAX_DEPTH` and with no NUL character in
    its texts; ``loc`` says where it came from in a refusal (``("body",)``,
    ``("body", "params")``)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise _too_deep(loc) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _not_json(loc, str(exc)) from exc
    except ValueError as exc:  # an integer longer than Python converts
        digits = sys.get_int_max_str_digits()
        raise _not_json(loc, f"a number has more than {digits} digits") from exc
    if depth(value) > MAX_DEPTH:
        raise _too_deep(loc)
    nul = _nul_at(value, loc) if _may_hold_nul(text) else None
    if nul is not None:
        problem = "must not contain a NUL character (\\u0000)"
        raise Invalid(
            f"{'.'.join(map(str, nul))} {problem}",
            [{"loc": nul, "msg": problem, "type": "nul_character"}],
        )
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


def _may_hold_nul(text: str | bytes) -> bool:
    """Whether parsed ``text`` may hold a NUL, without walking it: JSON writes one only
    as ``\\u0000``, and a body in UTF-16 or UTF-32 (``json.loads`` reads those too) has
    NUL bytes anyway, so it is walked."""
    if isinstance(text, str):
        return "\\u0000" in text
    return b"\\u0000" in text or b"\x00" in text


def _nul_at(value: Any, loc: Sequence[str]) -> list[str | int] | None:
    """Where a text (a string, or an object's key) holding a NUL is in ``value``,
    which came from ``loc``; None if there is none."""
    level: list[tuple[Any, list[str | int]]] = [(value, list(loc))]
    while level:
        item, at = level.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return at
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    return [*at, key]
                level.append((child, [*at, key]))
        elif isinstance(item, list):
            level.extend((child, [*at, index]) for index, child in enumerate(item))
    return None


def _not_json(loc: Sequence[str], reason: str) -> Invalid:
    problem = f"not valid JSON: {reason}"
    return Invalid(
        f"{'.'.join(loc)} is {problem}",
        [{"loc": list(loc), "msg": problem, "type": "json_invalid"}],
    )


def _too_deep(loc: Sequence[str]) -> Invalid:
    problem = f"nests objects and arrays more than {MAX_DEPTH} deep"
    return Invalid(
        f"{'.'.join(loc)} {problem}", [{"loc": list(loc), "msg": problem, "type": "json_too_deep"}]
    )
