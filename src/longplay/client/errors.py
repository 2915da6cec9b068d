"""What the SDK raises: :class:`ApiError` for anything the API refused or could not
answer, :class:`WaitTimeout` for a wait that ran out of time."""

from __future__ import annotations

from typing import Any

import httpx

IDEMPOTENCY_HEADER = "Idempotency-Key"
GATEWAY_CODES = {502: "bad_gateway", 503: "unavailable", 504: "gateway_timeout"}
"""Codes for a 502, 503 or 504 that is not the API's JSON (a proxy's page): the API
behind it is down or slow, and the same request may pass later."""


class _Picklable(Exception):
    """An error that pickles with all its fields: rebuilt from its message and its
    attributes, not by calling its constructor (whose arguments are keywords)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuilt, (type(self), self.args, self.__dict__)


def _rebuilt(cls: type[BaseException], args: tuple[Any, ...], fields: dict[str, Any]) -> Any:
    error = cls.__new__(cls, *args)
    BaseException.__init__(error, *args)
    error.__dict__.update(fields)
    return error


class ApiError(_Picklable):
    """A request the API refused, or could not answer.

    :attr:`code` is the API's error code (``not_found``, ``unauthorized``,
    ``invalid_request``, ``rate_limited``, ...) or, when no answer came,
    ``unreachable`` or ``timeout``, or one of the SDK's own (``pool_full``,
    ``not_finished``, ``stream_lost``, ``corrupt_download``, ``bad_answer``,
    ``bad_gateway``...); :attr:`status_code` the HTTP status (None without an
    answer); :attr:`retry_after` the seconds a 429 or 503 asked to wait;
    :attr:`details` the per-field problems of a 422; :attr:`retryable` whether the same
    request may pass later unchanged (the API's word; true where no answer came);
    :attr:`idempotency_key` the key a submission carried, to send it again with (it
    gets the same job back); :attr:`message` the API's own sentence, to show a person
    as it is. ``str()`` says it all in one line, status and code first.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status_code: int | None = None,
        retry_after: float | None = None,
        details: list[Any] | None = None,
        retryable: bool | None = None,
        idempotency_key: str | None = None,
        said: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = said if said is not None else message
        self.code = code
        self.status_code = status_code
        self.retry_after = retry_after
        self.details = details or []
        self.retryable = status_code is None if retryable is None else retryable
        self.idempotency_key = idempotency_key

    @property
    def status(self) -> int | None:
        """The HTTP status, as :attr:`status_code`."""
        return self.status_code

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        """The error a response carries: ``{"error": {"code", "message", "details"?}}``,
        or FastAPI's ``{"detail": ...}``, or whatever text it has."""
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        details: Any = None
        retryable: bool | None = None
        fields = ""
        if isinstance(error, dict):
            retryable = error.get("retryable") is True
            code = str(error.get("code") or "error")
            details = error.get("details")
            message = str(error.get("message") or response.reason_phrase)
            fields = _details(details, message)
        elif body is None and response.content:
            code, message = _not_json(response)
        else:
            code = "error"
            detail = body.get("detail") if isinstance(body, dict) else None
            message = str(detail) if detail else response.reason_phrase
        said = " ".join(message.split())  # one line
        text = " ".join((message + fields).split())
        return cls(
            f"{response.status_code} {code}: {text}",
            code=code,
            status_code=response.status_code,
            retry_after=retry_after(response),
            details=details if isinstance(details, list) else None,
            retryable=retryable if retryable is not None else response.status_code >= 500,
            idempotency_key=_sent_key(response),
            said=said,
        )


class WaitTimeout(_Picklable, TimeoutError):
    """:meth:`Client.wait` gave up before the job ended; the job goes on."""

    def __init__(self, job_id: str, timeout: float) -> None:
        super().__init__(f"{job_id} did not end within {timeout:g} s")
        self.job_id = job_id
        self.timeout = timeout


def _not_json(response: httpx.Response) -> tuple[str, str]:
    """The code and message of an error answer that is not JSON (a proxy's HTML page):
    its status and content type, never the page itself."""
    code = GATEWAY_CODES.get(response.status_code, "error")
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    text = response.text.strip()
    if kind == "text/plain" and len(text) <= 200:
        return code, text
    return code, (
        f"{response.status_code} {response.reason_phrase} ({kind}), not the API's answer: "
        "the API behind a proxy may be down or restarting"
    )


def _sent_key(response: httpx.Response) -> str | None:
    """The ``Idempotency-Key`` the answered request carried, if any."""
    try:
        return response.request.headers.get(IDEMPOTENCY_HEADER)
    except RuntimeError:  # a response made by hand, with no request
        return None


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from datetime import UTC, datetime

    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _details(details: Any, message: str) -> str:
    """A few of an error's details, as ``(field: message; ...)``; a detail that only
    repeats ``message`` (the error's first, as a rule) is given by its field alone, or
    left out where the message names its field too."""
    if not isinstance(details, list) or not details:
        return ""
    shown = []
    for item in details[:3]:
        if isinstance(item, dict):
            where = item.get("field") or ".".join(map(str, item.get("loc") or []))
            what = str(item.get("message") or item.get("msg") or "")
            if what in message and (not where or where in message):
                continue  # the message says it all
            if where and what in message:
                what = ""
            shown.append(f"{where}: {what}" if where and what else where or what)
        else:
            shown.append(str(item))
    more = f"and {len(details) - 3} more" if len(details) > 3 else ""
    said = "; ".join([*shown, more] if more else shown)
    return f" ({said})" if said else ""
