#!/usr/bin/env python3
"""A container's health check: ``longplay-healthcheck api|worker|flower [PORT]``.

Exits 0 when the part in this container is healthy, 1 (with a line saying why) when not:

- ``api``: ``/readyz`` answers 200: its store and Redis are up. Workers being gone is
  not this API's fault, so it does not make the API unhealthy: a load balancer would
  otherwise drop every replica at once.
- ``worker``: a worker on this host marked itself alive in Redis within the last few
  seconds (one Redis read; a broadcast ping could hang on a busy worker).
- ``flower``: Flower's ``/healthcheck`` answers ``OK``.

PORT defaults to ``LONGPLAY_API_PORT`` (8000) for the API and 5555 for Flower.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request

TIMEOUT = 5.0


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:  # /readyz answers 503 with a body when degraded
        return exc.code, exc.read()


def check_api(port: int) -> str | None:
    status, body = _get(f"http://127.0.0.1:{port}/readyz")
    if status == 200:
        return None
    if status != 503:
        return f"/readyz answered {status}"
    down = [str(part) for part in json.loads(body).get("down", [])]
    return f"down: {', '.join(down)}"


def check_worker() -> str | None:
    from longplay.broker.liveness import live_workers
    from longplay.redis_client import get_quick_redis

    host = socket.gethostname()
    if any(name.startswith(f"{host}:") for name in live_workers(get_quick_redis())):
        return None
    return f"no worker on {host} marked itself alive"


def check_flower(port: int) -> str | None:
    status, body = _get(f"http://127.0.0.1:{port}/healthcheck")
    return None if status == 200 and body.strip() == b"OK" else f"Flower answered {status}"


def main(argv: list[str]) -> int:
    role = argv[0] if argv else "api"
    port = int(argv[1]) if len(argv) > 1 else None
    try:
        if role == "api":
            problem = check_api(port or int(os.environ.get("LONGPLAY_API_PORT", "8000")))
        elif role == "worker":
            problem = check_worker()
        elif role == "flower":
            problem = check_flower(port or 5555)
        else:
            print(f"unknown part {role!r}: api, worker or flower", file=sys.stderr)
            return 2
    except Exception as exc:  # a refused connection, a timeout, Redis gone
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        print(f"{role} unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
