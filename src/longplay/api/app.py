"""Assembles the FastAPI app; routes live in ``routes/``, logic in the jobs service.

Every error leaves in the one shape of :mod:`longplay.api.errors`, whoever raised it:
the service (a refusal), FastAPI (a request that does not validate, a missing key, a
body over its limit), the database (a value it cannot store, 422) or a bug (500, with
nothing of its insides). The docs pages (``/docs``, ``/redoc``) load Swagger UI and
ReDoc from files installed with the ``fastapi-offline`` package, so they work on a
machine with no internet.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import DataError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from longplay import __version__
from longplay.api import openapi, outages
from longplay.api.errors import CODES, error_body, validation_details
from longplay.api.followers import EventHub, end_streams_on_stop
from longplay.api.routes import (
    artifacts,
    collections,
    events,
    flows,
    jobs,
    meta,
    metrics,
    templates,
    viewer_tokens,
    webhooks,
)
from longplay.api.routes.events import StreamEnded
from longplay.dashboard import app as dashboard
from longplay.jobs import refusals
from longplay.jobs.metrics import REQUESTS
from longplay.jobs.outages import REDIS_DOWN, STORAGE_FULL, STORE_DOWN, part_down, storage_full
from longplay.jobs.webhooks import delivery, relay
from longplay.kinds import load as load_kinds
from longplay.settings import get_settings
from longplay.store.files import UploadTooLarge

log = logging.getLogger(__name__)

ERROR_STATUS: dict[type[refusals.ServiceError], int] = {
    refusals.Gone: status.HTTP_410_GONE,
    refusals.NotFound: status.HTTP_404_NOT_FOUND,
    refusals.Invalid: status.HTTP_422_UNPROCESSABLE_CONTENT,
    refusals.Conflict: status.HTTP_409_CONFLICT,
    refusals.Forbidden: status.HTTP_403_FORBIDDEN,
    refusals.Unavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
    refusals.RateLimited: status.HTTP_429_TOO_MANY_REQUESTS,
    refusals.TooLarge: status.HTTP_413_CONTENT_TOO_LARGE,
}


def _answer(
    status_code: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status_code, headers=headers)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, refusals.ServiceError)
    code = next(c for t, c in ERROR_STATUS.items() if isinstance(exc, t))
    details = validation_details(exc.errors) if isinstance(exc, refusals.Invalid) else None
    headers: dict[str, str] = {}
    if isinstance(exc, refusals.RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    body = error_body(exc.code, str(exc), retryable=exc.retryable, details=details)
    return _answer(code, body, headers)


async def _stream_ended(request: Request, exc: Exception) -> Response:
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _too_large(request: Request, exc: Exception) -> JSONResponse:
    return _answer(status.HTTP_413_CONTENT_TOO_LARGE, error_body("too_large", str(exc)))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's and Starlette's own: a missing key (401), an unknown route (404), a
    method not allowed (405), an unreadable body (400), a body over the limit (413)."""
    assert isinstance(exc, HTTPException)
    code = CODES.get(exc.status_code, "error")
    body = error_body(code, str(exc.detail), retryable=True if exc.status_code == 503 else None)
    headers = dict(exc.headers or {})
    if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        headers["Allow"] = ", ".join(_methods_of(request))
    return _answer(exc.status_code, body, headers)


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def _methods_of(request: Request) -> list[str]:
    """Every method the request's path takes, by asking each route whether it takes
    the path with that method: Starlette's own ``Allow`` names only those of the first
    route on the path, and included routers hide their routes behind one of their own.
    Where the API's documented paths say which path it is, only its methods count:
    ``/v1/jobs/retry`` is that path, though ``/v1/jobs/{job_id}`` would take it too."""
    taken = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.routes
        )
    ]
    documented = _documented_methods(request.app, request.url.path)
    return taken if documented is None else [m for m in taken if m in documented]


def _documented_methods(app: FastAPI, path: str) -> set[str] | None:
    """The methods of the documented path that ``path`` is, the one with the most
    literal segments where several fit; None where none does (the dashboard's pages)."""
    fitting = [
        (literals, methods) for pattern, literals, methods in _paths(app) if pattern.fullmatch(path)
    ]
    return max(fitting, key=lambda fit: fit[0])[1] if fitting else None


def _paths(app: FastAPI) -> list[tuple[re.Pattern[str], int, set[str]]]:
    """The OpenAPI document's paths as patterns, with their literal segments and methods."""
    found: list[tuple[re.Pattern[str], int, set[str]]] | None = getattr(app.state, "paths", None)
    if found is None:
        found = []
        for template, operations in app.openapi()["paths"].items():
            pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
            literals = sum(1 for part in template.split("/") if part and "{" not in part)
            found.append((re.compile(pattern), literals, {m.upper() for m in operations}))
        app.state.paths = found
    return found


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc.errors())
    first = details[0] if details else None
    where = ".".join(str(p) for p in first["loc"]) if first else "the request"
    message = f"{where}: {first['message']}" if first else "the request is not valid"
    return _answer(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        error_body("invalid_request", message, details=details),
    )


async def _unstorable(request: Request, exc: Exception) -> JSONResponse:
    """A value the database refused to take or compare (PostgreSQL: a NUL character in
    a text, a number out of range) that no check caught before: the request's fault,
    told without the SQL or the value."""
    assert isinstance(exc, DataError)
    log.info("refused %s %s: %s", request.method, request.url.path, type(exc.orig).__name__)
    return _answer(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        error_body("invalid_request", outages.UNSTORABLE),
    )


