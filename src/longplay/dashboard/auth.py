"""Signing in with an API key and out again."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response, status
from fastapi.responses import HTMLResponse

from longplay.api.deps import in_store
from longplay.dashboard import sessions
from longplay.dashboard.web import PageRoute, changing, local_url, render, see_other

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _set_cookie(request: Request, response: Response, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _login_form(
    request: Request,
    *,
    next_url: str,
    problem: str | None = None,
    bad_key: bool = False,
    notice: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The sign-in form; ``bad_key`` marks the key field as the one ``problem`` is about."""
    token = sessions.new_token()
    page = render(
        request,
        "login.html",
        {
            "csrf": token,
            "next_url": next_url,
            "problem": problem,
            "bad_key": bad_key,
            "notice": notice,
        },
        status_code=status_code,
    )
    _set_cookie(request, page, sessions.LOGIN_COOKIE, token, 3600)
    return page


@router.get("/login", response_class=HTMLResponse)
async def login_page(
    request: Request, next: str | None = None, signed_out: str | None = None
) -> Response:
    """The sign-in form; after Sign out (``signed_out``) it says so."""
    notice = "You have signed out." if signed_out else None
    return _login_form(request, next_url=local_url(next), notice=notice)


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    api_key: Annotated[str, Form(max_length=200)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/jobs",
) -> Response:
    """Sign in: the form's token must match the cookie the form came with, so another
    site cannot sign a browser in with a key of its own."""
    next_url = local_url(next)
    try:
        sessions.check_csrf(request.cookies.get(sessions.LOGIN_COOKIE, ""), csrf)
    except sessions.BadCsrf:
        return _login_form(
            request,
            next_url=next_url,
            problem="The form had expired; sign in again.",
            status_code=status.HTTP_403_FORBIDDEN,
        )
    key = api_key.strip()
    made = await in_store(lambda session: sessions.sign_in(session, key)) if key else None
    if made is None:
        return _login_form(
            request,
            next_url=next_url,
            problem="That API key is not valid (unknown or revoked).",
            bad_key=True,
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    token, _ = made
    response = see_other(next_url)
    _set_cookie(request, response, sessions.COOKIE, token, sessions.SESSION_SECONDS)
    response.delete_cookie(sessions.LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    """Sign out: the session is deleted in Redis and its cookie cleared."""
    token = request.cookies.get(sessions.COOKIE)
    await changing(request, lambda session, viewer: sessions.sign_out(token), csrf=csrf)
    response = see_other("/login?signed_out=1")
    response.delete_cookie(sessions.COOKIE, path="/")
    return response
