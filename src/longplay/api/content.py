"""A stored file's bytes as HTTP (RFC 9110) wants them served: ``HEAD``, ``ETag`` with
``If-None-Match`` (304), one byte range (206, or 416 when none of it exists),
``If-Range``, and the file's name in ``Content-Disposition`` (RFC 6266) in any script.

Starlette's ``FileResponse`` answers an invalid ``Range`` with 400 and knows no
``If-None-Match``, hence this module. What it does with ``Range``:

- An invalid header (``bytes=5-2``, ``abc``, ``items=0-5``, a position of more than
  :data:`MAX_DIGITS` digits) is ignored: 200, whole file.
- Ranges none of which start inside the file: 416 with ``Content-Range: bytes */size``.
- Several ranges are merged where they overlap or touch; if more than one span is
  left, the header is ignored (RFC 9110 lets a server do so) rather than answered with
  ``multipart/byteranges``, which players do not ask for.
- ``HEAD`` ignores ``Range``, as RFC 9110 defines ranges for ``GET`` only.
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from urllib.parse import quote

import anyio
from fastapi import Request, status
from fastapi.responses import JSONResponse, Response, StreamingResponse

from longplay.api.errors import error_body

CHUNK = 256 * 1024
MAX_RANGES = 100
"""More range specs than this in one header are a waste of effort: the header is ignored."""
MAX_DIGITS = 19
"""Digits a byte position may have: enough for any file (2**63 has 19); a longer one
is not a position but a header to ignore (Python refuses to read past 4300)."""
_RANGE_SPEC = re.compile(rf"([0-9]{{0,{MAX_DIGITS}}})-([0-9]{{0,{MAX_DIGITS}}})")
_RFC5987_SAFE = "!#$&+-.^_`|~"
"""The ``attr-char`` of RFC 5987 that are not letters or digits: left as they are."""


class Unsatisfiable(Exception):
    """No range asked for starts inside the file."""


@dataclass(frozen=True)
class Span:
    """Bytes ``start`` up to, not including, ``end``."""

    start: int
    end: int


def requested_span(header: str | None, size: int) -> Span | None:
    """The part of a ``size``-byte file a ``Range`` header asks for; None for the whole.

    None too for a header that is invalid, names another unit, or asks for spans that
    do not merge into one. Raises :class:`Unsatisfiable` when it is valid but no range
    in it starts inside the file.
    """
    if header is None:
        return None
    unit, sep, ranges = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs = [s for s in (s.strip() for s in ranges.split(",")) if s]  # empty ones do not count
    if not specs or len(specs) > MAX_RANGES:
        return None
    spans: list[Span] = []
    for spec in specs:
        match = _RANGE_SPEC.fullmatch(spec)
        if match is None or match.group(0) == "-":
            return None
        first, last = match.groups()
        if first and last and int(last) < int(first):
            return None  # invalid, not unsatisfiable (RFC 9110 14.1.1)
        span = _span(first, last, size)
        if span is not None:
            spans.append(span)
    if not spans:
        raise Unsatisfiable
    spans.sort(key=lambda s: s.start)
    merged = spans[0]
    for span in spans[1:]:
        if span.start > merged.end:
            return None
        merged = Span(merged.start, max(merged.end, span.end))
    return merged


def _span(first: str, last: str, size: int) -> Span | None:
    """One valid range spec as a span of the file; None where it lies outside."""
    if not first:  # the last ``last`` bytes
        length = int(last)
        return Span(max(0, size - length), size) if length > 0 and size > 0 else None
    start = int(first)
    if start >= size:
        return None
    return Span(start, min(size, int(last) + 1) if last else size)


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison) or is ``*``."""
    if header is None:
        return False
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in (t.removeprefix("W/") for t in tags)


def content_disposition(name: str) -> str:
    """``attachment`` with the name in ``filename*`` (UTF-8, any script) and a plain
    ASCII ``filename`` for clients that know no better (RFC 6266 section 4.3), such as
    ``curl -O -J``: :func:`ascii_name`."""
    return (
        f'attachment; filename="{ascii_name(name)}"; '
        f"filename*=UTF-8''{quote(name, safe=_RFC5987_SAFE)}"
    )


