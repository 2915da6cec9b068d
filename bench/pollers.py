"""Pollers bench: a crowd of front ends on one API, against a bare ASGI app beside it.

Run ``.venv/bin/python bench/pollers.py [--clients 200] [--seconds 60] [--followers 1000]``.
It starts a private deployment (embedded Redis, a fresh SQLite or PostgreSQL database,
``longplay api`` with ``--api-workers`` processes, one worker), submits one job that runs
for a while, and then, with the load generator in this process:

- **paced**: ``--clients`` clients each ``GET /v1/jobs/{id}`` once a second (what open
  dashboards do) for ``--seconds``;
- **back to back**: the same clients with no pause, for ``--seconds``;
- **bare**: the same back-to-back load on a bare Starlette app under the same uvicorn
  (one process, a fixed JSON body of the same size): the ceiling of the server stack
  on this machine, which the longplay row is a ratio of;
- **followers**: ``--followers`` concurrent SSE clients on one held job, which is then
  cancelled; every one must see that last event. It prints the API's memory before and
  with them, and how many Redis connections the API holds meanwhile.

All the while ``/healthz`` is asked four times a second; its slowest answer is printed.
Latencies are from request sent to response read, on keep-alive connections. It exits
non-zero only when something broke (a part did not start, a follower missed the end),
never because of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import harness

BENCH = Path(__file__).resolve().parent
AIM_PACED_P99_MS = 25.0
AIM_BACK_TO_BACK_RPS = 500.0
HEALTH_PROMISE_S = 2.5


class BenchError(Exception):
    """Something broke: a part did not start, or a follower missed its job's end."""


# -- a small HTTP/1.1 client: cheap enough to load a server from the same machine -------


class Connection:
    """One keep-alive connection sending GETs and reading ``Content-Length`` bodies."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self._head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{self._head}\r\n".encode())
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close()
            raise
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length)
        return status, body

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    @property
    def rps(self) -> float:
        return len(self.latencies) / max(1e-9, self.ended - self.started)

    def describe(self) -> str:
        errors = sum(self.errors.values())
        detail = f" ({', '.join(f'{n} x {k}' for k, n in self.errors.items())})" if errors else ""
        return (
            f"{self.rps:7.0f} req/s  p50 {self.pct(50):6.1f} ms  p99 {self.pct(99):7.1f} ms  "
            f"errors {errors}{detail}"
        )


async def load(
    url: str, path: str, headers: dict[str, str], *, clients: int, seconds: float, every: float
) -> Tally:
    """``clients`` connections, each sending a GET every ``every`` s (0: back to back)."""
    host, port = url.removeprefix("http://").split(":")
    tally = Tally(started=time.perf_counter())
    stop_at = tally.started + seconds

    async def client(n: int) -> None:
        connection = Connection(host, int(port), headers)
        # Spread the paced clients over the second, as independent tabs would be.
        next_at = tally.started + (every * n / clients if every else 0)
        while True:
            if every:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                next_at += every
            sent = time.perf_counter()
            if sent >= stop_at:
                break
            try:
                status, _ = await asyncio.wait_for(connection.get(path), 30)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                tally.error(type(exc).__name__)
                connection.close()
                continue
            if status != 200:
                tally.error(f"HTTP {status}")
            else:
                tally.latencies.append(time.perf_counter() - sent)
        connection.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    tally.ended = time.perf_counter()
    return tally


async def watch_health(url: str, done: asyncio.Event) -> tuple[float, int]:
    """The slowest ``/healthz`` answer while ``done`` is not set, and how many failed."""
    host, port = url.removeprefix("http://").split(":")
    slowest, failed = 0.0, 0
    while not done.is_set():
        connection = Connection(host, int(port), {})
        sent = time.perf_counter()
        try:
            status, _ = await asyncio.wait_for(connection.get("/healthz"), 30)
            if status != 200:
                failed += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            failed += 1
        connection.close()
        slowest = max(slowest, time.perf_counter() - sent)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.25)
    return slowest, failed


async def with_health(url: str, work: Awaitable[Tally]) -> tuple[Tally, float, int]:
    done = asyncio.Event()
    watcher = asyncio.create_task(watch_health(url, done))
    try:
        tally = await work
    finally:
        done.set()
    slowest, failed = await watcher
    return tally, slowest, failed


# -- SSE followers ----------------------------------------------------------------------


async def follow(url: str, path: str, key: str, opened: Callable[[], None]) -> bool:
    """Follow one job's events until its ``cancelled`` event; whether it came."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            return False
        opened()
        seen = b""
        while chunk := await reader.read(65536):
            seen = (seen + chunk)[-4096:]
            if b"event: cancelled" in seen:
                return True
        return False
    finally:
        writer.close()


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def api_pids(deployment: harness.Deployment) -> list[int]:
    """The API process and, with several workers, its children."""
    root = deployment.processes["api"].pid
    children = Path(f"/proc/{root}/task/{root}/children")
    found = [root]
    with contextlib.suppress(OSError):
        found += [int(p) for p in children.read_text().split()]
    return found


