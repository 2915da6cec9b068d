"""One deadline for a whole webhook attempt, not for each read.

httpx's timeouts bound each connect, read and write on its own: a receiver that sends
its answer a byte every few seconds, or a body that never ends, holds the attempt (and
the worker's process) as long as it likes, past the attempt's lease, so that the
message is sent a second time beside the first. Here every operation on a connection
is given what is left of the attempt's time at most, and fails once it is spent."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import httpcore


def time_left(deadline: float, timeout: float | None, error: type[Exception]) -> float:
    """``timeout`` cut to what is left before ``deadline`` (``time.monotonic``);
    ``error`` once nothing is."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the attempt's time (LONGPLAY_WEBHOOK_TIMEOUT) is up")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A connection whose reads and writes all end by one deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
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
    """httpcore's own sockets, each a :class:`DeadlineStream` ending by ``deadline``."""

    def __init__(self, deadline: float) -> None:
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
