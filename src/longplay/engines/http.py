"""The one place HTTP engine calls are made and their failures classified.

Every OpenAI-compatible twin posts through :class:`EngineClient`, so the retry rules
are the same for all of them: no answer in time, no connection, a 5xx or a 429 may pass
on its own (:class:`RetryableError`); any other 4xx will not, and the job fails with
what the server said (:class:`PermanentError`).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import httpx

from longplay.framework.errors import PermanentError, RetryableError

CONNECT_TIMEOUT_S = 10.0


class EngineClient:
    """A pooled HTTP client for one engine server (``base_url`` without ``/v1``).

    ``settings_prefix`` (``LONGPLAY_STT``, ...) names the settings an error tells a
    person to fix.
    """

    def __init__(
        self,
        *,
        engine: str,
        base_url: str | None,
        api_key: str | None,
        settings_prefix: str,
        timeout_s: float,
    ) -> None:
        if not base_url:
            raise PermanentError(
                f"the {engine} engine is set to http but no server URL is set; "
                f"set {settings_prefix}_URL (e.g. http://gpu-box:8000)",
                code="engine_not_configured",
            )
        self.engine = engine
        self.settings_prefix = settings_prefix
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
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
        try:
            response = self._client.post(path, json=json, data=data, files=files)
        except httpx.TransportError as exc:
            raise self._unreachable(url, exc) from exc
        self._check(url, response)
        return response

    def stream_lines(self, path: str, *, json: dict[str, Any]) -> Generator[str, None, None]:
        """POST and yield the lines of a 2xx answer as they arrive (a server-sent event
        stream), or raise the classified :class:`JobError`; closing the iterator closes
        the connection."""
        url = f"{self.base_url}{path}"
        try:
            with self._client.stream("POST", path, json=json) as response:
                if not response.is_success:
                    response.read()
                    self._check(url, response)
                yield from response.iter_lines()
        except httpx.TransportError as exc:
            raise self._unreachable(url, exc) from exc

    def _unreachable(self, url: str, exc: httpx.TransportError) -> RetryableError:
        if isinstance(exc, httpx.TimeoutException):
            return RetryableError(
                f"{self.engine} server {url} did not answer within {self.timeout_s:g} s",
                code="engine_timeout",
            )
        return RetryableError(
            f"could not reach the {self.engine} server {url}: {exc}",
            code="engine_unreachable",
        )

    def _check(self, url: str, response: httpx.Response) -> None:
        """Raise the classified :class:`JobError` for an answer that is not a 2xx."""
        if response.is_success:
            return
        said = _server_message(response)
        status = response.status_code
        if status == 429:
            raise RetryableError(
                f"{self.engine} server {url} is rate limiting (429): {said}",
                code="engine_rate_limited",
            )
        if status in (401, 403):
            raise PermanentError(
                f"{self.engine} server {url} refused the credentials ({status}): {said}; "
                f"check {self.settings_prefix}_API_KEY",
                code="engine_auth_failed",
            )
        if status >= 500:
            raise RetryableError(
                f"{self.engine} server {url} failed ({status}): {said}",
                code="engine_server_error",
            )
        raise PermanentError(
            f"{self.engine} server {url} refused the request ({status}): {said}",
            code="engine_rejected",
        )

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
    """The error message in an OpenAI-style body, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("detail"):
            return str(body["detail"])
    return response.text[:500]
