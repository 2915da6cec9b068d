"""Assembles the FastAPI app; routes live in ``routes/``, logic in the jobs service."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from longplay import __version__
from longplay.api.routes import artifacts, events, jobs, meta, webhooks
from longplay.jobs import refusals
from longplay.kinds import load as load_kinds
from longplay.store.files import UploadTooLarge

ERROR_STATUS: dict[type[Exception], int] = {
    refusals.NotFound: status.HTTP_404_NOT_FOUND,
    refusals.Invalid: status.HTTP_422_UNPROCESSABLE_CONTENT,
    refusals.Conflict: status.HTTP_409_CONFLICT,
    refusals.Forbidden: status.HTTP_403_FORBIDDEN,
    refusals.Unavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
    refusals.RateLimited: status.HTTP_429_TOO_MANY_REQUESTS,
}


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, refusals.ServiceError)
    code = next(c for t, c in ERROR_STATUS.items() if isinstance(exc, t))
    body: dict[str, object] = {"detail": str(exc)}
    if isinstance(exc, refusals.Invalid) and exc.errors:
        body["errors"] = exc.errors
    headers: dict[str, str] = {}
    if isinstance(exc, refusals.RateLimited):
        body["retry_after"] = exc.retry_after
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(body, status_code=code, headers=headers)


async def _too_large(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_413_CONTENT_TOO_LARGE)


def create_app() -> FastAPI:
    load_kinds()  # now, not on the first request
    app = FastAPI(
        title="longplay",
        version=__version__,
        description="Long AI media work as background jobs: submit, follow, download.",
    )
    for router in (jobs.router, events.router, artifacts.router, meta.router, webhooks.router):
        app.include_router(router)
    app.add_exception_handler(refusals.ServiceError, _service_error)
    app.add_exception_handler(UploadTooLarge, _too_large)
    return app
