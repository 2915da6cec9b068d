"""One longplay deployment as real processes, shared by the tests and the benches: Redis,
a database, the API, workers and beat, each started, waited for and stopped the same way.

A plain module, because ``bench/*.py`` import it outside pytest. It imports longplay and
psycopg only where they are used: the dispatch bench's bare Celery worker imports this
module, and must load nothing of longplay.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
"""The PostgreSQL admin URL unless ``LONGPLAY_TEST_POSTGRES_URL`` (tests) or
``LONGPLAY_BENCH_POSTGRES_URL`` (benches) says otherwise."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], Any], *, timeout: float = 60, every: float = 0.1, what: str | None = None
) -> Any:
    """Poll ``check`` until it returns something truthy, and return that; raise
    TimeoutError after ``timeout`` seconds, naming ``what`` (or ``check``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what or check}: not in {timeout:.0f} s")
        time.sleep(every)


# -- databases --------------------------------------------------------------------------


def postgres_reachable(admin: str = POSTGRES_ADMIN) -> bool:
    import psycopg

    try:
        with psycopg.connect(admin, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def create_database(
    kind: str, folder: Path, *, admin: str = POSTGRES_ADMIN, prefix: str = "longplay_test"
) -> str:
    """A fresh, migrated database: a SQLite file in ``folder`` or a new PostgreSQL one on
    ``admin``'s server, named ``prefix`` and a random suffix."""
    from longplay.store.db import migrate

    if kind == "sqlite":
        url = f"sqlite:///{folder / 'longplay.db'}"
    else:
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = admin.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    return url