def redis_connections(client: redis.Redis) -> int:
    """Connections to the deployment's Redis, from every process."""
    return int(client.info("clients")["connected_clients"])


async def followers_run(
    deployment: harness.Deployment, key: str, count: int
) -> tuple[int, float, float, int, int]:
    """``count`` followers on one job, held back by its ``run_at`` until they are all
    connected, then cancelled: its last event goes to all of them at once."""
    with deployment.client("bench") as http:
        run_at = datetime.now(UTC) + timedelta(days=1)
        job = http.post("/v1/jobs", json={"kind": "noop", "run_at": run_at.isoformat()}).json()
    redis_client = redis.Redis.from_url(deployment.redis_url)
    pids = api_pids(deployment)
    rss_before = rss_mib(pids)
    connections_before = redis_connections(redis_client)
    opened = 0

    def one_opened() -> None:
        nonlocal opened
        opened += 1

    path = f"/v1/jobs/{job['id']}/events"
    tasks = [
        asyncio.create_task(follow(deployment.api_url, path, key, one_opened)) for _ in range(count)
    ]
    deadline = time.monotonic() + 120
    while opened < count and time.monotonic() < deadline:
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)
    rss_with = rss_mib(pids)
    connections_with = redis_connections(redis_client)
    with deployment.client("bench") as http:
        cancelled = http.post(f"/v1/jobs/{job['id']}/cancel")
        if cancelled.status_code != 200:
            raise BenchError(f"cancel answered {cancelled.status_code}: {cancelled.text}")
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 120)
    saw_end = sum(1 for r in results if r is True)
    return saw_end, rss_before, rss_with, connections_before, connections_with


# -- the bare baseline ------------------------------------------------------------------


