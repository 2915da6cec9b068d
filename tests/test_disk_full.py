"""A full disk under the data folder: the service says so, loses nothing, and mends itself.

Every write answered a 500 ``internal_error`` marked not retryable, with a traceback
of sixty lines in the log, so a client dropped the work it was told not to send again;
the dashboard was down (its session check writes to Redis, which refuses writes while
it cannot write its append-only file); ``/healthz`` said ``ok``; a worker that ended on
that exited 0; and a job whose output did not fit spent its three attempts in sixteen
seconds, before anyone could free space.

The end-to-end test mounts a small tmpfs as the deployment's folder (its SQLite, its
embedded Redis and its files), which needs root; elsewhere it is skipped.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from conftest import Stack, signed_in_browser, submit, wait_until
from sqlalchemy.exc import OperationalError

from longplay.health import FULL_BYTES, disk_state
from longplay.jobs.outages import part_down, storage_full
from longplay.keys import STORE_FULL
from longplay.settings import get_settings

MIB = 2**20


def test_a_full_disk_is_told_apart_from_other_failures() -> None:
    def raised_from(cause: BaseException) -> RuntimeError:
        try:
            raise RuntimeError("while storing") from cause
        except RuntimeError as exc:
            return exc

    sqlite_full = OperationalError(
        "INSERT", {}, sqlite3.OperationalError("database or disk is full")
    )
    for full in (
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/files/x"),
        OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)),
        sqlite_full,
        redis.ResponseError("MISCONF Errors writing to the AOF file: No space left on device"),
        raised_from(OSError(errno.ENOSPC, "No space left on device")),
    ):
        assert storage_full(full), full
    postgres_full = OperationalError("INSERT", {}, psycopg.errors.DiskFull("could not extend"))
    assert storage_full(postgres_full)
    # PostgreSQL raises a full disk as an OperationalError, as it does a dropped
    # connection: a full disk is no outage to retry in seconds (a 503), but a 507.
    assert part_down(postgres_full) is None and part_down(sqlite_full) is None
    refused = OperationalError("SELECT", {}, psycopg.OperationalError("connection refused"))
    assert part_down(refused) == "the store" and not storage_full(refused)
    sqlite_locked = OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    for other in (
        OSError(errno.EACCES, os.strerror(errno.EACCES)),
        sqlite_locked,
        redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        ValueError("no space left on device"),
    ):
        assert not storage_full(other), other


def test_the_disk_is_full_low_or_ok_by_what_is_left() -> None:
    gib = 2**30
    assert disk_state(FULL_BYTES - 1, 100 * gib) == "full"
    assert disk_state(512 * MIB, 100 * gib) == "low"
    assert disk_state(512 * MIB, 2 * gib) == "ok"  # a quarter of a small disk
    assert disk_state(5 * gib, 100 * gib) == "ok"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 MiB tmpfs, or a skip where this process may not mount one."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"no tmpfs to fill here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """A file that takes every byte the disk has left (written unbuffered, so nothing
    is left to fail at its close)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (MIB, 4096, 1):
            block = b"\0" * size
            while True:
                try:
                    if os.write(fd, block) < size:
                        break
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)
def test_a_full_disk_is_a_507_to_retry_and_the_service_mends_when_space_is_freed(
    small_disk: Path, database_kind: str
) -> None:
    with Stack(small_disk / "stack", database_kind, logs=True) as deployment:
        deployment.start_api()
        deployment.start_worker(concurrency=1)
        client = deployment.client("operator")
        browser = signed_in_browser(deployment, "operator")
        first = client.post("/v1/artifacts", files={"file": ("a.txt", b"before")})
        assert first.status_code == 201, first.text

        filler = fill(small_disk / "stack")
        upload = client.post("/v1/artifacts", files={"file": ("b.txt", b"x" * MIB)})
        assert upload.status_code == 507, upload.text
        error = upload.json()["error"]
        assert error["code"] == "storage_full" and error["retryable"] is True, error
        assert error["message"].startswith("the service's storage is full"), error
        assert upload.headers["retry-after"] == "60"
        assert not any((deployment.data_dir / "files" / ".incoming").iterdir())

        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["disk"] == "full", health.text
        assert "disk" in health.json()["down"]
        metrics = client.get("/metrics").text
        [free] = [line for line in metrics.splitlines() if line.startswith("longplay_data_disk")]
        assert float(free.split()[-1]) < FULL_BYTES, free
        page = browser.get("/jobs")  # its session read though Redis takes no writes
        assert page.status_code == 200, page.text[:500]
        # Celery's worker ends on Redis refusing its writes; it ended with 0, so that a
        # supervisor that restarts failures only (systemd's on-failure) left it stopped.
        worker = deployment.processes["worker"]
        wait_until(lambda: worker.poll() is not None, timeout=90)
        assert worker.returncode == 1

        filler.unlink()
        wait_until(lambda: client.get("/healthz").json()["disk"] == "ok", timeout=30)
        again = client.post("/v1/artifacts", files={"file": ("b.txt", b"x" * MIB)})
        assert again.status_code == 201, again.text
        log = (deployment.data_dir / "api.log").read_text()
        assert "Traceback" not in log, log[-3000:]
        assert "POST /v1/artifacts: not done, the service's storage is full (OSError" in log


