"""Time limits of HTTP requests: one for a whole request, not for each read, and
the wait a server asks for (``Retry-After``).

httpx's timeouts bound each connect, read and write on its own: a server that sends
its answer a byte every few seconds, or a body that never ends, holds the request as
long as it likes. Here every operation on a connection is given what is left of the
request's time at most, and fails (as httpx's own timeouts do) once it is spent.

The time is either fixed when the connection is made (a webhook attempt, one client
per attempt) or set around each request with :func:`within` (an engine's pooled
client, whose connections outlive a request). httpx takes no network backend of its
own, so :class:`Transport` hands one to its connection pool (httpcore), straight or
through an HTTP proxy.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import httpcore
import httpx

_DEADLINE: ContextVar[float | None] = ContextVar("longplay_request_deadline", default=None)
"""When the request being made in this context must be done (``time.monotonic``)."""


@contextlib.contextmanager
def within(seconds: float) -> Iterator[None]:
    """Requests made in this block on a :class:`DeadlineBackend` without a fixed
    deadline end, all of them, ``seconds`` from now at most; inside another such block,
    by the earlier of the two ends."""
    end = time.monotonic() + seconds
    outer = _DEADLINE.get()
    token = _DEADLINE.set(end if outer is None else min(end, outer))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def time_left(
    deadline: float | None, timeout: float | None, error: type[Exception]
) -> float | None:
    """``timeout`` cut to what is left before ``deadline``, else before the one set by
    :func:`within`, if any; ``error`` once nothing is."""
    if deadline is None:
        deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the time for the whole request is up")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A connection whose reads and writes all end by the deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float | None) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(
            max_bytes, time_left(self._deadline, timeout, httpcore.ReadTimeout)
        )

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, time_left(self._deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = time_left(self._deadline, timeout, httpcore.ConnectTimeout)
        return DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, left), self._deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.SyncBackend):
    """httpcore's own sockets, each a :class:`DeadlineStream` ending by ``deadline``
    (or, without one, by the deadline of the request :func:`within` sets)."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        left = time_left(self.deadline, timeout, httpcore.ConnectTimeout)
        stream = super().connect_tcp(host, port, left, local_address, socket_options)
        return DeadlineStream(stream, self.deadline)


class Transport(httpx.HTTPTransport):
    """An httpx transport whose connections are made by ``backend``: straight, or to
    the HTTP proxy ``proxy``."""

    def __init__(self, backend: httpcore.NetworkBackend, proxy: httpx.Proxy | None) -> None:
        super().__init__(trust_env=False)
        context = httpx.create_ssl_context()
        if proxy is None:
            self._pool = httpcore.ConnectionPool(ssl_context=context, network_backend=backend)
            return
        self._pool = httpcore.HTTPProxy(
            proxy_url=httpcore.URL(
                scheme=proxy.url.raw_scheme,
                host=proxy.url.raw_host,
                port=proxy.url.port,
                target=proxy.url.raw_path,
            ),
            proxy_auth=proxy.raw_auth,
            proxy_headers=proxy.headers.raw,
            ssl_context=context,
            proxy_ssl_context=proxy.ssl_context,
            network_backend=backend,
        )


def proxy_for(url: httpx.URL) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``NO_PROXY``), as httpx itself would pick it."""
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.host):
        return proxy
    return None


def can_bound(proxy: str | None) -> bool:
    """Whether a request through ``proxy`` can be held to one deadline: straight or
    through an HTTP proxy, not through SOCKS (httpx's own pool, without a backend)."""
    return proxy is None or httpx.URL(proxy).scheme in ("http", "https")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
