"""The one place HTTP engine calls are made and their failures classified.

Every OpenAI-compatible twin posts through :class:`EngineClient`, so the rules are the
same for all of them. A call that gets no answer in time, no connection, a 5xx or a 429
is tried again within the call, waiting out the server's ``Retry-After``, for up to
``LONGPLAY_ENGINE_RETRY_WITHIN`` (a server restarting, a rate limit's window): a job
that makes hundreds of calls should not fail, or start over, on one of them. After
that it is a :class:`RetryableError`, and the job's own retries take over. Any other
4xx will not pass, and the job fails with what the server said (:class:`PermanentError`).

``LONGPLAY_<ENGINE>_TIMEOUT`` bounds a whole request, however slowly its answer comes
(:mod:`longplay.http_time`); a streamed answer, which may rightly take longer, is
bounded until its headers and then per read. What a server says is cut short, and
the key and the URL's password are taken out of it before it goes in a job's error.
"""

from __future__ import annotations

import base64
import logging
import random
import time
from collections.abc import Callable, Generator
from typing import Any, TypeVar

import httpx

from longplay.framework.errors import PermanentError, RetryableError
from longplay.http_time import (
    DeadlineBackend,
    Transport,
    can_bound,
    parse_retry_after,
    proxy_for,
    within,
)
from longplay.settings import get_settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
SAID_CHARS = 300
"""Of what a server says about a failure, the characters kept in the job's error."""
FIRST_WAIT_S = 1.0
"""The wait before a call's second try; each next one doubles, up to :data:`LONGEST_WAIT_S`."""
LONGEST_WAIT_S = 15.0

T = TypeVar("T")