def test_a_job_that_finds_the_disk_full_waits_a_minute_before_its_retry(
    stack: Stack,
) -> None:
    """The kind's own backoff is seconds; a person frees space in minutes."""
    client = stack.client("operator")
    job = submit(client, params={"seconds": 0.1, "fail": "disk"})

    def retried_once() -> dict[str, Any] | None:
        seen: dict[str, Any] = client.get(f"/v1/jobs/{job['id']}").json()
        return seen if seen["attempts"] == 1 and seen["error"] else None

    seen = wait_until(retried_once, timeout=60)
    assert seen["status"] == "queued", seen
    assert seen["error"]["code"] == "storage_unavailable", seen
    assert seen["error"]["retry_in_seconds"] >= 60, seen
    # Its bar shows the step it finished ("prepare", a tenth), which the retry runs on
    # from: it showed 0 %, and the retry jumped back to 10 %.
    assert seen["progress"] == 10.0 and seen["current_step"] is None, seen
    # Cancelled while it waits: its error no longer says it will be retried.
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["retry_at"] is None, cancelled
    assert cancelled["error"]["code"] == "storage_unavailable", cancelled
    assert cancelled["error"]["retry_in_seconds"] is None, cancelled
    assert client.get(f"/v1/jobs/{job['id']}").json()["error"] == cancelled["error"]


def test_a_write_waits_past_a_lease_for_a_full_disk_but_not_for_a_store_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A finished step whose completion hit a full database disk was given up after a
    lease (60 s): its work thrown away, and the job, found later with its lease
    lapsed, recorded as a lost worker's. The wait is for a person to free space."""
    from longplay.jobs import runner

    monkeypatch.setenv("LONGPLAY_LEASE_SECONDS", "1")
    monkeypatch.setenv("LONGPLAY_HEARTBEAT_INTERVAL", "0.5")
    monkeypatch.setattr(runner, "STORAGE_PATIENCE_S", 4.0)
    get_settings.cache_clear()
    full = OperationalError("INSERT", {}, psycopg.errors.DiskFull("could not extend file"))
    away = OperationalError("INSERT", {}, psycopg.OperationalError("connection refused"))

    def failing(error: OperationalError, times: int) -> tuple[list[float], Callable[[], None]]:
        calls: list[float] = []

        def keep() -> None:
            calls.append(time.monotonic())
            if len(calls) <= times:
                raise error

        return calls, keep

    try:
        calls, keep = failing(full, times=3)  # about 2.5 s of a full disk: past the lease
        runner._kept_in_time("job_x", "step s", keep)
        assert len(calls) == 4 and calls[-1] - calls[0] > 1.0
        calls, keep = failing(away, times=1_000)
        began = time.monotonic()
        with pytest.raises(OperationalError):
            runner._kept_in_time("job_x", "step s", keep)
        assert 1.0 < time.monotonic() - began < 3.5
        calls, keep = failing(full, times=1_000)
        began = time.monotonic()
        with pytest.raises(OperationalError):
            runner._kept_in_time("job_x", "step s", keep)
        assert 4.0 < time.monotonic() - began < 6.5
    finally:
        get_settings.cache_clear()


def test_a_job_failed_by_a_full_database_waits_for_an_operator() -> None:
    from longplay.jobs.failures import job_error
    from longplay.store.models import Job

    full = OperationalError("UPDATE", {}, psycopg.errors.DiskFull("could not extend file"))
    error = job_error(Job(id="job_x", kind="sleep"), None, full)
    assert error.code == "storage_unavailable" and error.retryable, error
    assert str(error) == "the database's disk is full: the job is retried once space is freed"


def test_a_full_database_disk_is_said_by_the_job_and_by_healthz(stack: Stack) -> None:
    """PostgreSQL on a disk of its own (another machine's, often) refused writes for a
    full disk: the jobs it failed said "the database did not answer" and were retried in
    seconds, and /healthz said ok throughout, since its check only reads."""
    client = stack.client("operator")
    marks = redis.Redis.from_url(stack.redis_url)
    try:
        job = submit(client, params={"seconds": 0.1, "fail": "database"})

        def retried_once() -> dict[str, Any] | None:
            seen: dict[str, Any] = client.get(f"/v1/jobs/{job['id']}").json()
            return seen if seen["attempts"] == 1 and seen["error"] else None

        seen = wait_until(retried_once, timeout=60)
        assert seen["error"]["code"] == "storage_unavailable", seen
        assert seen["error"]["retry_in_seconds"] >= 60, seen
        health = client.get("/healthz")
        assert health.status_code == 503, health.text
        said = health.json()
        assert said["disk"] == "full" and "disk" in said["down"], said
        assert said["store"] == "ok" and "store" not in said["down"], said  # reads pass
        assert client.get("/readyz").status_code == 200  # it serves what it can
        client.post(f"/v1/jobs/{job['id']}/cancel")
    finally:
        marks.delete(STORE_FULL)  # the mark lasts a minute: the stack's next tests check health
    assert client.get("/healthz").json()["disk"] == "ok"
