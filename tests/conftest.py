"""Fixtures that start the real parts: Redis, SQLite or PostgreSQL, a Celery worker
process and the API process. Nothing here is mocked or eager."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from longplay.config import Settings
from longplay.embedded import redis_command, wait_until_ready
from longplay.store.db import migrate, session_scope
from longplay.store.owners import create_key, get_or_create_owner

TESTS = Path(__file__).parent
PG_ADMIN = os.environ.get(
    "LONGPLAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TEST_REDIS = os.environ.get("LONGPLAY_TEST_REDIS_URL")
_redis_dbs = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_reachable() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def wait_until(check: Callable[[], Any], *, timeout: float = 60, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met in {timeout}s: {check}")
        time.sleep(every)


def create_database(kind: str, folder: Path) -> str:
    """A fresh, migrated database: a SQLite file in ``folder`` or a new PostgreSQL one."""
    if kind == "sqlite":
        url = f"sqlite:///{folder / 'longplay.db'}"
    else:
        name = f"longplay_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    return url


def drop_database(url: str) -> None:
    if url.startswith("postgresql"):
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Stack:
    """One longplay deployment for the tests: its own data folder, database and Redis."""

    def __init__(self, root: Path, database: str) -> None:
        self.data_dir = root
        root.mkdir(parents=True, exist_ok=True)
        self.database_kind = database
        self.database_url = create_database(database, root)
        self.redis_process: subprocess.Popen[bytes] | None = None
        self.redis_url = self._start_redis()
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "LONGPLAY_DATA_DIR": str(root),
            "LONGPLAY_DATABASE_URL": self.database_url,
            "LONGPLAY_REDIS_URL": self.redis_url,
            "LONGPLAY_API_PORT": str(self.port),
            "LONGPLAY_PLUGINS": '["plugin_kinds"]',
            "LONGPLAY_PROGRESS_WRITE_INTERVAL": "0.2",
            "LONGPLAY_MAX_UPLOAD_BYTES": str(8 * 1024 * 1024),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        self.api: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.beat: subprocess.Popen[bytes] | None = None
        self._keys: dict[str, str] = {}

    # -- parts ---------------------------------------------------------------
    def _start_redis(self) -> str:
        if TEST_REDIS:
            url = f"{TEST_REDIS.rstrip('/').rsplit('/', 1)[0]}/{next(_redis_dbs)}"
            redis.Redis.from_url(url).flushdb()
            return url
        settings = Settings(data_dir=self.data_dir)
        self.redis_process = subprocess.Popen(redis_command(settings))
        wait_until_ready(settings.redis_socket)
        return f"unix://{settings.redis_socket}"

    def restart_redis(self) -> None:
        assert self.redis_process is not None, "only the embedded Redis can be restarted"
        self.redis_process.terminate()
        self.redis_process.wait(10)
        self.redis_url = self._start_redis()

    def start_api(self) -> None:
        self.api = subprocess.Popen([sys.executable, "-m", "longplay", "api"], env=self.env)
        wait_until(self._api_answers, timeout=30)

    def _api_answers(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/openapi.json", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start_worker(self, concurrency: int = 2) -> None:
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "longplay", "worker", f"--concurrency={concurrency}"],
            env=self.env,
            process_group=0,  # so that a test can kill the worker with its pool at once
        )
        wait_until(lambda: self.health().get("workers", 0) >= 1, timeout=60, every=0.5)

    def stop_worker(self, sig: int = signal.SIGTERM) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(sig)
            self.worker.wait(60)
        self.worker = None

    def kill_worker(self) -> None:
        """kill -9 the worker and its pool processes: nothing gets to clean up."""
        assert self.worker is not None
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(10)
        self.worker = None

    def start_beat(self) -> None:
        self.beat = subprocess.Popen([sys.executable, "-m", "longplay", "beat"], env=self.env)

    def health(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.api_url}/healthz", timeout=10).json())

    def close(self) -> None:
        self.stop_worker()
        for process in (self.beat, self.api, self.redis_process):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(20)
        drop_database(self.database_url)

    # -- clients -------------------------------------------------------------
    def key(self, owner: str) -> str:
        """A key for ``owner``; an owner whose name starts with ``admin`` is an admin."""
        if owner not in self._keys:
            with session_scope(self.database_url) as session:
                made = get_or_create_owner(session, owner, is_admin=owner.startswith("admin"))
                self._keys[owner] = create_key(session, made)
        return self._keys[owner]

    def client(self, owner: str = "alice") -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {self.key(owner)}"},
            timeout=30,
        )


def submit(client: httpx.Client, kind: str = "sleep", **body: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"kind": kind, **body})
    assert response.status_code == 202, response.text
    return dict(response.json())


def wait_for_status(
    client: httpx.Client, job_id: str, statuses: set[str], *, timeout: float = 60
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in statuses else None

    return dict(wait_until(check, timeout=timeout))


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql" and not postgres_reachable():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have PostgreSQL at {PG_ADMIN}")
        pytest.skip(f"no PostgreSQL at {PG_ADMIN}")
    return str(request.param)


@pytest.fixture(scope="session")
def stack(database_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A running deployment (API + a worker of 2 processes) shared by a test session."""
    deployment = Stack(tmp_path_factory.mktemp(f"stack-{database_kind}"), database_kind)
    try:
        deployment.start_api()
        deployment.start_worker()
        yield deployment
    finally:
        deployment.close()


@pytest.fixture
def make_stack(
    database_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], Stack]]:
    """Fresh deployments for tests that start and stop parts themselves."""
    made: list[Stack] = []

    def make() -> Stack:
        deployment = Stack(tmp_path_factory.mktemp("own-stack"), database_kind)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.close()
