"""``longplay up``: embedded Redis, a worker, beat and the API as one process tree.

Each part is a child process in its own process group. One that dies is started
again after a backoff that doubles with each crash in a row (1 s, 2 s, 4 s ... up to
:data:`MAX_BACKOFF`) and starts over once the part has stayed up for
:data:`STABLE_AFTER`; the log says how it ended and when it comes back. What it
left of its process group (a worker's pool processes) is killed first, so no orphan
holds a job or a GPU. The embedded Redis keeps an append-only file in the data folder,
so jobs queued before it died are queued after it comes back.

Ctrl-C or SIGTERM stops them all, the API first and Redis last. On Linux the kernel
also signals each part when ``up`` itself ends, even by SIGKILL, so none outlives it
(:attr:`Child.death_signal`); every part is started from ``up``'s main thread, because
that signal comes when the *thread* that started the part ends.

One ``up`` at a time runs on a data folder: it holds a lock on ``up.lock`` there (see
:func:`lock_data_folder`), and checks that the API's port is free before it starts
anything (:func:`check_port`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from longplay.embedded import listens, redis_command, wait_until_ready
from longplay.settings import WARNINGS_SAID, Settings
from longplay.store.db import NewerSchema
from longplay.store.files import make_data_folder

log = logging.getLogger("longplay.up")
STOP_TIMEOUT = 30.0
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0
"""Seconds a part must stay up for its next crash to count as the first in a row."""
LEFTOVER_WAIT = 2.0
"""Seconds the rest of a part's process group has to end by itself after its leader."""
WATCH_INTERVAL = 0.5
ANSWER_TIMEOUT = 5.0
"""Seconds one look at whether the API answers waits for its answer."""
LOCK_WAIT = 10.0
"""Seconds a new ``up`` waits for the data folder's lock while the ``up`` that held it
has ended but its Redis, which holds the lock too, is still stopping."""
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
"""The C library, loaded in ``up`` itself: a child between fork and exec only calls it."""


class CannotStart(Exception):
    """Why ``up`` must not start: its data folder or its port is taken (one line)."""


def lock_data_folder(data_dir: Path) -> TextIO:
    """Lock ``up.lock`` in the data folder and write this process's pid in it; the
    lock lasts while the returned file stays open (the kernel lets go of it when the
    process ends, however it ends). Raise :class:`CannotStart` if another ``up`` holds
    it; if the one that holds it has ended but its Redis still runs (it holds the lock
    too, so that no second Redis starts on its socket), wait for that up to
    :data:`LOCK_WAIT` seconds first."""
    make_data_folder(data_dir)
    lock = (data_dir / "up.lock").open("a+")
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip()
            if holder.isdigit() and _running(int(holder)):
                lock.close()
                raise CannotStart(
                    f"another longplay up (pid {holder}) is running on {data_dir}"
                ) from None
            if time.monotonic() > deadline:
                lock.close()
                raise CannotStart(
                    f"longplay up (pid {holder or '?'}) has ended but its Redis still runs "
                    f"on {data_dir}"
                ) from None
            time.sleep(0.1)
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's
    return True