async def _part_down(request: Request, exc: Exception) -> JSONResponse:
    """The store or Redis did not answer this request: a 503 the client may retry, and
    one line in the log. Anything else raised as one (a missing table, a wrong Redis
    password) is a fault: a 500."""
    part = part_down(exc)
    if part is None:
        return await _internal_error(request, exc)
    outages.log_outage(request, part, exc)
    return _answer(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        error_body("unavailable", f"{part} did not answer; try again shortly", retryable=True),
        headers={"Retry-After": outages.RETRY_AFTER},
    )


STORAGE_FULL_SAID = (
    f"{STORAGE_FULL} (the disk of its data folder, or of its database); nothing was "
    "changed, try again once its operator has freed space"
)

CLIENT_CLOSED = 499
"""The status nginx logs for a client that closed its request before it was answered."""


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    """The client went away before its request was read (an upload cut off by a lost
    connection): no fault of the service, so no 500 and no traceback, one line; nobody
    reads the answer, which says so for the access log and the metrics. What the
    request had written (a partial upload) was removed by the code that wrote it."""
    log.info(
        "%s %s: the client went away before its request was read", request.method, request.url.path
    )
    return _answer(
        CLIENT_CLOSED,
        error_body("client_closed_request", "the client closed the request before it was read"),
    )


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug: the log has the traceback, the client a plain word that says so. Or a
    full disk, which is no bug: a 507 to retry once space is freed, and one line."""
    if storage_full(exc):
        outages.log_storage_full(request, exc)
        return _answer(
            status.HTTP_507_INSUFFICIENT_STORAGE,
            error_body("storage_full", STORAGE_FULL_SAID, retryable=True),
            headers={"Retry-After": outages.RETRY_AFTER_FULL},
        )
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _answer(
        status.HTTP_500_INTERNAL_SERVER_ERROR,
        error_body("internal_error", "the service failed on this request; it is logged"),
    )


class Unforeseen:
    """Answers a bug as :func:`_internal_error` does, inside the CORS middleware: the
    app's handler of last resort runs outside every middleware, so its 500 went out
    without CORS headers, and a page on another origin saw only a failed fetch, not
    the error. A bug after the answer began is left to the server, which cuts it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        began = False

        async def sending(message: Message) -> None:
            nonlocal began
            began = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if began or scope["type"] != "http":
                raise
            response = await _internal_error(Request(scope, receive), exc)
            await response(scope, receive, send)


_refused = dashboard.pages_for_browsers(_http_error)
"""What refuses a request before any route handles it: a page for a browser's, else JSON."""


class EncodedSlashes:
    """Answers a path with an encoded slash (``%2F``) in a segment as a ``404``: the
    server decodes the path before routing, so ``/v1/jobs/job_1%2Fattempts``, a job id
    with a slash in it, would reach job_1's attempts. No id has a slash, so nothing
    such a path names exists."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and b"%2f" in scope.get("raw_path", b"").lower():
            problem = "no such thing: an id in this path holds an encoded slash (%2F)"
            response = await _refused(
                Request(scope, receive), HTTPException(status.HTTP_404_NOT_FOUND, problem)
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    hub = app.state.event_hub = EventHub(get_settings().effective_redis_url)
    restore = end_streams_on_stop(hub)
    try:
        yield
    finally:
        restore()
        await hub.close()
        # The requests of the last second, before uvicorn ends the process by the
        # signal it caught again (so no atexit hook runs).
        await run_in_threadpool(REQUESTS.flush)


CORS_EXPOSED = [
    "Allow",
    "WWW-Authenticate",
    "Retry-After",
    "Location",
    "Content-Disposition",
    "Content-Range",
    "Accept-Ranges",
    "ETag",
    jobs.DEDUPLICATED_HEADER,
]
"""The answer headers a page on an allowed origin may read (besides the simple ones)."""


def create_app() -> FastAPI:
    load_kinds()  # now, not on the first request; the OpenAPI document lists them
    relay.sends_with(delivery.deliver)  # a cancel's webhook goes from this process
    app = FastAPIOffline(
        lifespan=_lifespan,
        title="longplay",
        version=__version__,
        description="Long AI media work as background jobs: submit, follow, download.\n\n"
        'Every error answers `{"error": {"code", "message", "retryable", "details"?}}`.',
    )
    for router in (jobs.router, events.router, artifacts.router, meta.router, webhooks.router):
        app.include_router(router)
    app.include_router(flows.router)
    app.include_router(templates.router)
    app.include_router(collections.router)
    app.include_router(viewer_tokens.router)
    dashboard.mount(app)
    app.add_middleware(Unforeseen)  # the innermost: the request metrics count its 500
    metrics.install(app)
    app.add_middleware(EncodedSlashes)  # inside CORS, whose headers its 404 gets
    if origins := get_settings().api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "If-None-Match",
                "Last-Event-ID",
                "Range",
                # Sent by some HTTP libraries with every request; the API ignores them.
                "Cache-Control",
                "Pragma",
                "X-Requested-With",
            ],
            expose_headers=CORS_EXPOSED,
            max_age=600,
        )
    app.add_exception_handler(StreamEnded, _stream_ended)
    app.add_exception_handler(refusals.ServiceError, _service_error)
    app.add_exception_handler(UploadTooLarge, _too_large)
    app.add_exception_handler(HTTPException, _refused)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(DataError, _unstorable)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    for down in (*STORE_DOWN, *REDIS_DOWN):
        app.add_exception_handler(down, _part_down)
    app.add_exception_handler(Exception, _internal_error)
    app.openapi = lambda: openapi.document(app)  # type: ignore[method-assign]
    return app
