"""More than one machine, without containers: the machine's own Redis and PostgreSQL,
two ``longplay api`` processes, two ``longplay worker`` processes and one ``longplay
beat``, each on its own, sharing one data folder as the compose file's parts share one
volume. Nothing here knows of the other parts but through those servers."""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import jsonschema
import pytest
import redis
import yaml
from conftest import PG_ADMIN, TESTS, free_port, postgres_reachable, wait_for_status, wait_until
from harness import Deployment

REDIS_URL = os.environ.get("LONGPLAY_TEST_DISTRIBUTED_REDIS_URL", "redis://127.0.0.1:6379/11")
"""A database of its own on the machine's Redis: emptied before and after, never another."""
HEALTHCHECK = TESTS.parent / "deploy" / "healthcheck.py"


def _answers(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "", parsed.port or 0), timeout=2):
            return True
    except OSError:
        return False


class Cluster:
    """The parts, each a process of its own, and a client for each API."""

    def __init__(self, root: Path) -> None:
        self.deployment = Deployment(
            root,
            "postgresql",
            plugin="plugin_kinds",
            plugin_dir=TESTS,
            env={
                "LONGPLAY_PROGRESS_WRITE_INTERVAL": "0.2",
                # A silent worker's job is taken back within seconds, not a minute.
                "LONGPLAY_LEASE_SECONDS": "3",
                "LONGPLAY_HEARTBEAT_INTERVAL": "0.5",
                "LONGPLAY_REAPER_INTERVAL": "1",
            },
            redis_url=REDIS_URL,
            postgres_admin=PG_ADMIN,
            database_prefix="longplay_distributed",
            logs=True,
        )
        self.api_urls: list[str] = []

    def start(self) -> None:
        d = self.deployment
        for n in (1, 2):
            port = free_port()
            api = [sys.executable, "-m", "longplay", "api"]
            d.spawn(f"api-{n}", api, {**d.env, "LONGPLAY_API_PORT": str(port)})
            self.api_urls.append(f"http://127.0.0.1:{port}")
        for n in (1, 2):
            worker = [sys.executable, "-m", "longplay", "worker", "--concurrency=1"]
            d.spawn(f"worker-{n}", worker, d.env)
        d.start_beat()
        d.api_url = self.api_urls[0]
        for url in self.api_urls:
            wait_until(partial(_get_ok, f"{url}/openapi.json"), timeout=60, every=0.25)
        wait_until(lambda: d.health().get("workers", 0) >= 2, timeout=60, every=0.5)

    def client(self, n: int) -> httpx.Client:
        """A client of API ``n`` (1 or 2), as one owner."""
        key = self.deployment.key("alice")
        return httpx.Client(
            base_url=self.api_urls[n - 1], headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def worker_of(self, main_pid: int) -> str:
        """The name of the part whose main process is ``main_pid``."""
        for name, process in self.deployment.processes.items():
            if name.startswith("worker-") and process.pid == main_pid:
                return name
        raise AssertionError(f"no worker of ours has pid {main_pid}")


def _get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not (_answers(REDIS_URL) and postgres_reachable()):
        message = f"the distributed test needs Redis at {REDIS_URL} and PostgreSQL at {PG_ADMIN}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    broker = redis.Redis.from_url(REDIS_URL)
    broker.flushdb()
    made = Cluster(tmp_path_factory.mktemp("shared-data"))
    try:
        made.start()
        yield made
    except BaseException:
        print(made.deployment.log_tails())
        raise
    finally:
        made.deployment.close()
        broker.flushdb()
        broker.close()


def _follow(client: httpx.Client, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """A job's live events, read to the end of the stream: (event, data) pairs."""
    events: list[tuple[str, dict[str, Any]]] = []
    name = ""
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=60) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line[5:])))
    return events


def _main_pid(worker: str) -> int:
    """A holder is ``host:worker pid:pool process pid``."""
    return int(worker.split(":")[1])


def test_submitted_through_one_api_followed_and_downloaded_through_the_other(
    cluster: Cluster,
) -> None:
    text = "made by a worker, read through another API"
    with cluster.client(1) as one, cluster.client(2) as two:
        response = one.post(
            "/v1/jobs", json={"kind": "sleep", "params": {"seconds": 1, "ticks": 5, "text": text}}
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]

        events = _follow(two, job_id)
        names = [name for name, _ in events]
        assert names[-1] == "completed" and "running" in names
        assert any(name == "progress" and 0 < data["progress"] < 100 for name, data in events)

        job = two.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "completed" and job["progress"] == 100
        [output] = job["outputs"]
        content = two.get(f"/v1/artifacts/{output['id']}/content")
        assert content.status_code == 200 and content.text == text
        [attempt] = two.get(f"/v1/jobs/{job_id}/attempts").json()
        assert cluster.worker_of(_main_pid(attempt["worker"])).startswith("worker-")


