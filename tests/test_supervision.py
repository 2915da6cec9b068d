"""Supervision: ``longplay up`` brings back a part that dies, backing off while it keeps
dying, and ``/healthz`` says what is down meanwhile, without hanging."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port, run_longplay, submit, wait_for_status, wait_until
from test_up import alive, api_client, nothing_listens, start_up

from longplay import supervisor
from longplay.settings import Settings
from longplay.supervisor import CannotStart, Child, Supervisor, backoff, describe_exit


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_exit_is_described_by_code_or_signal() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"


def _crash_and_watch(sup: Supervisor, child: Child) -> None:
    """Let the child's current process end, then have the supervisor notice it."""
    assert child.process is not None
    child.process.wait(10)
    sup.watch()
    assert child.process is None


def test_a_crashing_part_backs_off_and_starts_over_once_stable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    orphan_file = tmp_path / "orphan.pid"
    # Leaves a process behind in its group, as a worker's pool would.
    crasher = Child("crasher", ["sh", "-c", f"sleep 60 & echo $! > {orphan_file}; exit 3"])
    sup = Supervisor(Settings(data_dir=tmp_path), children=[crasher])
    caplog.set_level(logging.INFO, logger="longplay.up")
    crasher.start()
    waits = []
    for _ in range(4):
        _crash_and_watch(sup, crasher)
        waits.append(round(crasher.next_start - time.monotonic()))
        crasher.next_start = 0  # skip the wait
        sup.watch()  # starts it again
    assert waits == [1, 2, 4, 8]
    said = r"crasher \(pid \d+\) exited with code 3 after \d+s up; starting it again in 8s"
    assert re.search(said + r" \(crash 4 in a row\)", caplog.text), caplog.text

    # Up for longer than STABLE_AFTER: its next crash is the first in a row again.
    crasher.started_at = time.monotonic() - supervisor.STABLE_AFTER - 1
    _crash_and_watch(sup, crasher)
    assert crasher.crashes == 1
    assert round(crasher.next_start - time.monotonic()) == 1
    # What it left in its process group went with it.
    orphan = int(orphan_file.read_text())
    wait_until(lambda: not alive(orphan), timeout=10)


def test_a_part_that_stops_cleanly_is_started_again_without_a_crash_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker stopped by hand with SIGTERM exits 0: a warning, not an error that an
    alert on errors would wake someone for."""
    quitter = Child("quitter", ["true"])
    sup = Supervisor(Settings(data_dir=tmp_path), children=[quitter])
    caplog.set_level(logging.INFO, logger="longplay.up")
    quitter.start()
    _crash_and_watch(sup, quitter)
    [said] = [r for r in caplog.records if "starting it again" in r.message]
    assert said.levelno == logging.WARNING and "exited with code 0" in said.message
    assert "(stop 1 in a row)" in said.message and "crash" not in said.message
    sup.stop()


def test_a_killed_part_is_logged_with_its_signal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sleeper = Child("sleeper", ["sleep", "60"])
    sup = Supervisor(Settings(data_dir=tmp_path), children=[sleeper])
    caplog.set_level(logging.INFO, logger="longplay.up")
    sleeper.start()
    assert sleeper.process is not None
    first = sleeper.process.pid
    sleeper.process.kill()
    _crash_and_watch(sup, sleeper)
    assert f"sleeper (pid {first}) was killed by SIGKILL" in caplog.text
    wait_until(lambda: sup.watch() or sleeper.process is not None, timeout=5)
    assert sleeper.process is not None and sleeper.process.pid != first
    sup.stop()
    assert sleeper.process.poll() == -signal.SIGTERM


def test_an_api_that_cannot_listen_at_its_first_start_stops_up(tmp_path: Path) -> None:
    with socket.socket() as other:  # another program on the port
        other.bind(("127.0.0.1", 0))
        other.listen()
        host, port = other.getsockname()
        api = Child("api", ["true"], address=(host, port))
        sup = Supervisor(Settings(data_dir=tmp_path), children=[api])
        api.start()
        assert api.process is not None
        api.process.wait(10)
        with pytest.raises(CannotStart) as refused:
            sup.watch()
        assert str(refused.value) == f"port {port} is in use: stop what uses it or pass --port"
        # After the first start, ending is a crash like any other: it is started again.
        api.start()
        _crash_and_watch(sup, api)
        assert api.crashes == 1
    # So is a first start that ends with the port free: the part itself failed.
    api = Child("api", ["true"], address=(host, port))
    sup = Supervisor(Settings(data_dir=tmp_path), children=[api])
    api.start()
    _crash_and_watch(sup, api)
    assert api.crashes == 1


def test_a_part_that_finds_a_newer_schema_stops_up_instead_of_coming_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In a rolling upgrade a newer longplay moves the schema on under a running ``up``:
    its part that dies and starts again finds the newer schema and exits 78 with one
    line, and ``up`` stops, rather than start it every few seconds for ever."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LONGPLAY_")}
    env["LONGPLAY_DATA_DIR"] = str(tmp_path / "data")
    made = run_longplay("schema", "upgrade", env=env)
    assert made.returncode == 0, made.stderr
    with sqlite3.connect(tmp_path / "data" / "longplay.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999_from_a_newer_longplay'")
    worker = Child("worker", [sys.executable, "-m", "longplay", "worker"], env=env)
    sup = Supervisor(Settings(data_dir=tmp_path), children=[worker])
    caplog.set_level(logging.INFO, logger="longplay.up")
    worker.start()
    assert worker.process is not None
    assert worker.process.wait(60) == 78
    with pytest.raises(CannotStart) as stopped:
        sup.watch()
    assert "worker stopped: a newer longplay upgraded the database's schema" in str(stopped.value)
    assert "starting it again" not in caplog.text
    sup.stop()


# -- the real thing ----------------------------------------------------------------------


def part_pid(up_pid: int, part: str) -> int | None:
    """The pid of ``longplay up``'s child running ``part`` (worker, beat, api, redis)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) != up_pid or fields[0] == "Z":
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        # redis-server rewrites its title: "/path/redis-server unixsocket:/path/redis.sock"
        named = part in words if part != "redis" else bool(words) and "redis-server" in words[0]
        if named:
            return int(entry.name)
    return None


