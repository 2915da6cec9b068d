"""Reading a JSON request body within its limits: a size of its own, far below the
upload limit, refused before the rest is read; and a nesting depth, refused before
anything walks the value (Python's parser would run out of stack at about a thousand).
A text with a NUL character (``\u0000``) is refused too, naming where: PostgreSQL
stores none, and the same request must not pass on SQLite and fail on PostgreSQL. So is
what Python's parser takes and JSON has not (``NaN``, ``Infinity``, a lone surrogate, a
body not in UTF-8): pydantic, which reads the body again, would refuse it with a
message of its own, or store ``NaN`` as ``null``."""

from __future__ import annotations

import codecs
import json
import math
import re
import sys
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from python_multipart.multipart import DEFAULT_MAX_HEADER_SIZE, parse_options_header
from starlette.datastructures import FormData, Headers
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.types import Message

from longplay.api.errors import loc_shown
from longplay.jobs.refusals import Invalid, TooLarge, problems_of
from longplay.settings import get_settings
from longplay.store.files import size_text

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
    refusal = TooLarge(f"{what} may have at most {size_text(told or limit)}")
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
    a broken or cut body as :class:`Invalid` too. A body of another media type reads
    as an empty form. The caller closes the form's files."""
    if media_type(request) != "multipart/form-data":
        return FormData()
    if "boundary=" not in request.headers.get("content-type", "").lower():
        raise _bad_form(
            "its Content-Type has no boundary (multipart/form-data; boundary=...); "
            "let the client library build the body and its header"
        )
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
        form = await parser.parse()
    except MultiPartException as exc:  # the parser's reason, where it gives one
        reason = str(exc.__cause__ or exc.message)
        if reason == "Maximum header size exceeded":  # what a very long file name gives
            raise _bad_form(
                f"a part's header line is longer than {HEADER_LINE_MAX} bytes: give the "
                "file a shorter name"
            ) from None
        raise _bad_form(
            f"{reason}; send parts between the boundary its Content-Type names"
        ) from None
    finally:
        await stream.aclose()
    if not parser.ended:
        await form.close()
        raise _bad_form(
            "it ended before its closing boundary: the upload was cut short, "
            "or the body is malformed"
        )
    return form


HEADER_LINE_MAX = DEFAULT_MAX_HEADER_SIZE
"""The longest header line of a part python-multipart reads (its default)."""

FILE_PARTS = frozenset({"file"})
"""The parts that carry a file, in every form the API reads."""


