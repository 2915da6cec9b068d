"""Reading a JSON request body within its limits: a size of its own, far below the
upload limit, refused before the rest is read; and a nesting depth, refused before
anything walks the value (Python's parser would run out of stack at about a thousand).
A text with a NUL character (``\u0000``) is refused too, naming where: PostgreSQL
stores none, and the same request must not pass on SQLite and fail on PostgreSQL."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, Headers
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.types import Message

from longplay.jobs.refusals import Invalid, TooLarge
from longplay.settings import get_settings

M = TypeVar("M", bound=BaseModel)
MAX_DEPTH = 32
"""Objects and arrays inside each other; a job's parameters need a few."""


def limited(request: Request, limit: int, what: str, *, told: int | None = None) -> Request:
    """``request`` whose body may be at most ``limit`` bytes: a ``Content-Length`` over
    it is refused (:class:`TooLarge`) before a byte is read, a body that runs past it
    as soon as it does; ``what`` names the limit in the refusal, and ``told`` is the
    number it says where that is not ``limit`` (the limit an operator set, where the
    body may have a little more).

    Not the route's ``max_body_size``: Starlette's limiter answers over-long requests
    with a plain-text 413 of its own, in place of the API's one error shape."""
    refusal = TooLarge(f"{what} may have at most {told or limit} bytes")
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


FORM_TEXT_ALLOWANCE = 64 * 1024
"""What a form's short text fields (ids, dates, a URL) may add to its one long one."""


async def read_form(
    request: Request,
    what: str,
    parts: Mapping[str, int],
    *,
    max_part_size: int,
    max_text_bytes: int,
) -> FormData:
    """A multipart body (already :func:`limited`) read within bounds that are checked
    as it streams, before the rest is read: only the part names in ``parts``, each at
    most that many times; a text part at most ``max_part_size`` bytes, all of them
    together at most ``max_text_bytes`` (files go to disk, text stays in memory).
    A stranger or one part too many is refused as :class:`Invalid` naming it (and
    ``what`` form's fields: "a submission's"), text over a limit as :class:`TooLarge`,
    a broken body as Starlette's own 400. A body of another media type reads as an
    empty form. The caller closes the form's files."""
    if media_type(request) != "multipart/form-data":
        return FormData()
    stream = request.stream()
    parser = _BoundedParser(
        request.headers,
        stream,
        what=what,
        parts=parts,
        max_part_size=max_part_size,
        max_text_bytes=max_text_bytes,
    )
    try:
        return await parser.parse()
    except MultiPartException as exc:  # what Request.form() answers it with
        raise HTTPException(status_code=400, detail=exc.message) from None
    finally:
        await stream.aclose()


class _BoundedParser(MultiPartParser):
    """Starlette's multipart parser, with the checks of :func:`read_form` made as each
    part starts and as its text arrives. Starlette counts a part before this names it,
    so its own ``max_files`` and ``max_fields`` are one past all the parts allowed: a
    backstop that this refusal, which names the field, always comes before."""

    def __init__(
        self,
        headers: Headers,
        stream: AsyncGenerator[bytes, None],
        *,
        what: str,
        parts: Mapping[str, int],
        max_part_size: int,
        max_text_bytes: int,
    ) -> None:
        most = sum(parts.values()) + 1
        super().__init__(
            headers, stream, max_files=most, max_fields=most, max_part_size=max_part_size
        )
        self.what = what
        self.parts = parts
        self.seen: dict[str, int] = {}
        self.text_bytes = 0
        self.max_text_bytes = max_text_bytes

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        name = self._current_part.field_name
        allowed = self.parts.get(name, 0)
        self.seen[name] = self.seen.get(name, 0) + 1
        if not allowed:
            problem = f"unknown field; {self.what} fields are {', '.join(sorted(self.parts))}"
            raise Invalid(
                f"{name}: {problem}",
                [{"loc": ["body", name], "msg": problem, "type": "extra_forbidden"}],
            )
        if self.seen[name] > allowed:
            problem = f"at most {allowed} part{'s' if allowed > 1 else ''} named {name!r}"
            raise Invalid(
                f"{name}: {problem}",
                [{"loc": ["body", name], "msg": problem, "type": "too_many_parts"}],
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is None:  # text, held in memory
            name = self._current_part.field_name
            if len(self._current_part.data) + end - start > self.max_part_size:
                raise TooLarge(f"the form field {name} may have at most {self.max_part_size} bytes")
            self.text_bytes += end - start
            if self.text_bytes > self.max_text_bytes:
                raise TooLarge(
                    f"the form's text fields may have at most {self.max_text_bytes} bytes together"
                )
        super().on_part_data(data, start, end)


async def read_json_body(request: Request, *, empty: bytes | None = None) -> tuple[Any, bytes]:
    """The request's JSON body, read up to the JSON limit (``LONGPLAY_MAX_JSON_BYTES``)
    and parsed (no deeper than :data:`MAX_DEPTH`); with its bytes, for :func:`validated`.
    ``empty``: what a route whose body is optional reads when none was sent."""
    limit = get_settings().api.max_json_bytes
    body = await limited(request, limit, "a JSON body (LONGPLAY_MAX_JSON_BYTES)").body()
    if empty is not None and not body.strip():
        body = empty
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