def check_port(host: str, port: int) -> None:
    """Raise :class:`CannotStart` if the API could not listen on ``host`` and ``port``:
    each address they stand for is bound for a moment as uvicorn binds it (asyncio's
    way: address reuse on, IPv6 alone on an IPv6 socket), so a closed connection
    still lingering on the port is no obstacle, another program listening there is."""
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise CannotStart(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    for family, kind, proto, _, address in addresses:
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:
            continue  # a family this machine lacks (IPv6), which uvicorn skips too
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise CannotStart(
                        f"port {port} is in use: stop what uses it or pass --port"
                    ) from None
                raise CannotStart(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def ends_with(parent: int, sig: signal.Signals) -> Callable[[], None] | None:
    """What a child runs between fork and exec (or first thing, in a process a parent
    spawned) so that the kernel sends it ``sig`` when ``parent`` (``up``) ends, even by
    SIGKILL; None where that is not Linux. It runs after the child has moved to its own
    process group, and the signal survives the exec. A parent that ended before the call
    is caught by a look at ``getppid``."""
    if _libc is None:
        return None
    prctl = _libc.prctl

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:
            os._exit(1)

    return set_parent_death_signal


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
    address: tuple[str, int] | None = None
    """The host and port the part listens on: if its first process ends while another
    program holds them, it could not listen, and ``up`` stops (:class:`CannotStart`)."""
    pass_fds: tuple[int, ...] = ()
    """Open files the part inherits (the embedded Redis: the data folder's lock)."""
    death_signal: signal.Signals = signal.SIGTERM
    """The signal the part gets when ``up`` ends without stopping it (Linux)."""
    starts: int = 0
    """Processes started so far."""

    def start(self) -> None:
        # Own process group: Ctrl-C reaches only the supervisor, which stops parts in order.
        self.process = subprocess.Popen(
            self.command,
            env={**os.environ, **self.env},
            process_group=0,
            pass_fds=self.pass_fds,
            preexec_fn=ends_with(os.getpid(), self.death_signal),
        )
        self.starts += 1
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
        self.kill_leftovers(wait=LEFTOVER_WAIT)

    def kill_leftovers(self, wait: float = 0) -> None:
        """Kill what is left of the part's process group once its leader has ended,
        after ``wait`` seconds for it to end by itself. On a clean stop a helper of the
        leader ends a moment after it (uvicorn's several API processes bring
        multiprocessing's resource tracker), which is worth no warning."""
        if self.process is None:
            return
        ends = time.monotonic() + wait
        while self.has_leftovers() and time.monotonic() < ends:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
            log.warning("killed what was left of %s's processes", self.name)

    def has_leftovers(self) -> bool:
        """Whether processes of the part's group outlive its leader."""
        if self.process is None:
            return False
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def _part(name: str) -> list[str]:
    return [sys.executable, "-m", "longplay", name]


class Supervisor:
    """Starts the parts, restarts the ones that die, stops all on a signal."""

    def __init__(self, settings: Settings, *, children: list[Child] | None = None) -> None:
        self.settings = settings
        env = {"LONGPLAY_DATA_DIR": str(settings.data_dir), WARNINGS_SAID: "1"}
        self.redis = (
            Child("redis", redis_command(settings), ready=self._redis_ready)
            if settings.embedded_redis and children is None
            else None
        )
        address = (settings.api.host, settings.api.port)
        self.children = (
            children
            if children is not None
            else [
                # SIGTERM would not do: the embedded Redis ends with up too, and a worker
                # told to stop with its broker gone never ends (Celery's heartbeat
                # retries the broker for ever, holding the lock the stop waits for).
                # Killed, its pool goes with it (Celery gives each pool process SIGKILL
                # as its own death signal) and its jobs' leases lapse.
                Child("worker", _part("worker"), env=env, death_signal=signal.SIGKILL),
                Child("beat", _part("beat"), env=env),
                Child("api", _part("api"), env=env, address=address),
            ]
        )
        self._stopping = threading.Event()
        self._lock: TextIO | None = None

    def claim(self) -> None:
        """Before anything starts: lock the data folder for as long as this process
        lives (its Redis holds the lock too), and check the API's port is free. Raise
        :class:`CannotStart` if either is taken, or a Redis already answers on the
        folder's socket (older ``up``s took no lock); ``NoDataFolder`` if the folder
        cannot be made. A folder not there yet is made
        only once the port is known to be free: a refused ``up`` leaves nothing behind."""
        if not self.settings.data_dir.exists():  # so no other up can be running on it
            check_port(self.settings.api.host, self.settings.api.port)
        self._lock = lock_data_folder(self.settings.data_dir)  # kept open: the lock
        if self.redis is not None:
            if listens(self.settings.redis_socket):  # one the lock does not know
                raise CannotStart(
                    f"a Redis already answers on {self.settings.redis_socket}: the parts of "
                    f"an earlier longplay up (one older than its lock, or killed with its "
                    f"parts left running) still use {self.settings.data_dir}; stop them first"
                )
            self.redis.pass_fds = (self._lock.fileno(),)
        check_port(self.settings.api.host, self.settings.api.port)

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

    def run(self, answers: tuple[str, Callable[[float], None]] | None = None) -> None:
        """Run until a signal; then stop everything in order. Raise
        :class:`CannotStart`, once all is stopped, if the API could not listen.

        ``answers`` is a URL and what to call, with the seconds since the parts were
        started, the first time a GET of it is answered with a success: a person who
        read the address is told when it can be opened, which is the API's start-up
        (its imports, the store) later."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stopping.set())
        started = time.monotonic()
        for child in self.children:
            child.start()
        if answers is not None:
            url, then = answers
            threading.Thread(
                target=self._when_answered, args=(url, started, then), daemon=True
            ).start()
        try:
            while not self._stopping.wait(WATCH_INTERVAL):
                self.watch()
        finally:
            self.stop()

    def _when_answered(self, url: str, started: float, then: Callable[[float], None]) -> None:
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no *_proxy
        while not self._stopping.is_set():
            try:
                direct.open(url, timeout=ANSWER_TIMEOUT).close()
            except OSError:  # not listening yet, or an error status (urllib's HTTPError)
                self._stopping.wait(WATCH_INTERVAL)
                continue
            then(time.monotonic() - started)
            return

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
        if child.address is not None and child.starts == 1 and not child.has_leftovers():
            # With nothing of its own left on the port, one that is taken is another's.
            check_port(*child.address)
        if code == NewerSchema.EXIT_CODE:
            # Started again, it would find the same schema: a newer longplay's, in a
            # rolling upgrade; this one's parts are to be stopped and replaced.
            raise CannotStart(
                f"{child.name} stopped: a newer longplay upgraded the database's schema "
                "(its line above says which); start that longplay's `up` instead"
            )
        now = time.monotonic()
        up_for = now - child.started_at
        if up_for >= STABLE_AFTER:
            child.crashes = 0
        child.crashes += 1
        delay = backoff(child.crashes)
        assert child.process is not None
        # Code 0: it was stopped from outside up (a SIGTERM by hand), cleanly; no crash
        # for an alert on errors to wake anyone for, though it is started again as one.
        said, ending = (log.warning, "stop") if code == 0 else (log.error, "crash")
        said(
            "%s (pid %d) %s after %.0fs up; starting it again in %.0fs (%s %d in a row)",
            child.name,
            child.process.pid,
            describe_exit(code),
            up_for,
            delay,
            ending,
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
        """Stop the parts in the order they started, the API last: while the worker
        gives its running jobs their grace, clients still get answers (and see the
        jobs go back to the queue), not a refused connection."""
        log.info("stopping")
        for child in self.children:
            child.stop()
        if self.redis is not None:
            self.redis.stop()
        log.info("stopped")