def _bad_form(problem: str) -> Invalid:
    return Invalid(
        f"the body is not valid multipart/form-data: {problem}",
        [{"loc": ["body"], "msg": problem, "type": "multipart_invalid"}],
    )


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
        self.ended = False
        """Whether the closing boundary came: a body cut short has none."""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._current_part.content_disposition)
        if b"name" not in options:
            raise _bad_form(
                'a part has no name in its Content-Disposition header (form-data; name="...")'
            )
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
        if name in FILE_PARTS and self._current_part.file is None:
            problem = (
                "the part has no file name (filename= in its Content-Disposition), so it was "
                f"read as a text field; send a file: curl -F {name}=@PATH"
            )
            raise Invalid(
                f"{name}: {problem}",
                [{"loc": ["body", name], "msg": problem, "type": "not_a_file"}],
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is None:  # text, held in memory
            name = self._current_part.field_name
            if len(self._current_part.data) + end - start > self.max_part_size:
                raise TooLarge(
                    f"the form field {name} may have at most {size_text(self.max_part_size)}"
                )
            self.text_bytes += end - start
            if self.text_bytes > self.max_text_bytes:
                raise TooLarge(
                    f"the form's text fields may have at most {size_text(self.max_text_bytes)} "
                    "together"
                )
        super().on_part_data(data, start, end)

    def on_part_end(self) -> None:
        """A text part must be in the form's charset (UTF-8 unless it names another):
        Starlette reads one that is not as Latin-1, and would store its bytes as other
        characters than were sent."""
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode(self._charset)
            except UnicodeDecodeError as exc:
                problem = (
                    f"is not {_charset_name(self._charset)} text: {exc.reason} at byte {exc.start}"
                )
                raise Invalid(
                    f"{part.field_name} {problem}",
                    [{"loc": ["body", part.field_name], "msg": problem, "type": "unicode_invalid"}],
                ) from None
        super().on_part_end()

    def on_end(self) -> None:
        self.ended = True
        super().on_end()


def _charset_name(charset: str) -> str:
    """``utf-8`` as people write it, ``UTF-8``; another charset as Python names it."""
    return "UTF-8" if charset == "utf-8" else charset


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
        raise refusal_of(exc) from exc


def refusal_of(
    exc: ValidationError, *, code: str | None = None, at: Sequence[str] = ("body",)
) -> Invalid:
    """Pydantic's refusal of a body (or of a part of it, ``at``) as :class:`Invalid`: the
    first problem, where it is and what, as the message; each one, placed under ``at``,
    as its details."""
    problems = problems_of(exc, at)
    first = problems[0]
    where = ".".join(map(str, loc_shown(first["loc"])))
    return Invalid(f"{where}: {first['msg']}", problems, code=code)


def media_type(request: Request) -> str:
    """The request's ``Content-Type`` without its parameters, in lower case: media
    types are case-insensitive (RFC 9110 8.3.1), ``Application/JSON`` is JSON."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def parse_json(text: str | bytes, loc: Sequence[str]) -> Any:
    """``text`` parsed, no deeper than :data:`MAX_DEPTH`, in UTF-8 (bytes), and with
    nothing JSON has not in it (``NaN``, ``Infinity``, a lone surrogate) nor a NUL
    character in its texts; ``loc`` says where it came from in a refusal
    (``("body",)``, ``("body", "params")``)."""
    if isinstance(text, bytes):
        text = _utf8(text, loc)
    not_finite: list[str] = []  # as written: NaN, -Infinity, 1e400

    def number(written: str) -> float:
        value = float(written)
        if not math.isfinite(value):
            not_finite.append(written)
        return value

    twice: list[str] = []  # the first key an object has twice, which json takes the last of

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        kept = dict(items)
        if len(kept) < len(items) and not twice:
            counted = Counter(key for key, _ in items)
            twice.append(next(key for key, times in counted.items() if times > 1))
        return kept

    try:
        value = json.loads(text, parse_float=number, parse_constant=number, object_pairs_hook=pairs)
    except RecursionError:
        raise _too_deep(loc) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _not_json(loc, str(exc)) from exc
    except ValueError as exc:  # an integer longer than Python converts
        digits = sys.get_int_max_str_digits()
        raise _not_json(loc, f"a number has more than {digits} digits") from exc
    if depth(value) > MAX_DEPTH:
        raise _too_deep(loc)
    if twice:  # a proxy or a log may have read the first one: say, rather than guess
        problem = f"has the key {twice[0]!r} twice in one object; send each key once"
        raise _invalid_at(list(loc), problem, "json_invalid")
    if not_finite:
        at = _place(value, loc, _not_finite)
        problem = f"is {not_finite[0]}: JSON has no NaN or Infinity; send a finite number"
        raise _invalid_at(at or list(loc), problem, "json_invalid")
    surrogate = _place(value, loc, _lone_surrogate) if "\\u" in text else None
    if surrogate is not None:
        problem = "holds a lone surrogate (\\ud800 to \\udfff without its pair), no character"
        raise _invalid_at(surrogate, problem, "json_invalid")
    nul = _place(value, loc, _has_nul) if "\\u0000" in text else None
    if nul is not None:
        raise _invalid_at(nul, "must not contain a NUL character (\\u0000)", "nul_character")
    return value


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
"""Half of a UTF-16 pair: Python reads ``"\\ud800"`` as one, which no UTF-8 text holds."""


def _utf8(body: bytes, loc: Sequence[str]) -> str:
    """A body as the UTF-8 text JSON is sent in (RFC 8259 8.1); Python's parser would
    take a byte order mark, UTF-16 or UTF-32 too, which pydantic, reading it again, does not."""
    if body.startswith(codecs.BOM_UTF8):
        raise _not_json(loc, "it starts with a byte order mark (BOM); send UTF-8 without one")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_json(loc, f"it is not UTF-8 ({exc.reason} at byte {exc.start})") from None


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


def _not_finite(item: Any) -> bool:
    return isinstance(item, float) and not math.isfinite(item)


def _lone_surrogate(item: Any) -> bool:
    return isinstance(item, str) and _LONE_SURROGATE.search(item) is not None


def _has_nul(item: Any) -> bool:
    return isinstance(item, str) and "\x00" in item


def _place(value: Any, loc: Sequence[str], found: Callable[[Any], bool]) -> list[str | int] | None:
    """Where the first scalar or object key in ``value`` (which came from ``loc``) that
    is ``found`` is; None if there is none."""
    level: list[tuple[Any, list[str | int]]] = [(value, list(loc))]
    while level:
        item, at = level.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if found(key):
                    return [*at, key]
                level.append((child, [*at, key]))
        elif isinstance(item, list):
            level.extend((child, [*at, index]) for index, child in enumerate(item))
        elif isinstance(item, (str, float)) and found(item):
            return at
    return None


def _invalid_at(at: Sequence[str | int], problem: str, kind: str) -> Invalid:
    return Invalid(
        f"{'.'.join(map(str, at))} {problem}", [{"loc": list(at), "msg": problem, "type": kind}]
    )


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
