"""What every dashboard page shares: templates, the signed-in viewer, errors as pages.

Templates autoescape everything; nothing a user or a model wrote is ever marked
safe (the one HTML built in Python is Markdown rendered with raw HTML disabled, see
:mod:`longplay.dashboard.results`). Each page also says so to the browser: a
Content-Security-Policy allows scripts, styles and media from this origin only, so an
injected ``<script>`` or ``onerror=`` would not run even if it got through.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from fastapi import Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException

from longplay.api import outages
from longplay.api.deps import in_store
from longplay.dashboard import sessions
from longplay.dashboard.sessions import Viewer
from longplay.framework.errors import MENDED_BY_SETTINGS, same_result_again
from longplay.jobs import refusals
from longplay.jobs.outages import STORAGE_FULL, part_down, storage_full
from longplay.store.files import UploadTooLarge
from longplay.store.views import ErrorPublic, JobPublic, OutputRef

log = logging.getLogger(__name__)
T = TypeVar("T")
HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; media-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_STATUS_OF: list[tuple[type[refusals.ServiceError], int]] = [
    (refusals.Gone, status.HTTP_410_GONE),
    (refusals.NotFound, status.HTTP_404_NOT_FOUND),
    (refusals.Invalid, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (refusals.Conflict, status.HTTP_409_CONFLICT),
    (refusals.Forbidden, status.HTTP_403_FORBIDDEN),
    (refusals.RateLimited, status.HTTP_429_TOO_MANY_REQUESTS),
    (refusals.TooLarge, status.HTTP_413_CONTENT_TOO_LARGE),
    (refusals.Unavailable, status.HTTP_503_SERVICE_UNAVAILABLE),
]


def _as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; one without a zone (SQLite's) is UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _until(moment: datetime | None) -> str:
    """How long until ``moment`` ("in 5 min"), or "" when it is not to come."""
    if moment is None:
        return ""
    seconds = (_as_utc(moment) - datetime.now(UTC)).total_seconds()
    return f"in {duration(seconds)}" if seconds >= 1 else ""


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    seconds = (datetime.now(UTC) - _as_utc(moment)).total_seconds()
    return f"{duration(seconds)} ago" if seconds >= 1 else "just now"


def _utc_iso(moment: datetime) -> str:
    """A ``<time datetime>`` value: ``2026-01-02T03:04:05Z``."""
    return _as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc_text(moment: datetime) -> str:
    """The absolute time a person reads: ``2026-01-02 03:04:05 UTC``."""
    return _as_utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """``75`` → ``1 min 15 s``: how long, the way a person says it."""
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def rounded(value: Any) -> Any:
    """``value`` with each fraction in it rounded for reading: 2 decimals from 1 up,
    3 significant digits below (``0.013315826554794082`` → ``0.0133``)."""
    if isinstance(value, float):
        return round(value, 2) if abs(value) >= 1 else float(f"{value:.3g}")
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def taken_from(ref: OutputRef) -> str:
    """An input taken from another job's outputs, as a person says it: ``talk.json``,
    or ``the output ending .md``."""
    return ref.output or f"the output ending {ref.suffix}"


def shorten(text: str, most: int = 60) -> str:
    """``text`` on one line, cut after ``most`` characters with "…"."""
    line = " ".join(text.split())
    return line if len(line) <= most else line[: most - 1].rstrip() + "…"


def _size(count: int) -> str:
    amount = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GB"


templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["duration"] = duration
templates.filters["ago"] = _ago
templates.filters["until"] = _until
templates.filters["size"] = _size
templates.filters["rounded"] = rounded
templates.filters["taken_from"] = taken_from
templates.filters["utc_iso"] = _utc_iso
templates.globals["now_iso"] = lambda: datetime.now(UTC).isoformat()


def failed_for_good(error: ErrorPublic | None) -> bool:
    """Whether running the job again would give the same result: no Retry offered.
    One whose settings an operator must fix first is retried once they are."""
    return error is not None and same_result_again(error.retryable, error.code)


def mended_by_settings(error: ErrorPublic | None) -> bool:
    return error is not None and error.code in MENDED_BY_SETTINGS


def mended_by_a_fix(error: ErrorPublic | None) -> bool:
    """A fault in the kind's code (``internal_error``): it fails the same way until a
    fixed version is deployed, and then a retry runs the job as it should have run."""
    return error is not None and error.code == "internal_error"


def waiting_to_retry(job: JobPublic) -> bool:
    """Queued to retry after a failure, its backoff not over: Retry now runs it at once."""
    return (
        job.status.value == "queued"
        and job.error is not None
        and job.retry_at is not None
        and _as_utc(job.retry_at) > datetime.now(UTC)
    )


templates.tests["failed_for_good"] = failed_for_good
templates.tests["waiting_to_retry"] = waiting_to_retry
templates.tests["mended_by_settings"] = mended_by_settings
templates.tests["mended_by_a_fix"] = mended_by_a_fix
templates.filters["utc_text"] = _utc_text
templates.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    viewer: Viewer | None = None,
    status_code: int = status.HTTP_200_OK,
) -> HTMLResponse:
    """A page: ``template`` with ``context``, the viewer (for the menu and CSRF token)."""
    page = templates.get_template(template).render(
        request=request, viewer=viewer, path=request.url.path, **context
    )
    return HTMLResponse(page, status_code=status_code, headers=SECURITY_HEADERS)


def see_other(url: str) -> RedirectResponse:
    """After a form: the page to show (303, so the browser GETs it)."""
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)


def local_url(url: str | None, default: str = "/jobs") -> str:
    """``url`` if it is a path on this site, else ``default``: no open redirects."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return default
    parts = urlsplit(url)
    return url if not parts.scheme and not parts.netloc else default