_FALLBACK_CHARACTERS = frozenset(string.ascii_letters + string.digits + " !#$&'()+,-.=@[]^_`{}~")
"""What a plain ``filename`` keeps: printable ASCII less what a header's quoted string
or a file name on Windows cannot hold (``"\\/:*?<>|``), ``;`` and ``%`` (some clients
decode ``%XX`` in it)."""
_LATIN_LETTERS = str.maketrans(
    {
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "đ": "d",
        "Đ": "D",
        "ł": "l",
        "Ł": "L",
        "þ": "th",
        "Þ": "Th",
        "\u0131": "i",  # the dotless i
    }
)
"""Latin letters that Unicode does not decompose into an ASCII letter and a mark."""
_UNSAFE_RUN = re.compile(f"[^{re.escape(''.join(sorted(_FALLBACK_CHARACTERS)))}]+")


def ascii_name(name: str) -> str:
    """The name for a plain ``filename``: its accents dropped (``café`` is ``cafe``,
    composed or not), any other character it cannot keep an ``_``. Where that loses
    more of the name than it keeps of its letters and digits (Chinese, Cyrillic), the
    name is a short hash of the whole name instead, with the extension: files of
    different names still get different ones (``3f1c9a2e.ogg``)."""
    ext = PurePath(name).suffix
    stem, lost = _to_ascii(name[: len(name) - len(ext)])
    kept = sum(c.isalnum() for c in stem)
    ascii_ext, ext_lost = _to_ascii(ext)
    if lost > kept or not stem:
        stem = hashlib.sha256(name.encode()).hexdigest()[:8]
    return stem + (ascii_ext if not ext_lost else "")


def _to_ascii(text: str) -> tuple[str, int]:
    """``text`` in the characters of :data:`_FALLBACK_CHARACTERS`, each run of others an
    ``_``, and how many characters that replaced (combining marks do not count)."""
    letters = unicodedata.normalize("NFKD", text.translate(_LATIN_LETTERS))
    bare = "".join(c for c in letters if not unicodedata.combining(c))
    lost = sum(c not in _FALLBACK_CHARACTERS for c in bare)
    return _UNSAFE_RUN.sub("_", bare), lost


_UTF8_TEXT_TYPES = frozenset({"application/x-subrip"})
"""Text types outside ``text/`` that are served with ``charset=utf-8``, as Starlette
serves every ``text/`` type. Without it a player reads SubRip as Latin-1. JSON is UTF-8
by definition (RFC 8259) and XML says its encoding itself."""


def served_type(media_type: str) -> str:
    """The ``Content-Type`` a file of ``media_type`` is served with."""
    if media_type.lower() in _UTF8_TEXT_TYPES:
        return f"{media_type}; charset=utf-8"
    return media_type


def file_response(
    request: Request, path: Path, *, size: int, etag: str, media_type: str, name: str
) -> Response:
    """The answer to a ``GET`` or ``HEAD`` of the file at ``path`` (``size`` bytes)."""
    validators = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=validators)
    span = None
    if request.method == "GET" and _range_applies(request.headers.get("if-range"), etag):
        try:
            span = requested_span(request.headers.get("range"), size)
        except Unsatisfiable:
            return _unsatisfiable(size, validators)
    headers = {
        **validators,
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(name),
    }
    code = status.HTTP_200_OK
    if span is None:
        span = Span(0, size)
    else:
        code = status.HTTP_206_PARTIAL_CONTENT
        headers["Content-Range"] = f"bytes {span.start}-{span.end - 1}/{size}"
    headers["Content-Length"] = str(span.end - span.start)
    served = served_type(media_type)
    if request.method == "HEAD":
        return Response(status_code=code, headers=headers, media_type=served)
    return StreamingResponse(
        _read(path, span), status_code=code, headers=headers, media_type=served
    )


def _range_applies(if_range: str | None, etag: str) -> bool:
    """``If-Range``: send the range only if the file is still the one the client has,
    by a strong comparison of entity tags; a date never matches (no Last-Modified)."""
    return if_range is None or if_range.strip() == etag


def _unsatisfiable(size: int, headers: dict[str, str]) -> Response:
    return JSONResponse(
        error_body(
            "range_not_satisfiable", f"no range asked for starts inside the file's {size} bytes"
        ),
        status_code=status.HTTP_416_RANGE_NOT_SATISFIABLE,
        headers={**headers, "Content-Range": f"bytes */{size}"},
    )


async def _read(path: Path, span: Span) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as file:
        await file.seek(span.start)
        left = span.end - span.start
        while left > 0:
            chunk = await file.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
