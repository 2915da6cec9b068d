"""The dashboard's routes and assets, added to the API's app by :func:`mount`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from longplay.dashboard import admin, auth, collections, flows, jobs, live, sessions, submit, web
from longplay.dashboard.web import HERE, see_other

home = APIRouter(include_in_schema=False)


@home.get("/")
async def index(request: Request) -> Response:
    """The jobs list when signed in, else the sign-in form (it comes back here)."""
    return see_other("/jobs" if request.cookies.get(sessions.COOKIE) else "/login")


@home.get("/favicon.ico")
async def favicon() -> FileResponse:
    """The site's icon where a browser looks for it unasked (pages name it in a
    ``<link rel=icon>``): the same small SVG, so no page logs a 404 for it."""
    return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml")


ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


def pages_for_browsers(handler: ErrorHandler) -> ErrorHandler:
    """The API's ``handler`` of an error raised before or around any page's own
    handling (an address no route has, a form's address opened as a page, a body the
    parser refuses), answering a browser that asks for a page with one
    (:func:`web.asks_for_page`), and everyone else with the API's JSON."""

    async def handle(request: Request, exc: Exception) -> Response:
        answer = await handler(request, exc)
        return web.as_page(request, answer) if web.asks_for_page(request) else answer

    return handle


def mount(app: FastAPI) -> None:
    """Serve the dashboard from ``app``: pages at ``/``, assets under ``/static``."""
    for router in (
        home,
        auth.router,
        jobs.router,
        flows.router,
        submit.router,
        collections.router,
        live.router,
        admin.router,
    ):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")