def test_a_job_survives_kill_9_of_the_worker_running_it(cluster: Cluster) -> None:
    with cluster.client(2) as client:
        response = client.post(
            "/v1/jobs", json={"kind": "sleep", "params": {"seconds": 4, "ticks": 40}}
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        wait_for_status(client, job_id, {"running"}, timeout=30)
        [first] = wait_until(lambda: client.get(f"/v1/jobs/{job_id}/attempts").json(), timeout=10)
        victim = cluster.worker_of(_main_pid(first["worker"]))
        cluster.deployment.kill(victim)  # kill -9, pool included: no requeue, no release
        # Its processes leave GET /v1/workers (their reports stay in Redis for a day).
        killed = f"{first['worker'].rsplit(':', 1)[0]}:"
        listed = [w["name"] for w in client.get("/v1/workers").json()]
        assert listed and not [name for name in listed if name.startswith(killed)]

        # Its lease lapses, beat's reaper sends it back, and the other worker runs it.
        done = wait_for_status(client, job_id, {"completed", "failed"}, timeout=60)
        assert done["status"] == "completed" and done["attempts"] == 2
        attempts = client.get(f"/v1/jobs/{job_id}/attempts").json()
        assert [a["outcome"] for a in attempts] == ["lost", "completed"]
        assert attempts[0]["error"]["code"] == "worker_lost"
        survivor = cluster.worker_of(_main_pid(attempts[1]["worker"]))
        assert survivor != victim

    # The compose file's health checks, here: a worker lives on this host; both APIs
    # answer with their store and Redis up; nothing listens on a free port.
    env = cluster.deployment.env
    check = [sys.executable, str(HEALTHCHECK)]
    assert subprocess.run([*check, "worker"], env=env, timeout=30).returncode == 0
    for url in cluster.api_urls:
        port = url.rsplit(":", 1)[1]
        assert subprocess.run([*check, "api", port], env=env, timeout=30).returncode == 0
    down = subprocess.run(
        [*check, "api", str(free_port())], env=env, capture_output=True, text=True, timeout=30
    )
    assert down.returncode == 1 and "api unhealthy" in down.stderr


# -- the compose file and the image ---------------------------------------------------

ROOT = TESTS.parent
COMPOSE = ROOT / "deploy" / "compose.yaml"
LONGPLAY_SERVICES = ("api", "worker-cpu", "worker-gpu", "beat", "flower")


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def _compose_spec_errors(document: dict[str, Any]) -> list[str]:
    """What the Compose Specification's JSON Schema (as check-jsonschema ships it) finds."""
    schema = json.loads(
        (files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
    )
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_the_compose_file_follows_the_compose_specification() -> None:
    document = _compose()
    assert _compose_spec_errors(document) == []
    # The schema does refuse what Compose would: a key it does not know.
    broken = copy.deepcopy(document)
    broken["services"]["api"]["replicas"] = 2
    assert any("replicas" in error for error in _compose_spec_errors(broken))
    # Where Docker's compose plugin is installed (not on the test machines), it has its say.
    if shutil.which("docker"):
        plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if plugin.returncode == 0:
            config = subprocess.run(
                ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert config.returncode == 0, config.stderr


def test_the_compose_file_runs_every_part_on_shared_servers() -> None:
    services = _compose()["services"]
    assert set(services) == {"redis", "postgres", *LONGPLAY_SERVICES}
    redis_command = services["redis"]["command"]
    assert services["redis"]["image"].startswith("redis:7")
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["beat"]["deploy"]["replicas"] == 1
    for name in LONGPLAY_SERVICES:
        service = services[name]
        env = service["environment"]
        assert urlparse(env["LONGPLAY_REDIS_URL"]).hostname == "redis", name
        database = urlparse(env["LONGPLAY_DATABASE_URL"])
        assert database.scheme == "postgresql" and database.hostname == "postgres", name
        assert env["LONGPLAY_DATA_DIR"] == "/data" and "artifacts:/data" in service["volumes"]
        assert set(service["depends_on"]) == {"redis", "postgres"}
    assert "artifacts" in _compose()["volumes"]

    gpu = services["worker-gpu"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    assert gpu["environment"]["LONGPLAY_WORKER_QUEUES"] == "gpu"
    assert gpu["command"][gpu["command"].index("--queues") + 1] == "gpu"
    cpu = services["worker-cpu"]
    assert cpu["command"][cpu["command"].index("--queues") + 1] == "cpu"
    # Music jobs go where the GPU is, for the API (which queues them) and the workers alike.
    assert all(
        services[name]["environment"]["LONGPLAY_MUSIC_RESOURCE"] == "gpu"
        for name in LONGPLAY_SERVICES
    )


def test_each_service_command_is_one_longplay_takes() -> None:
    """The image's entry point is ``longplay``: every service's command must parse."""
    from typer.testing import CliRunner

    from longplay.cli import app

    services = _compose()["services"]
    runner = CliRunner()
    for name in LONGPLAY_SERVICES:
        result = runner.invoke(app, [*services[name]["command"], "--help"])
        assert result.exit_code == 0, f"{name}: {result.output}"
    unknown = runner.invoke(app, ["worker", "--no-such-option", "--help"])
    assert unknown.exit_code != 0


def test_the_image_installs_as_the_readme_does_and_runs_as_no_root() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    froms = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert froms and all(image == "python:3.11-slim" for image in froms)
    text = "\n".join(lines)
    assert "--no-deps --wheel-dir /wheels basic-pitch==0.4.0" in text
    assert "--no-deps /wheels/basic_pitch-" in text
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    assert 'ENTRYPOINT ["longplay"]' in lines
    # Everything the image copies gets past .dockerignore.
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for needed in ("pyproject.toml", "README.md", "src/", "deploy/healthcheck.py"):
        assert f"!{needed}" in ignore
