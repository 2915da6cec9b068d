"""``longplay up`` on embedded defaults: one process tree that stops cleanly and keeps
its queue across a restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import TESTS, free_port, submit, wait_for_status, wait_until

from longplay.client.core import local_url


def start_up(
    data_dir: Path, port: int, out: Path | None = None, **settings: str
) -> subprocess.Popen[bytes]:
    """``longplay up`` on embedded defaults, what it prints written to ``out`` when
    given; ``settings`` are more ``LONGPLAY_*`` variables."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("LONGPLAY_REDIS_URL", "LONGPLAY_DATABASE_URL")
    }
    env.update(
        LONGPLAY_DATA_DIR=str(data_dir),
        LONGPLAY_API_PORT=str(port),
        LONGPLAY_WORKER_CONCURRENCY="1",
        LONGPLAY_SHUTDOWN_GRACE="2",
        LONGPLAY_PLUGINS='["plugin_kinds"]',
        PYTHONPATH=str(TESTS),
        **settings,
    )
    stdout = out.open("wb") if out is not None else None
    try:
        return subprocess.Popen([sys.executable, "-m", "longplay", "up"], env=env, stdout=stdout)
    finally:
        if stdout is not None:
            stdout.close()  # the child holds its own copy


def api_client(data_dir: Path, port: int) -> httpx.Client:
    key = wait_until(
        lambda: (data_dir / "api-key").is_file() and (data_dir / "api-key").read_text()
    )
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {key.strip()}"},
        timeout=30,
    )

    def healthy() -> bool:
        try:
            return client.get("/healthz").json().get("status") == "ok"
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout=90, every=0.5)
    return client


def stop(process: subprocess.Popen[bytes], sig: int) -> int:
    process.send_signal(sig)
    return process.wait(60)


def nothing_listens(data_dir: Path, port: int) -> bool:
    with socket.socket() as s:
        api_down = s.connect_ex(("127.0.0.1", port)) != 0
    with socket.socket(socket.AF_UNIX) as s:
        redis_down = s.connect_ex(str(data_dir / "redis.sock")) != 0
    return api_down and redis_down


@pytest.mark.timeout(300)
def test_up_keeps_queued_jobs_across_restart(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    process = start_up(data_dir, port)
    try:
        client = api_client(data_dir, port)
        # Longer than the worker's shutdown grace: stopped, and run again after the restart.
        blocker = submit(client, params={"seconds": 20, "ticks": 40})
        wait_for_status(client, blocker["id"], {"running"})
        queued = [submit(client, params={"seconds": 0.2})["id"] for _ in range(3)]
        assert stop(process, signal.SIGINT) == 0  # Ctrl-C
        assert nothing_listens(data_dir, port)

        # Listening on every interface, it prints where this machine reaches it.
        printed = tmp_path / "up.txt"
        process = start_up(data_dir, port, printed, LONGPLAY_API_HOST="0.0.0.0")
        client = api_client(data_dir, port)
        assert f"longplay on http://127.0.0.1:{port} " in " ".join(printed.read_text().split())
        for job_id in [blocker["id"], *queued]:
            job = wait_for_status(client, job_id, {"completed", "failed"}, timeout=60)
            assert job["status"] == "completed"
            assert job["attempts"] == 1, "ran exactly once"
        assert stop(process, signal.SIGTERM) == 0
        assert nothing_listens(data_dir, port)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("0.0.0.0", "http://127.0.0.1:8000"),  # printed as is, a browser could not open it
        ("::", "http://127.0.0.1:8000"),
        ("::1", "http://[::1]:8000"),
        ("media.example.org", "http://media.example.org:8000"),
    ],
)
def test_up_prints_an_address_a_browser_on_this_machine_can_open(host: str, url: str) -> None:
    assert local_url(host, 8000) == url