def health(client: httpx.Client) -> tuple[int, dict[str, Any]]:
    started = time.monotonic()
    response = client.get("/healthz", timeout=10)
    assert time.monotonic() - started < 5, "/healthz took too long"
    return response.status_code, dict(response.json())


def degraded(client: httpx.Client) -> dict[str, Any] | None:
    code, body = health(client)
    if code == 503:
        assert body["status"] == "degraded" and body["down"]
        return body
    return None


def healthy(client: httpx.Client) -> bool:
    code, body = health(client)
    return code == 200 and body["status"] == "ok"


def replaced(up_pid: int, part: str, old: int) -> int | None:
    pid = part_pid(up_pid, part)
    return pid if pid is not None and pid != old else None


@pytest.mark.timeout(240)
def test_up_brings_back_a_killed_worker_and_redis(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    process = start_up(
        data_dir,
        port,
        LONGPLAY_LEASE_SECONDS="3",
        LONGPLAY_HEARTBEAT_INTERVAL="0.5",
        LONGPLAY_REAPER_INTERVAL="1",
    )
    try:
        client = api_client(data_dir, port)

        # kill -9 the worker with its pool, while it runs a job.
        worker = wait_until(lambda: part_pid(process.pid, "worker"))
        lost = submit(client, params={"seconds": 3, "ticks": 30})
        wait_for_status(client, lost["id"], {"running"})
        os.killpg(worker, signal.SIGKILL)
        body = wait_until(lambda: degraded(client), timeout=30, every=0.1)
        assert "workers" in body["down"] and body["workers"] == 0
        wait_until(lambda: replaced(process.pid, "worker", worker), timeout=30)
        wait_until(lambda: healthy(client), timeout=60, every=0.2)
        done = wait_for_status(client, lost["id"], {"completed", "failed"}, timeout=90)
        assert done["status"] == "completed" and done["attempts"] == 2

        # kill -9 the embedded Redis while one job runs and one waits in its queue.
        redis_pid = wait_until(lambda: part_pid(process.pid, "redis"))
        running = submit(client, params={"seconds": 3, "ticks": 30})
        wait_for_status(client, running["id"], {"running"})
        queued = submit(client, params={"seconds": 0.2})
        os.kill(redis_pid, signal.SIGKILL)
        body = wait_until(lambda: degraded(client), timeout=30, every=0.1)
        assert "redis" in body["down"] and body["redis"].startswith("error")
        wait_until(lambda: replaced(process.pid, "redis", redis_pid), timeout=30)
        wait_until(lambda: healthy(client), timeout=60, every=0.2)
        for job in (running, queued):
            done = wait_for_status(client, job["id"], {"completed", "failed"}, timeout=90)
            assert done["status"] == "completed" and done["attempts"] == 1, done
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0
    assert nothing_listens(data_dir, port)


def test_health_report_does_not_wait_for_a_part_that_hangs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from longplay import health

    release = threading.Event()
    monkeypatch.setattr(health, "check_store", lambda: release.wait(30))
    monkeypatch.setattr(health, "check_redis", lambda: None)
    monkeypatch.setattr(health, "count_workers", lambda: 2)
    started = time.monotonic()
    try:
        found = health.report()
    finally:
        release.set()
    assert time.monotonic() - started < health.DEADLINE + 1
    assert found.store.startswith("error: no answer") and found.redis == "ok"
    assert found.workers == 2 and found.down == ["store"] and not found.ok