def session_token(request: Request) -> str | None:
    return request.cookies.get(sessions.COOKIE)


async def as_viewer(request: Request, work: Callable[[Session, Viewer], T]) -> T:
    """Find the signed-in viewer and run ``work(session, viewer)`` in one store call."""
    token = session_token(request)
    return await in_store(lambda session: work(session, sessions.viewer(session, token)))


async def changing(request: Request, work: Callable[[Session, Viewer], T], *, csrf: object) -> T:
    """Like :func:`as_viewer`, for a form that changes something: the form's ``csrf``
    must be the session's, and a browser saying it comes from elsewhere is refused."""
    refuse_foreign(request)

    def checked(session: Session, viewer: Viewer) -> T:
        sessions.check_csrf(viewer.csrf, csrf)
        return work(session, viewer)

    return await as_viewer(request, checked)


def refuse_foreign(request: Request) -> None:
    """Refuse a form a browser says comes from another site (:class:`sessions.BadCsrf`)."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc not in _hosts_asked(request):
        raise sessions.BadCsrf


def _hosts_asked(request: Request) -> set[str]:
    """The hosts (with port) the browser may have asked for this page by: the request's
    ``Host`` and, behind a reverse proxy that passes on another one, the host it says
    the browser asked for (``X-Forwarded-Host``, or ``host=`` in ``Forwarded``). A page
    of another site can set neither these headers nor ``Origin`` on what it posts, so a
    form whose ``Origin`` is none of them came from elsewhere."""
    hosts = {request.url.netloc}
    if forwarded_host := request.headers.get("x-forwarded-host"):
        hosts.add(forwarded_host.split(",")[0].strip())
    first_hop = request.headers.get("forwarded", "").split(",")[0]
    for pair in first_hop.split(";"):
        name, _, value = pair.strip().partition("=")
        if name.lower() == "host" and value:
            hosts.add(value.strip('"'))
    return hosts


def _sign_in_again(request: Request) -> Response:
    if request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response: Response = see_other(f"/login?next={quote(target, safe='')}")
    else:
        response = see_other("/login")
    response.delete_cookie(sessions.COOKIE, path="/")
    return response


_TITLES = {
    status.HTTP_400_BAD_REQUEST: "Not understood",
    status.HTTP_403_FORBIDDEN: "Not allowed",
    status.HTTP_404_NOT_FOUND: "Not found",
    status.HTTP_405_METHOD_NOT_ALLOWED: "Not a page",
    status.HTTP_409_CONFLICT: "Cannot do that now",
    status.HTTP_413_CONTENT_TOO_LARGE: "Too large",
    status.HTTP_422_UNPROCESSABLE_CONTENT: "Not valid",
    status.HTTP_429_TOO_MANY_REQUESTS: "Too many requests",
    status.HTTP_503_SERVICE_UNAVAILABLE: "Unavailable",
    status.HTTP_507_INSUFFICIENT_STORAGE: "Storage full",
}
_ACTIONS = {"retry": "Cannot retry", "cancel": "Cannot cancel", "delete": "Cannot delete"}


_ACTED_ON = {"jobs": "job", "flows": "flow", "collections": "collection"}
"""The pages whose actions post to ``/<folder>/<id>/<action>``, by folder: what it is."""


def _action(request: Request) -> tuple[str, str, str] | None:
    """What a request posts an action to (``jobs``, ``flows``, ``collections``), its id,
    and the action (``cancel``, ``retry``, ``delete``…), if it posts one: the last part
    of its path (``/collections/{id}/documents/{document}/delete`` deletes)."""
    parts = request.url.path.strip("/").split("/")
    if request.method == "POST" and len(parts) >= 3 and parts[0] in _ACTED_ON:
        return parts[0], parts[1], parts[-1]
    return None


def error_page(request: Request, status_code: int, code: str, message: str) -> HTMLResponse:
    """A refusal as a page titled in words ("Cannot retry", "Not found"), not a number,
    with a link back: after an action on a job (flow, collection), to it, unless it was
    not found; from the collections' pages, to the collections; else to the jobs."""
    title = _TITLES.get(status_code, "Something went wrong")
    back_url, back_text = "/jobs", "Back to the jobs"
    if request.url.path.startswith("/collections"):
        back_url, back_text = "/collections", "Back to the collections"
    if found := _action(request):
        folder, acted_on, action = found
        title = _ACTIONS.get(action, title)
        if status_code != status.HTTP_404_NOT_FOUND:  # else there is nothing to go back to
            back_url = f"/{folder}/{quote(acted_on, safe='')}"
            back_text = f"Back to {_ACTED_ON[folder]} {acted_on}"
    return render(
        request,
        "error.html",
        {
            "status_code": status_code,
            "code": code,
            "message": message,
            "title": title,
            "back_url": back_url,
            "back_text": back_text,
        },
        status_code=status_code,
    )