def serve_bare(port: int, body_file: str) -> None:
    """A Starlette app answering one fixed JSON body: the server stack and nothing else."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    body = Path(body_file).read_bytes()

    async def job(request: object) -> Response:
        return Response(body, media_type="application/json")

    app = Starlette(routes=[Route("/job", job), Route("/healthz", job)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# -- the run ----------------------------------------------------------------------------


async def run(args: argparse.Namespace, deployment: harness.Deployment) -> int:
    key = deployment.key("bench")
    headers = {"Authorization": f"Bearer {key}"}
    with deployment.client("bench") as http:
        target = http.post("/v1/jobs", json={"kind": "noop", "params": {"sleep_ms": 60_000}})
        target.raise_for_status()
        job_id = target.json()["id"]
        harness.wait_until(
            lambda: http.get(f"/v1/jobs/{job_id}").json()["status"] == "running",
            timeout=30,
            what="the polled job to run",
        )
        body = http.get(f"/v1/jobs/{job_id}").content
    path = f"/v1/jobs/{job_id}"
    print(f"polled job {job_id} ({len(body)} bytes), api processes {args.api_workers}")

    print(f"{args.clients} clients, {args.seconds:g} s each, load generator on this machine")
    aims: list[tuple[str, bool]] = []
    slowest_health, health_failed = 0.0, 0
    for label, every in (("paced, 1/s each", 1.0), ("back to back", 0.0)):
        tally, slowest, failed = await with_health(
            deployment.api_url,
            load(
                deployment.api_url,
                path,
                headers,
                clients=args.clients,
                seconds=args.seconds,
                every=every,
            ),
        )
        print(f"  {label:<18}{tally.describe()}", flush=True)
        slowest_health, health_failed = max(slowest_health, slowest), health_failed + failed
        if every:
            aims.append(
                (
                    "paced p99 < 25 ms, 0 errors",
                    tally.pct(99) < AIM_PACED_P99_MS and not tally.errors,
                )
            )
        else:
            busy = tally
            aims.append(
                (
                    "back to back >= 500 req/s, 0 errors",
                    tally.rps >= AIM_BACK_TO_BACK_RPS and not tally.errors,
                )
            )
        # A server that fell behind answers the rest of its queue first.
        harness.wait_until(lambda: _answers(deployment.api_url), timeout=300, what="the API")

    body_file = deployment.data_dir / "bare-body.json"
    body_file.write_bytes(body)
    port = harness.free_port()
    bare_process = subprocess.Popen(
        [sys.executable, __file__, "--serve-bare", str(port), str(body_file)]
    )
    try:
        bare_url = f"http://127.0.0.1:{port}"
        harness.wait_until(lambda: _answers(bare_url), timeout=30, what="the bare app to answer")
        bare = await load(bare_url, "/job", {}, clients=args.clients, seconds=args.seconds, every=0)
    finally:
        bare_process.terminate()
        bare_process.wait(10)
    print(f"  {'bare app, b2b':<18}{bare.describe()}")
    print(f"  {'longplay / bare':<18}{busy.rps / max(bare.rps, 1e-9):.2f} of the requests/s")
    print(
        f"  {'/healthz slowest':<18}{slowest_health:.2f} s, failed {health_failed} "
        f"(promise: within {HEALTH_PROMISE_S} s)"
    )
    aims.append(("/healthz within 2.5 s", slowest_health <= HEALTH_PROMISE_S and not health_failed))

    saw_end, rss_before, rss_with, conns_before, conns_with = await followers_run(
        deployment, key, args.followers
    )
    print(f"{args.followers} SSE followers on one job")
    print(f"  saw the last event {saw_end}/{args.followers}")
    print(f"  API memory        {rss_before:.0f} MiB before, {rss_with:.0f} MiB with them")
    print(f"  Redis clients     {conns_before} before, {conns_with} with them (whole server)")
    print()
    aims.append(("every follower saw the end", saw_end == args.followers))
    for what, met in aims:
        print(f"  {'met ' if met else 'MISS'}  {what}")
    return 0 if saw_end == args.followers else 1


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]), sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--followers", type=int, default=1000)
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    # Every follower is a socket here and in the API (which inherits this limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with (
        tempfile.TemporaryDirectory(prefix="longplay-pollers-") as root,
        harness.Deployment(
            Path(root),
            args.database,
            plugin="bench_kinds",
            plugin_dir=BENCH,
            env={"LONGPLAY_API_WORKERS": str(args.api_workers), "LONGPLAY_LOG_LEVEL": "warning"},
            database_prefix="longplay_bench",
            logs=True,
        ) as deployment,
    ):
        deployment.start_api()
        deployment.start_worker(concurrency=2)
        try:
            return asyncio.run(run(args, deployment))
        except BenchError as exc:
            print(f"broke: {exc}\n{deployment.log_tails()}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    raise SystemExit(main())
