"""Fixtures that start the real parts: Redis, SQLite or PostgreSQL, a Celery worker
process and the API process. Nothing here is mocked or eager; ``harness`` starts and
stops the processes, for the benches too."""

from __future__ import annotations

import io
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import wave
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import harness
import httpx
import pytest
import redis
from harness import Deployment, free_port

__all__ = [
    "PG_ADMIN",
    "TESTS",
    "Stack",
    "create_database",
    "drop_database",
    "free_port",
    "postgres_reachable",
    "signed_in_browser",
    "submit",
    "wait_for_status",
    "wait_until",
]

TESTS = Path(__file__).parent
# An engine call that fails as a busy server does is tried again within the call for a
# minute by default; here it is handed to the job's retries at once (the engine tests
# and every stack inherit this), and tests/test_engine_client.py tries it within calls.
os.environ.setdefault("LONGPLAY_ENGINE_RETRY_WITHIN", "0")
PG_ADMIN = os.environ.get("LONGPLAY_TEST_POSTGRES_URL", harness.POSTGRES_ADMIN)
TEST_REDIS = os.environ.get("LONGPLAY_TEST_REDIS_URL")
# Under ``pytest -n N`` each process takes every Nth database, from its own first one.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_redis_dbs = itertools.count(
    1 + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")), _WORKERS
)


def postgres_reachable() -> bool:
    return harness.postgres_reachable(PG_ADMIN)


def assert_mypy_strict(*files: Path, cwd: Path) -> None:
    """``mypy --strict`` passes over ``files``, run in ``cwd`` as a user would, outside this
    repository, with longplay found as an installed package (its types reach mypy only
    through its py.typed marker); what the files import is read for its types, not
    judged. Celery ships no types (the test kinds import one of its exceptions)."""
    config = cwd / "mypy.ini"
    config.write_text("[mypy]\n[mypy-celery.*]\nignore_missing_imports = True\n")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "mypy", "--config-file", str(config), "--strict"),
            *("--follow-imports=silent", "--cache-dir", str(TESTS.parent / ".mypy_cache")),
            *map(str, files),
        ],
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k != "MYPYPATH"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"mypy --strict failed:\n{done.stdout}{done.stderr}"


def wait_until(check: Callable[[], Any], *, timeout: float = 60, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail the test on timeout."""
    try:
        return harness.wait_until(check, timeout=timeout, every=every)
    except TimeoutError as exc:
        pytest.fail(str(exc))


def create_database(kind: str, folder: Path) -> str:
    """A fresh, migrated database: a SQLite file in ``folder`` or a new PostgreSQL one."""
    return harness.create_database(kind, folder, admin=PG_ADMIN)


def drop_database(url: str) -> None:
    harness.drop_database(url, admin=PG_ADMIN)


def _test_redis() -> str | None:
    """A database of its own on the server ``LONGPLAY_TEST_REDIS_URL`` names, emptied;
    None (the embedded Redis) when it names none."""
    if not TEST_REDIS:
        return None
    url = f"{TEST_REDIS.rstrip('/').rsplit('/', 1)[0]}/{next(_redis_dbs)}"
    redis.Redis.from_url(url).flushdb()
    return url


class Stack(Deployment):
    """One longplay deployment for the tests: its own data folder, database and Redis."""

    def __init__(self, root: Path, database: str, *, logs: bool = False) -> None:
        super().__init__(
            root,
            database,
            logs=logs,
            plugin="plugin_kinds",
            plugin_dir=TESTS,
            env={
                "LONGPLAY_PROGRESS_WRITE_INTERVAL": "0.2",
                "LONGPLAY_MAX_UPLOAD_BYTES": str(8 * 1024 * 1024),
                # Hybrid search is off by default; the tests run it.
                "LONGPLAY_EMBED_ENGINE": "local",
                # The tests' webhook receivers listen on this machine.
                "LONGPLAY_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            },
            redis_url=_test_redis(),
            postgres_admin=PG_ADMIN,
        )


def run_longplay(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """``longplay ARGS`` as a person runs it, with ``env`` as its whole environment: its
    exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "longplay", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def short_wav() -> bytes:
    """A fifth of a second of silence as a WAV file: audio that decodes."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\0\0" * 3200)
    return out.getvalue()


def signed_in_browser(deployment: Stack, owner: str) -> httpx.Client:
    """A client holding a dashboard session for ``owner``, as a browser would."""
    browser = httpx.Client(base_url=deployment.api_url, timeout=30)
    form = browser.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None, form
    signed_in = browser.post(
        "/login",
        data={"csrf": csrf[1], "next": "/jobs", "api_key": deployment.key(owner)},
        headers={"Origin": deployment.api_url},
    )
    assert signed_in.status_code == 303, signed_in.text
    return browser


def submit(client: httpx.Client, kind: str = "sleep", **body: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"kind": kind, **body})
    assert response.status_code == 202, response.text
    made = dict(response.json())
    assert response.headers["location"] == f"/v1/jobs/{made['id']}"
    return made


def wait_for_status(
    client: httpx.Client, job_id: str, statuses: set[str], *, timeout: float = 60
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in statuses else None

    return dict(wait_until(check, timeout=timeout))


@pytest.fixture
def bench_tmp() -> Iterator[Path]:
    """An empty folder for a bench's ``TMPDIR``, near the root: a bench makes its data
    folder there, with the embedded Redis's socket, whose path holds 107 bytes (pytest's
    own ``tmp_path`` is deeper under ``pytest -n``)."""
    made = Path(tempfile.mkdtemp(prefix="lp-"))
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql" and not postgres_reachable():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have PostgreSQL at {PG_ADMIN}")
        pytest.skip(f"no PostgreSQL at {PG_ADMIN}")
    return str(request.param)


@pytest.fixture(scope="session")
def _shared_stacks() -> Iterator[dict[str, Stack]]:
    """The session's shared deployments by database kind, each stopped at its end."""
    running: dict[str, Stack] = {}
    try:
        yield running
    finally:
        for deployment in running.values():
            deployment.close()


@pytest.fixture(scope="session")
def stack(
    database_kind: str,
    _shared_stacks: dict[str, Stack],
    tmp_path_factory: pytest.TempPathFactory,
) -> Stack:
    """A running deployment (API + a worker of 2 processes) shared by a test session.

    Each kind's stays up until the session ends: under ``pytest -n`` a process runs
    module after module, each on both databases, and would otherwise start the two
    deployments again for every module."""
    if database_kind not in _shared_stacks:
        deployment = Stack(tmp_path_factory.mktemp(f"stack-{database_kind}"), database_kind)
        _shared_stacks[database_kind] = deployment
        deployment.start_api()
        deployment.start_worker()
    return _shared_stacks[database_kind]


@pytest.fixture
def make_stack(
    database_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Stack]]:
    """Fresh deployments for tests that start and stop parts themselves."""
    made: list[Stack] = []

    def make(*, logs: bool = False) -> Stack:
        deployment = Stack(tmp_path_factory.mktemp("own-stack"), database_kind, logs=logs)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.close()