def drop_database(url: str, *, admin: str = POSTGRES_ADMIN) -> None:
    """Drop a PostgreSQL database that :func:`create_database` made (a SQLite file goes
    with its folder), first closing this process's own connections to it."""
    if not url.startswith("postgresql"):
        return
    import psycopg

    from longplay.store.db import get_engine

    get_engine(url).dispose()
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- processes --------------------------------------------------------------------------


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """``kill -9`` a part and everything it forked (each part leads a session of its own)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(20)


def stop_process(
    process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20
) -> bool:
    """Send ``sig`` and wait up to ``timeout`` seconds for the part to end, then ``kill -9``
    whatever is left of its session; whether it ended by itself in time."""
    ended = True
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            ended = False
    kill_group(process)
    return ended


class Deployment:
    """Redis, a database, and the API, workers and beat, each a process of its own.

    ``env`` is what the API, workers and beat run with; change it before starting one.
    Every part leads a session of its own, so that stopping or killing it ends whatever
    it forked (a worker's pool). With ``logs``, a part's output goes to
    ``<data_dir>/<name>.log``; without, to this process's.
    """

    def __init__(
        self,
        root: Path,
        database: str,
        *,
        plugin: str,
        plugin_dir: Path,
        env: Mapping[str, str] | None = None,
        inherit_settings: bool = True,
        redis_url: str | None = None,
        postgres_admin: str = POSTGRES_ADMIN,
        database_prefix: str = "longplay_test",
        logs: bool = False,
    ) -> None:
        """A deployment in ``root`` on a fresh ``database`` (``sqlite`` or ``postgresql``)
        and a running Redis: the embedded one, or ``redis_url``'s. Its parts load the job
        kinds of module ``plugin``, found in ``plugin_dir``; ``env`` adds to or overrides
        their settings, and without ``inherit_settings`` they get none of this process's
        ``LONGPLAY_*`` variables."""
        self.data_dir = root
        root.mkdir(parents=True, exist_ok=True)
        self.database_kind = database
        self.postgres_admin = postgres_admin
        self._logs = logs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        """The latest process of each part, by name."""
        self._started: list[subprocess.Popen[bytes]] = []
        self._keys: dict[str, str] = {}
        self.database_url = create_database(
            database, root, admin=postgres_admin, prefix=database_prefix
        )
        try:
            self.redis_url = redis_url or self.start_redis()
        except BaseException:
            self.close()
            raise
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        outer = {
            k: v for k, v in os.environ.items() if inherit_settings or not k.startswith("LONGPLAY_")
        }
        self.env: dict[str, str] = {
            **outer,
            "LONGPLAY_DATA_DIR": str(root),
            "LONGPLAY_DATABASE_URL": self.database_url,
            "LONGPLAY_REDIS_URL": self.redis_url,
            "LONGPLAY_API_PORT": str(port),
            "LONGPLAY_PLUGINS": json.dumps([plugin]),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(plugin_dir), os.environ.get("PYTHONPATH", "")) if p
            ),
            **(env or {}),
        }

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- parts ----------------------------------------------------------------------------
    def spawn(
        self, name: str, command: Sequence[str], env: Mapping[str, str] | None = None
    ) -> None:
        """Start a part; it replaces any earlier process of that name in :attr:`processes`."""
        log = self.data_dir / f"{name}.log"
        with log.open("ab") if self._logs else contextlib.nullcontext() as out:
            process = subprocess.Popen(
                list(command),
                env=None if env is None else dict(env),
                stdout=out,
                stderr=subprocess.STDOUT if self._logs else None,
                start_new_session=True,
            )
        self._started.append(process)
        self.processes[name] = process

    def start_redis(self) -> str:
        """Start the embedded Redis on its files in the data folder (again, after a kill);
        its URL."""
        from longplay.embedded import redis_command, wait_until_ready
        from longplay.settings import Settings

        settings = Settings(data_dir=self.data_dir)
        self.spawn("redis", redis_command(settings))
        wait_until_ready(settings.redis_socket)
        return f"unix://{settings.redis_socket}"

    def start_api(self, timeout: float = 30) -> None:
        self.spawn("api", [sys.executable, "-m", "longplay", "api"], self.env)
        wait_until(self._api_answers, timeout=timeout, what="the API to answer")

    def _api_answers(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/openapi.json", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start_worker(self, concurrency: int = 2, *, wait: bool = True) -> None:
        """Start ``longplay worker``; with ``wait``, until ``/healthz`` counts a worker."""
        command = [sys.executable, "-m", "longplay", "worker", f"--concurrency={concurrency}"]
        self.spawn("worker", command, self.env)
        if wait:
            wait_until(
                lambda: self.health().get("workers", 0) >= 1,
                timeout=60,
                every=0.5,
                what="a worker in /healthz",
            )

    def start_beat(self) -> None:
        self.spawn("beat", [sys.executable, "-m", "longplay", "beat"], self.env)

    def stop(self, name: str, timeout: float = 20) -> bool:
        """SIGTERM a part, ``kill -9`` after ``timeout`` s; whether it ended by itself."""
        process = self.processes.get(name)
        return process is None or stop_process(process, timeout=timeout)

    def stop_worker(self) -> None:
        """Stop the worker as a supervisor would, letting it finish what it runs."""
        if not self.stop("worker", timeout=60):
            raise TimeoutError("the worker did not stop within 60 s of SIGTERM")

    def kill(self, name: str) -> None:
        """``kill -9`` a part with all its processes (a worker's pool included)."""
        kill_group(self.processes[name])

    def kill_worker(self) -> None:
        """``kill -9`` the worker and its pool: nothing gets to clean up."""
        self.kill("worker")

    def health(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.api_url}/healthz", timeout=10).json())

    def wait_healthy(self, timeout: float = 90) -> None:
        """Wait until ``/healthz`` answers 200: every part is up."""

        def healthy() -> bool:
            try:
                return httpx.get(f"{self.api_url}/healthz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=timeout, every=0.25, what="the deployment to be healthy")

    def log_tails(self, lines: int = 30) -> str:
        """The last ``lines`` of each part's log (with ``logs``)."""
        parts = []
        for log in sorted(self.data_dir.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def close(self) -> None:
        """End every part, the worker first and then the rest newest first, and drop the
        database. An idle worker stops cleanly in about 2 s (its pool's temporary files
        go with it); one still running a job is killed after 3, not given the
        ``shutdown_grace`` to save what is thrown away with the rest (tests of a clean
        stop call :meth:`stop_worker` themselves)."""
        self.stop("worker", timeout=3)
        for process in reversed(self._started):
            stop_process(process)
        drop_database(self.database_url, admin=self.postgres_admin)

    # -- clients --------------------------------------------------------------------------
    def key(self, owner: str) -> str:
        """A key for ``owner``; an owner whose name starts with ``admin`` is an admin."""
        if owner not in self._keys:
            from longplay.store.db import session_scope
            from longplay.store.owners import create_key, get_or_create_owner

            with session_scope(self.database_url) as session:
                made = get_or_create_owner(session, owner, is_admin=owner.startswith("admin"))
                self._keys[owner] = str(create_key(session, made))
        return self._keys[owner]

    def client(self, owner: str = "alice", timeout: float = 30) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {self.key(owner)}"},
            timeout=timeout,
        )
