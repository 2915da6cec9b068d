"""``longplay up``: embedded Redis, a worker, beat and the API as one process tree.

Each part is a child process in its own process group. One that dies is started
again after a backoff that doubles with each crash in a row (1 s, 2 s, 4 s ... up to
:data:`MAX_BACKOFF`) and starts over once the part has stayed up for
:data:`STABLE_AFTER`; the log says how it ended and when it comes back. What it
left of its process group (a worker's pool processes) is killed first, so no orphan
holds a job or a GPU. The embedded Redis keeps an append-only file in the data folder,
so jobs queued before it died are queued after it comes back.

Ctrl-C or SIGTERM stops them all, the API first and Redis last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from longplay.embedded import redis_command, wait_until_ready
from longplay.settings import Settings

log = logging.getLogger("longplay.up")
STOP_TIMEOUT = 30.0
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0
"""Seconds a part must stay up for its next crash to count as the first in a row."""
WATCH_INTERVAL = 0.5


def backoff(crashes: int) -> float:
    """Seconds to wait before starting a part again after ``crashes`` crashes in a row."""
    return float(min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(0, crashes - 1)))


def describe_exit(code: int) -> str:
    """``exited with code 3`` or ``was killed by SIGKILL``, from a Popen return code."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"was killed by {name}"


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    crashes: int = 0
    """Crashes in a row: reset once the part stays up for :data:`STABLE_AFTER`."""
    started_at: float = 0.0
    next_start: float = 0.0
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[], None] | None = None
    """Blocks until a freshly started part serves (raises if it does not)."""

    def start(self) -> None:
        # Own process group: Ctrl-C reaches only the supervisor, which stops parts in order.
        self.process = subprocess.Popen(
            self.command, env={**os.environ, **self.env}, process_group=0
        )
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)
        if self.ready is not None:
            self.ready()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
            process.kill()
            process.wait()
        self.kill_leftovers()

    def kill_leftovers(self) -> None:
        """Kill what is left of the part's process group once its leader has ended."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
            log.warning("killed what was left of %s's processes", self.name)


def _part(name: str) -> list[str]:
    return [sys.executable, "-m", "longplay", name]


class Supervisor:
    """Starts the parts, restarts the ones that die, stops all on a signal."""

    def __init__(self, settings: Settings, *, children: list[Child] | None = None) -> None:
        self.settings = settings
        env = {"LONGPLAY_DATA_DIR": str(settings.data_dir)}
        self.redis = (
            Child("redis", redis_command(settings), ready=self._redis_ready)
            if settings.embedded_redis and children is None
            else None
        )
        self.children = (
            children
            if children is not None
            else [
                Child("worker", _part("worker"), env=env),
                Child("beat", _part("beat"), env=env),
                Child("api", _part("api"), env=env),
            ]
        )
        self._stopping = threading.Event()

    def _redis_ready(self) -> None:
        wait_until_ready(self.settings.redis_socket)

    @property
    def parts(self) -> list[Child]:
        return [self.redis, *self.children] if self.redis else list(self.children)

    def start_redis(self) -> None:
        if self.redis is not None:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            try:
                self.redis.start()
            except BaseException:
                self.redis.stop(timeout=5)
                raise

    def run(self) -> None:
        """Run until a signal; then stop everything in order."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stopping.set())
        for child in self.children:
            child.start()
        try:
            while not self._stopping.wait(WATCH_INTERVAL):
                self.watch()
        finally:
            self.stop()

    def watch(self) -> None:
        """One round: note the parts that ended, start those whose backoff is over."""
        for child in self.parts:
            if self._stopping.is_set():
                return
            if child.process is None:
                if time.monotonic() >= child.next_start:
                    self._restart(child)
                continue
            code = child.process.poll()
            if code is not None:
                self._ended(child, code)

    def _ended(self, child: Child, code: int) -> None:
        now = time.monotonic()
        up_for = now - child.started_at
        if up_for >= STABLE_AFTER:
            child.crashes = 0
        child.crashes += 1
        delay = backoff(child.crashes)
        assert child.process is not None
        log.error(
            "%s (pid %d) %s after %.0fs up; starting it again in %.0fs (crash %d in a row)",
            child.name,
            child.process.pid,
            describe_exit(code),
            up_for,
            delay,
            child.crashes,
        )
        child.kill_leftovers()
        child.process = None
        child.next_start = now + delay

    def _restart(self, child: Child) -> None:
        try:
            child.start()
        except (OSError, TimeoutError) as exc:
            if child.process is not None:
                child.stop(timeout=5)
            child.process = None
            child.crashes += 1
            delay = backoff(child.crashes)
            child.next_start = time.monotonic() + delay
            log.error("%s did not start (%s); trying again in %.0fs", child.name, exc, delay)

    def stop(self) -> None:
        log.info("stopping")
        for child in reversed(self.children):
            child.stop()
        if self.redis is not None:
            self.redis.stop()
        log.info("stopped")
