"""A JSON answer that a poller can revalidate: an ``ETag`` over its bytes, and a 304
with no body when ``If-None-Match`` names it (RFC 9110 section 13.1.2).

A page polling a job every second sends back the tag it was given (browsers do so by
themselves for ``fetch`` under ``Cache-Control: no-cache``); while nothing it shows
has changed, it is answered in a few bytes instead of the job again."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Request, status
from fastapi.responses import Response
from pydantic import BaseModel

from longplay.api.content import etag_matches

NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "`If-None-Match` names the `ETag` of the current answer: unchanged."}
}


def json_revalidated(request: Request, model: BaseModel) -> Response:
    """``model`` as JSON with its ``ETag``, or a 304 if the client already holds it."""
    body = model.model_dump_json().encode()
    etag = f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
