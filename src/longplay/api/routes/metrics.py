"""``GET /metrics`` for Prometheus, and the middleware that counts and times requests.

The page is the whole deployment's, whichever API process answers: the counts live in
Redis (see :mod:`longplay.jobs.metrics.kept`). It is open unless ``LONGPLAY_METRICS_TOKEN``
is set, the usual way for a scrape on an internal network; set the token (and give it to
Prometheus as ``authorization: {credentials: ...}``) when the API port is reachable from
outside. It is left out of the OpenAPI document: it is for Prometheus, not API clients.
"""

from __future__ import annotations

import hmac
import time

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response, status
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from longplay.jobs import metrics
from longplay.jobs.metrics import catalogue
from longplay.settings import get_settings

router = APIRouter()

UNMATCHED = "<unmatched>"
"""The route label of a request no route took (a 404 scan must not add a label a path)."""


@router.get("/metrics", include_in_schema=False)
async def scrape(request: Request) -> Response:
    """The Prometheus text page: counters and histograms of every process, gauges now."""
    token = get_settings().metrics_token
    if token is not None and not _bearer_is(request, token):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "send the metrics token as 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    page = await run_in_threadpool(metrics.render)
    return Response(content=page, media_type=metrics.CONTENT_TYPE_LATEST)


def _bearer_is(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Compared as bytes: compare_digest refuses str with non-ASCII characters. The
    # header's bytes are what was sent (Starlette decoded them as Latin-1); the token's
    # are its UTF-8, as a client sends a non-ASCII one.
    sent = given.strip().encode("latin-1")
    return scheme.lower() == "bearer" and hmac.compare_digest(sent, token.encode())


class RequestMetrics:
    """Counts each HTTP request by method, route template and status, and times it to
    the end of its response (an event stream's time is how long it was followed)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status_code = 500

        async def sending(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method, route = scope["method"], _template(scope)
            seconds = time.perf_counter() - began
            metrics.REQUESTS.add(
                catalogue.HTTP_REQUESTS.inc(method, route, str(status_code))
                + catalogue.HTTP_LATENCY.observe(seconds, method, route)
            )


def _template(scope: Scope) -> str:
    """The request's route as written (``/v1/jobs/{job_id}``). FastAPI's routes put
    themselves in the scope; a plain Starlette route (the OpenAPI document, the docs) and
    a mount (the dashboard's static files) leave only the endpoint the router matched,
    by which the route is found."""
    route: BaseRoute | None = scope.get("route")
    if route is None and (endpoint := scope.get("endpoint")) is not None:
        routes = getattr(scope.get("app"), "routes", ())
        route = next((r for r in routes if _ends_at(r, endpoint)), None)
    if route is None:
        return UNMATCHED
    path = str(getattr(route, "path", UNMATCHED))
    return f"{path}/{{path}}" if isinstance(route, Mount) else path


def _ends_at(route: BaseRoute, endpoint: object) -> bool:
    """Whether the router, matching ``route``, put ``endpoint`` in the scope: a route's
    endpoint, or a mount's app."""
    return (route.app if isinstance(route, Mount) else getattr(route, "endpoint", None)) is endpoint


def install(app: FastAPI) -> None:
    """Add ``/metrics`` and the request middleware to the app."""
    app.include_router(router)
    app.add_middleware(RequestMetrics)