_NOT_PAGES = ("/v1/", "/docs", "/redoc", "/openapi.json", "/metrics", "/healthz", "/readyz")
"""The API's paths: a refusal there is the API's JSON, whoever asks."""

_ROUTING_WORDS = {
    status.HTTP_404_NOT_FOUND: "there is no page at this address",
    status.HTTP_405_METHOD_NOT_ALLOWED: "this address is where a page's form is sent, not a "
    "page of its own: open the page the form is on",
}
"""What a refusal by the router itself (its message the status's phrase, "Not Found")
says on a page."""


def asks_for_page(request: Request) -> bool:
    """Whether a refusal outside any page's own handling is for a person's browser: a
    request that takes HTML (a browser's address bar, a form sent), for no API path."""
    path = request.url.path
    return "text/html" in request.headers.get("accept", "") and not (
        path == "/v1" or path.startswith(_NOT_PAGES)
    )


def as_page(request: Request, answer: Response) -> HTMLResponse:
    """The API's error ``answer`` (its one JSON shape) as a page, with the headers that
    say how to go on (``Allow``, ``Retry-After``)."""
    error = json.loads(bytes(answer.body))["error"]
    message = error["message"]
    if message == HTTPStatus(answer.status_code).phrase:  # Starlette's own, a bare word
        message = _ROUTING_WORDS.get(answer.status_code, message)
    page = error_page(request, answer.status_code, error["code"], message)
    for name in ("allow", "retry-after"):
        if name in answer.headers:
            page.headers[name] = answer.headers[name]
    return page


def _failure_page(request: Request, exc: Exception) -> HTMLResponse:
    """What went wrong on the service's side, as a page: the store or Redis not
    answering (503, try again shortly), a full disk (507, once space is freed) or a bug
    (500, its traceback logged)."""
    if part := part_down(exc):
        outages.log_outage(request, part, exc)
        said = f"{part} did not answer; reload the page shortly"
        return _again_later(
            request, status.HTTP_503_SERVICE_UNAVAILABLE, "unavailable", said, outages.RETRY_AFTER
        )
    if storage_full(exc):
        outages.log_storage_full(request, exc)
        said = f"{STORAGE_FULL}: nothing was changed; try again once its operator has freed space"
        return _again_later(
            request,
            status.HTTP_507_INSUFFICIENT_STORAGE,
            "storage_full",
            said,
            outages.RETRY_AFTER_FULL,
        )
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_page(
        request,
        status.HTTP_500_INTERNAL_SERVER_ERROR,
        "internal_error",
        "the service failed on this page; it is logged",
    )


def _again_later(
    request: Request, status_code: int, code: str, message: str, retry_after: str
) -> HTMLResponse:
    """A page for a request that may pass later, with its ``Retry-After``."""
    page = error_page(request, status_code, code, message)
    page.headers["Retry-After"] = retry_after
    return page


def status_of(exc: refusals.ServiceError) -> int:
    return next((s for t, s in _STATUS_OF if isinstance(exc, t)), status.HTTP_400_BAD_REQUEST)


class PageRoute(APIRoute):
    """A dashboard route: what the service refuses becomes a page, not JSON; a missing
    session sends the browser to sign in; a forged form gets a plain 403."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle: Callable[[Request], Awaitable[Response]] = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handle(request)
            except sessions.SignInNeeded:
                return _sign_in_again(request)
            except sessions.BadCsrf:
                return error_page(
                    request,
                    status.HTTP_403_FORBIDDEN,
                    "bad_csrf",
                    "this form is stale or came from another site; open the page again",
                )
            except refusals.ServiceError as exc:
                return error_page(request, status_of(exc), exc.code, str(exc))
            except RequestValidationError as exc:
                problems = exc.errors()
                where = ".".join(str(p) for p in problems[0]["loc"]) if problems else "request"
                message = f"{where}: {problems[0]['msg']}" if problems else "not valid"
                return error_page(
                    request, status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid_request", message
                )
            except HTTPException:
                raise
            except UploadTooLarge as exc:  # a file past the limit, in a body within it
                return error_page(request, status.HTTP_413_CONTENT_TOO_LARGE, "too_large", str(exc))
            except DataError:  # a value the database cannot take: the form's fault
                return error_page(
                    request,
                    status.HTTP_422_UNPROCESSABLE_CONTENT,
                    "invalid_request",
                    outages.UNSTORABLE,
                )
            except Exception as exc:  # a page for a person, not the API's JSON
                return _failure_page(request, exc)

        return page