class Busy(RetryableError):
    """A try of a call that may pass if made again: ``wait`` is what the server asked
    for (``Retry-After``), if it did."""

    def __init__(
        self, message: str, *, code: str = "engine_busy", wait: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.wait = wait


class EngineClient:
    """A pooled HTTP client for one engine server (``base_url``, with or without its
    ``/v1``; the API key goes as a bearer token, else a password in the URL as basic
    authentication).

    ``settings_prefix`` (``LONGPLAY_STT``, ...) names the settings an error tells a
    person to fix; ``retry_within_s`` defaults to ``LONGPLAY_ENGINE_RETRY_WITHIN``.
    """

    def __init__(
        self,
        *,
        engine: str,
        base_url: str | None,
        api_key: str | None,
        settings_prefix: str,
        timeout_s: float,
        retry_within_s: float | None = None,
    ) -> None:
        if not base_url:
            raise PermanentError(
                f"the {engine} engine is set to http but no server URL is set; "
                f"set {settings_prefix}_URL (e.g. http://gpu-box:8000)",
                code="engine_not_configured",
            )
        self.engine = engine
        self.settings_prefix = settings_prefix
        given = httpx.URL(base_url)
        path = given.path.rstrip("/").removesuffix("/v1")  # each call's path starts /v1
        # Shown in errors and logs, so without the URL's user and password.
        self.base_url = str(given.copy_with(userinfo=b"", path=path or "/")).rstrip("/")
        self.timeout_s = timeout_s
        self.retry_within_s = (
            get_settings().engines.engine_retry_within if retry_within_s is None else retry_within_s
        )
        self._secrets = _secrets(api_key, given)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        basic = given.password and not api_key
        proxy = proxy_for(given)
        # Straight or through an HTTP proxy, each request is held to one deadline; through
        # SOCKS (httpx's own pool, which takes no backend), each read on its own.
        route: dict[str, Any] = (
            {"transport": Transport(DeadlineBackend(), httpx.Proxy(proxy) if proxy else None)}
            if can_bound(proxy)
            else {"proxy": proxy, "trust_env": False}
        )
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            auth=httpx.BasicAuth(given.username, given.password) if basic else None,
            timeout=httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
            **route,
        )

    def post(
        self,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
    ) -> httpx.Response:
        """POST and return a 2xx response, or raise the classified :class:`JobError`."""
        url = f"{self.base_url}{path}"

        def once() -> httpx.Response:
            try:
                with within(self.timeout_s):
                    response = self._client.post(path, json=json, data=data, files=files)
            except httpx.TransportError as exc:
                raise self._unreachable(url, exc) from exc
            self._check(url, response)
            return response

        return self._retrying(once)

    def stream_lines(self, path: str, *, json: dict[str, Any]) -> Generator[str, None, None]:
        """POST and yield the lines of a 2xx answer as they arrive (a server-sent event
        stream), or raise the classified :class:`JobError`; closing the iterator closes
        the connection. Only the request is tried again, never a stream begun."""
        url = f"{self.base_url}{path}"

        def opened() -> httpx.Response:
            request = self._client.build_request("POST", path, json=json)
            try:
                with within(self.timeout_s):
                    response = self._client.send(request, stream=True)
                    if not response.is_success:
                        try:
                            response.read()
                        finally:
                            response.close()
            except httpx.TransportError as exc:
                raise self._unreachable(url, exc) from exc
            self._check(url, response)
            return response

        response = self._retrying(opened)
        try:
            yield from response.iter_lines()
        except httpx.TransportError as exc:
            raise self._unreachable(url, exc) from exc
        finally:
            response.close()

    def _retrying(self, call: Callable[[], T]) -> T:
        """``call``, tried again after a :class:`Busy` while :attr:`retry_within_s`
        lasts; the last :class:`Busy` once a wait would run past it."""
        give_up_at = time.monotonic() + self.retry_within_s
        wait = FIRST_WAIT_S
        while True:
            try:
                return call()
            except Busy as exc:
                pause = exc.wait if exc.wait is not None else wait * random.uniform(0.75, 1.25)
                if time.monotonic() + pause > give_up_at:
                    raise
                log.warning("%s; trying again in %.1f s", exc.message, pause)
                time.sleep(pause)
                wait = min(LONGEST_WAIT_S, wait * 2)

    def _unreachable(self, url: str, exc: httpx.TransportError) -> Busy:
        if isinstance(exc, httpx.TimeoutException):
            return Busy(
                f"{self.engine} server {url} did not answer within {self.timeout_s:g} s "
                f"({self.settings_prefix}_TIMEOUT)",
                code="engine_timeout",
            )
        return Busy(
            f"could not reach the {self.engine} server {url}: {self.redacted(str(exc))}",
            code="engine_unreachable",
        )

    def _check(self, url: str, response: httpx.Response) -> None:
        """Raise the classified :class:`JobError` for an answer that is not a 2xx."""
        if response.is_success:
            return
        said = self.redacted(_server_message(response))
        status = response.status_code
        wait = parse_retry_after(response.headers.get("retry-after"))
        if status == 429:
            raise Busy(
                f"{self.engine} server {url} is rate limiting (429): {said}",
                code="engine_rate_limited",
                wait=wait,
            )
        if status in (401, 403):
            raise PermanentError(
                f"{self.engine} server {url} refused the credentials ({status}): {said}; "
                f"check {self.settings_prefix}_API_KEY",
                code="engine_auth_failed",
            )
        if status >= 500 or status == 408:
            raise Busy(
                f"{self.engine} server {url} failed ({status}): {said}",
                code="engine_server_error",
                wait=wait,
            )
        hint = f"; check {self.settings_prefix}_HTTP_MODEL" if status == 404 else ""
        raise PermanentError(
            f"{self.engine} server {url} refused the request ({status}): {said}{hint}",
            code="engine_rejected",
        )

    def redacted(self, text: str) -> str:
        """``text`` without the key or the URL's password in it."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def post_json(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """POST and decode a JSON object answer."""
        response = self.post(path, **kwargs)
        try:
            body = response.json()
        except ValueError as exc:
            raise PermanentError(
                f"{self.engine} server {self.base_url}{path} answered with something that "
                f"is not JSON ({response.headers.get('content-type', 'no content type')})",
                code="engine_bad_response",
            ) from exc
        if not isinstance(body, dict):
            raise PermanentError(
                f"{self.engine} server {self.base_url}{path} answered JSON that is not an object",
                code="engine_bad_response",
            )
        return body


def _server_message(response: httpx.Response) -> str:
    """The error message in an OpenAI-style body, else the start of the body; cut to
    :data:`SAID_CHARS` either way (a server may put megabytes there)."""
    return briefly(_said(response)) or response.reason_phrase


def _said(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[: SAID_CHARS * 2]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("detail"):
            return str(body["detail"])
    return response.text[: SAID_CHARS * 2]


def briefly(text: str) -> str:
    """What a server or a model said, on one line and cut to :data:`SAID_CHARS`:
    enough to tell what went wrong, not a page of it."""
    text = " ".join(text.split())
    return text if len(text) <= SAID_CHARS else text[: SAID_CHARS - 1] + "…"


def _secrets(api_key: str | None, url: httpx.URL) -> list[str]:
    """What must not be shown of the key and the URL's password, as sent or encoded."""
    found = [api_key] if api_key else []
    if url.password:
        found.append(url.password)
        found.append(base64.b64encode(f"{url.username}:{url.password}".encode()).decode())
    return [s for s in found if len(s) >= 4]
