"""Dispatch bench: longplay against bare Celery and RQ, on one Redis with as many worker
processes each.

Run ``.venv/bin/python bench/dispatch.py [--jobs N] [--concurrency C] [--database D]``
(D: ``sqlite`` or ``postgresql``). It starts a private deployment (embedded Redis unless
``LONGPLAY_BENCH_REDIS_URL`` is set, a fresh database, ``longplay api``, ``longplay worker``,
a bare Celery worker with the same settings and, when the ``bench`` extra is installed, RQ
workers), measures submit latency, a burst of submits and throughput of trivial jobs,
prints tables of ratios and the verdicts against the aims, and removes everything it
started. It exits non-zero only when something broke (a job failed or was lost), never
because of the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import redis
from celery import Celery
from kombu import Queue

# The process harness is shared with the tests, and lives with them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import harness

BENCH = Path(__file__).resolve().parent
OWNER = "bench"
"""The owner that submits every longplay job of the bench."""
BARE_TASK = "bench.noop"
BARE_QUEUES = ("bench.high", "bench.normal", "bench.low")
AIM_THROUGHPUT_RATIO = 0.8
AIM_SUBMIT_P99_MS = 20.0
POLL = 0.1
RQ_QUEUE = "bench-rq"
HAS_RQ = importlib.util.find_spec("rq") is not None
"""RQ comes with the ``bench`` extra (``pip install -e '.[bench]'``); without it the RQ
column is left out."""


@dataclass(frozen=True)
class Aims:
    """Issue 8's aims for no-op jobs, all measured in one run."""

    cpu_per_job_ms: float = 10.0
    """CPU per job in every process (client, API, worker, Redis)."""
    throughput_vs_rq: float = 2.0
    throughput_vs_bare: float = 0.5
    submit_p99_ms: float = 20.0
    to_running_p50_ms: float = 15.0
    to_running_p99_ms: float = 40.0
    burst_submit_p99_ms: float = 50.0


AIMS = Aims()


class BenchError(Exception):
    """Something broke: a job failed, was lost, or a part did not start."""


# -- the bare Celery app: longplay's settings that matter, and nothing else ---------------


_bare_redis: tuple[int, redis.Redis] | None = None


def bare_redis(url: str) -> redis.Redis:
    """One Redis client per process (a forked pool child makes its own)."""
    global _bare_redis
    if _bare_redis is None or _bare_redis[0] != os.getpid():
        _bare_redis = (os.getpid(), redis.Redis.from_url(url))
    return _bare_redis[1]


def make_bare_app(broker_url: str, redis_url: str) -> Celery:
    """A Celery app configured like ``longplay.broker.app`` with one task that does nothing
    but record that (and when) it ran."""
    app = Celery("bench_bare", broker=broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        task_queues=[Queue(name) for name in BARE_QUEUES],
        task_default_queue="bench.normal",
        task_create_missing_queues=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "queue_order_strategy": "priority",
            "visibility_timeout": 7 * 24 * 3600,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )

    @app.task(name=BARE_TASK, ignore_result=True)
    def noop(key: str, index: int, sleep_ms: float = 0.0) -> None:
        if sleep_ms:
            time.sleep(sleep_ms / 1000)
        pipe = bare_redis(redis_url).pipeline(transaction=False)
        pipe.hset(f"{key}:ran", str(index), repr(time.time()))
        pipe.incr(f"{key}:count")
        pipe.execute()

    return app


def run_bare_worker(concurrency: int) -> None:
    """The bare worker process: started the way ``longplay worker`` starts its own."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = make_bare_app(os.environ["BENCH_BROKER_URL"], os.environ["BENCH_REDIS_URL"])
    app.worker_main(
        [
            "worker",
            "--loglevel=INFO",
            f"--concurrency={concurrency}",
            f"--queues={','.join(BARE_QUEUES)}",
            f"--hostname=bench-bare-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )


# -- RQ: the simplest peer, as its README runs it ---------------------------------------------


def rq_noop(key: str, index: int, sleep_ms: float = 0.0) -> None:
    """The RQ job: like the bare Celery task, it records that (and when) it ran."""
    if sleep_ms:
        time.sleep(sleep_ms / 1000)
    pipe = bare_redis(os.environ["BENCH_REDIS_URL"]).pipeline(transaction=False)
    pipe.hset(f"{key}:ran", str(index), repr(time.time()))
    pipe.incr(f"{key}:count")
    pipe.execute()


def run_rq_worker() -> None:
    """One RQ worker process: it forks a work horse for each job, as RQ does."""
    from rq import Worker

    # Jobs name their function ``dispatch.rq_noop``: this very module, imported once here
    # rather than by each forked work horse (as a task module that imports only redis).
    sys.modules.setdefault("dispatch", sys.modules["__main__"])
    connection = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    Worker([RQ_QUEUE], connection=connection).work(logging_level="WARNING")


# -- the deployment -------------------------------------------------------------------------


def _proc_stats() -> dict[int, tuple[int, float]]:
    """Every process's parent and CPU seconds (its own plus its reaped children's)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        stats[int(entry.name)] = (int(fields[1]), ticks / tick)
    return stats


def cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each root process and all its descendants (Linux only)."""
    if not Path("/proc/self/stat").is_file():
        return {}
    stats = _proc_stats()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    used: dict[str, float] = {}
    for role, root in roots.items():
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            total += stats.get(pid, (0, 0.0))[1]
            todo.extend(children.get(pid, []))
        used[role] = total
    own = os.times()
    used["client"] = own.user + own.system
    return used


class Deployment(harness.Deployment):
    """The harness's deployment with the ``noop`` kind, plus the bare Celery worker.

    Redis is the embedded one unless ``LONGPLAY_BENCH_REDIS_URL`` names another, which
    both sides then share. This process reads the deployment's settings too, as it
    enqueues in-process.
    """

    def __init__(self, root: Path, database: str, concurrency: int) -> None:
        from longplay.settings import Settings, get_settings

        super().__init__(
            root,
            database,
            plugin="bench_kinds",
            plugin_dir=BENCH,
            env={"LONGPLAY_EVENT_RETENTION_SECONDS": "3600"},
            redis_url=os.environ.get("LONGPLAY_BENCH_REDIS_URL"),
            postgres_admin=os.environ.get("LONGPLAY_BENCH_POSTGRES_URL", harness.POSTGRES_ADMIN),
            database_prefix="longplay_bench",
            logs=True,
        )
        self.concurrency = concurrency
        self.broker_url = Settings(data_dir=root, redis_url=self.redis_url).broker_url
        self.env.update(BENCH_BROKER_URL=self.broker_url, BENCH_REDIS_URL=self.redis_url)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("LONGPLAY_")})
        get_settings.cache_clear()

    def start(self) -> None:
        """Start the workers and the API, with the key that in-process enqueues use."""
        self.key(OWNER)
        self.start_worker(self.concurrency, wait=False)
        bare = [sys.executable, str(Path(__file__).resolve()), "--bare-worker"]
        self.spawn("bare-worker", [*bare, f"--concurrency={self.concurrency}"], self.env)
        if HAS_RQ:
            for n in range(self.concurrency):
                rq_worker = [sys.executable, str(Path(__file__).resolve()), "--rq-worker"]
                self.spawn(f"rq-worker-{n}", rq_worker, self.env)
        self.start_api(timeout=60)

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each part (and of this process, as ``client``)."""
        return cpu_seconds({name: p.pid for name, p in self.processes.items()})

    def client(self, owner: str = OWNER, timeout: float = 60) -> httpx.Client:
        return super().client(owner, timeout)


# -- longplay: submit over HTTP or in-process, follow in the store ----------------------------


@dataclass
class Store:
    """Reads the jobs table directly: the bench's view of what the workers did."""

    url: str
    expected: int = 0
    """Jobs submitted so far in this run, all of which must complete."""

    def counts(self) -> dict[str, int]:
        from sqlalchemy import func, select

        from longplay.store.db import session_scope
        from longplay.store.models import Job

        with session_scope(self.url) as session:
            rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
            return {str(status): int(n) for status, n in rows}

    def wait_all_completed(self, stall_timeout: float) -> None:
        wait_for(lambda: self._progress(), self.expected, stall_timeout, "longplay jobs")

    def _progress(self) -> int:
        counts = self.counts()
        broken = {s: n for s, n in counts.items() if s in ("failed", "cancelled") and n}
        if broken:
            raise BenchError(f"longplay jobs ended badly: {broken}")
        return counts.get("completed", 0)

    def times(self, ids: Sequence[str]) -> dict[str, tuple[float, float]]:
        """``started_at`` and ``finished_at`` of each job, as epoch seconds."""
        from sqlalchemy import select

        from longplay.store.db import session_scope
        from longplay.store.models import Job

        found: dict[str, tuple[float, float]] = {}
        with session_scope(self.url) as session:
            for at in range(0, len(ids), 500):
                query = select(Job.id, Job.started_at, Job.finished_at).where(
                    Job.id.in_(ids[at : at + 500])
                )
                for job_id, started, finished in session.execute(query):
                    found[job_id] = (started.timestamp(), finished.timestamp())
        missing = set(ids) - found.keys()
        if missing:
            raise BenchError(f"{len(missing)} longplay job(s) vanished from the store")
        return found


def wait_for(done: Callable[[], int], target: int, stall_timeout: float, what: str) -> None:
    """Poll ``done()`` until it reaches ``target``; a count that stops moving is a loss."""
    last, moved_at = -1, time.monotonic()
    while True:
        count = done()
        if count >= target:
            return
        if count != last:
            last, moved_at = count, time.monotonic()
        elif time.monotonic() - moved_at > stall_timeout:
            raise BenchError(f"{what}: stuck at {count} of {target} for {stall_timeout:.0f} s")
        time.sleep(POLL)


@dataclass(frozen=True)
class Throughput:
    rate: float
    """Jobs per second, from the first submit to the last job done."""
    cpu_ms: dict[str, float]
    """CPU milliseconds per job of each part (``client`` is this process)."""


def measure(dep: Deployment, jobs: int, run: Callable[[], float]) -> Throughput:
    """Run one throughput phase, noting the CPU each part spent on it."""
    before = dep.cpu()
    rate = run()
    after = dep.cpu()
    return Throughput(rate, {k: 1000 * (after[k] - before.get(k, 0.0)) / jobs for k in after})


def http_submit(client: httpx.Client, work_ms: float = 0.0) -> tuple[str, float, float]:
    """Submit one noop job; its id, the wall clock when the 202 came, and the round trip."""
    body = {"kind": "noop", "params": {"sleep_ms": work_ms}}
    started = time.perf_counter()
    response = client.post("/v1/jobs", json=body)
    elapsed = time.perf_counter() - started
    returned = time.time()
    if response.status_code != 202:
        raise BenchError(f"submit answered {response.status_code}: {response.text[:300]}")
    return str(response.json()["id"]), returned, elapsed


@dataclass(frozen=True)
class Latency:
    round_trip: list[float]
    """Seconds from sending the submit to its answer."""
    to_running: list[float]
    """Seconds from the answer to the job (task) running; negative when it ran first."""

    @property
    def sent_to_running(self) -> list[float]:
        """Seconds from sending the submit to the job (task) running."""
        return [t + r for t, r in zip(self.round_trip, self.to_running, strict=True)]


def longplay_latency(
    dep: Deployment, store: Store, samples: int, gap: float, stall: float
) -> Latency:
    returned: dict[str, float] = {}
    trips: list[float] = []
    with dep.client() as client:
        for _ in range(samples):
            job_id, at, trip = http_submit(client)
            returned[job_id] = at
            trips.append(trip)
            time.sleep(gap)
    store.expected += samples
    store.wait_all_completed(stall)
    times = store.times(list(returned))
    return Latency(trips, [times[j][0] - at for j, at in returned.items()])


def longplay_http_throughput(
    dep: Deployment, store: Store, jobs: int, work_ms: float, submitters: int, stall: float
) -> float:
    clients = [dep.client() for _ in range(submitters)]

    def submit(index: int) -> str:
        return http_submit(clients[index % submitters], work_ms)[0]

    try:
        first = time.time()
        with ThreadPoolExecutor(submitters) as pool:
            ids = list(pool.map(submit, range(jobs)))
    finally:
        for client in clients:
            client.close()
    store.expected += jobs
    store.wait_all_completed(stall)
    last = max(finished for _, finished in store.times(ids).values())
    return jobs / (last - first)


def enqueue_in_process(jobs: int, work_ms: float = 0.0) -> list[str]:
    """Submit noop jobs with the jobs service in this process, as the route does: store
    and announce each, then let admission hand over what is due."""
    from sqlalchemy import select

    from longplay.jobs import submission
    from longplay.kinds import load as load_kinds
    from longplay.store.db import session_scope
    from longplay.store.models import Owner

    load_kinds()
    with session_scope() as session:
        owner = session.scalars(select(Owner).where(Owner.name == "bench")).one()
        session.expunge(owner)
    ids = []
    for _ in range(jobs):
        with session_scope() as session:
            submitted = submission.submit_job(
                session, owner=owner, kind_name="noop", params={"sleep_ms": work_ms}, input_ids=[]
            )
            ids.append(submitted.job.id)
    return ids


def longplay_direct_throughput(store: Store, jobs: int, work_ms: float, stall: float) -> float:
    first = time.time()
    ids = enqueue_in_process(jobs, work_ms)
    store.expected += jobs
    store.wait_all_completed(stall)
    last = max(finished for _, finished in store.times(ids).values())
    return jobs / (last - first)


# -- bare Celery: apply_async from here, count runs in Redis ----------------------------------


class Bare:
    """Sends bare tasks and reads back when each ran."""

    def __init__(self, dep: Deployment) -> None:
        self.app = make_bare_app(dep.broker_url, dep.redis_url)
        self.task: Any = self.app.tasks[BARE_TASK]
        self.redis = redis.Redis.from_url(dep.redis_url)
        self.keys: list[str] = []

    def new_key(self) -> str:
        key = f"bench:{uuid.uuid4().hex[:12]}"
        self.keys.append(key)
        return key

    def send(self, key: str, index: int, work_ms: float = 0.0) -> float:
        """Send one task; the wall clock when ``apply_async`` returned."""
        self.task.apply_async(args=[key, index, work_ms], queue="bench.normal")
        return time.time()

    def wait(self, key: str, count: int, stall: float) -> dict[int, float]:
        wait_for(lambda: int(self.redis.get(f"{key}:count") or 0), count, stall, "bare tasks")
        ran = self.redis.hgetall(f"{key}:ran")
        return {int(i): float(at) for i, at in ran.items()}

    def close(self) -> None:
        for key in self.keys:
            self.redis.delete(f"{key}:ran", f"{key}:count")
        self.redis.close()
        self.app.close()


def bare_latency(bare: Bare, samples: int, gap: float, stall: float) -> Latency:
    key = bare.new_key()
    returned: list[float] = []
    trips: list[float] = []
    for index in range(samples):
        started = time.perf_counter()
        at = bare.send(key, index)
        trips.append(time.perf_counter() - started)
        returned.append(at)
        time.sleep(gap)
    ran = bare.wait(key, samples, stall)
    return Latency(trips, [ran[i] - at for i, at in enumerate(returned)])


def bare_throughput(bare: Bare, jobs: int, work_ms: float, stall: float) -> float:
    key = bare.new_key()
    first = time.time()
    for index in range(jobs):
        bare.send(key, index, work_ms)
    ran = bare.wait(key, jobs, stall)
    return jobs / (max(ran.values()) - first)


class Rq:
    """Enqueues RQ jobs and reads back when each ran."""

    def __init__(self, dep: Deployment) -> None:
        from rq import Queue

        self.redis = redis.Redis.from_url(dep.redis_url)
        self.queue = Queue(RQ_QUEUE, connection=self.redis)
        self.keys: list[str] = []

    def new_key(self) -> str:
        key = f"bench-rq:{uuid.uuid4().hex[:12]}"
        self.keys.append(key)
        return key

    def send(self, key: str, index: int, work_ms: float = 0.0) -> None:
        self.queue.enqueue("dispatch.rq_noop", key, index, work_ms, result_ttl=0, failure_ttl=3600)

    def wait(self, key: str, count: int, stall: float) -> dict[int, float]:
        wait_for(lambda: int(self.redis.get(f"{key}:count") or 0), count, stall, "RQ jobs")
        ran = self.redis.hgetall(f"{key}:ran")
        return {int(i): float(at) for i, at in ran.items()}

    def close(self) -> None:
        for key in self.keys:
            self.redis.delete(f"{key}:ran", f"{key}:count")
        self.queue.empty()
        self.redis.close()


def rq_throughput(peer: Rq, jobs: int, work_ms: float, stall: float) -> float:
    key = peer.new_key()
    first = time.time()
    for index in range(jobs):
        peer.send(key, index, work_ms)
    ran = peer.wait(key, jobs, stall)
    return jobs / (max(ran.values()) - first)


def longplay_burst(
    dep: Deployment, store: Store, jobs: int, clients: int, stall: float
) -> list[float]:
    """``jobs`` submits from ``clients`` threads at once; each submit's round trip."""
    sessions = [dep.client() for _ in range(clients)]
    try:
        with ThreadPoolExecutor(clients) as pool:
            trips = list(pool.map(lambda n: http_submit(sessions[n % clients])[2], range(jobs)))
    finally:
        for session in sessions:
            session.close()
    store.expected += jobs
    store.wait_all_completed(stall)
    return trips


def bare_burst(bare: Bare, jobs: int, clients: int, stall: float) -> list[float]:
    """The same burst of ``apply_async`` calls from as many threads."""
    key = bare.new_key()

    def send(index: int) -> float:
        started = time.perf_counter()
        bare.send(key, index)
        return time.perf_counter() - started

    with ThreadPoolExecutor(clients) as pool:
        trips = list(pool.map(send, range(jobs)))
    bare.wait(key, jobs, stall)
    return trips


def warm_up(
    dep: Deployment, store: Store, bare: Bare, count: int, stall: float
) -> tuple[float, float]:
    """Run a few of each so every pool process has connected and imported what it needs;
    returns how long the very first submit of each took (seconds)."""
    with dep.client() as client:
        firsts = [http_submit(client)[2] for _ in range(count)]
    enqueue_in_process(count)
    store.expected += 2 * count
    store.wait_all_completed(stall)
    key = bare.new_key()
    started = time.perf_counter()
    bare.send(key, 0)
    bare_first = time.perf_counter() - started
    for index in range(1, count):
        bare.send(key, index)
    bare.wait(key, count, stall)
    return firsts[0], bare_first


# -- the report -----------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


@dataclass(frozen=True)
class Row:
    metric: str
    longplay: float
    bare: float

    @property
    def ratio(self) -> float:
        return self.longplay / self.bare if self.bare else float("nan")


def latency_rows(ours: Latency, theirs: Latency) -> list[Row]:
    rows = []
    for name, mine, other in (
        ("submit round trip", ours.round_trip, theirs.round_trip),
        ("submit returned -> running", ours.to_running, theirs.to_running),
        ("submit sent -> running", ours.sent_to_running, theirs.sent_to_running),
    ):
        for pct in (50, 99):
            rows.append(
                Row(
                    f"{name} p{pct} (ms)",
                    1000 * percentile(mine, pct),
                    1000 * percentile(other, pct),
                )
            )
    return rows


CPU_PARTS = (("client (bench process)", "client"), ("longplay api", "api"))


def cpu_rows(runs: dict[str, Throughput]) -> list[tuple[str, list[float]]]:
    """CPU ms per job by part, one value per run; the worker is longplay's or the bare one."""
    if not all(run.cpu_ms for run in runs.values()):
        return []
    rows = [
        (label, [run.cpu_ms.get(key, 0.0) for run in runs.values()]) for label, key in CPU_PARTS
    ]
    worker = [run.cpu_ms["bare-worker" if n == "bare" else "worker"] for n, run in runs.items()]
    rows.append(("worker (main + pool)", worker))
    if all("redis" in run.cpu_ms for run in runs.values()):
        rows.append(("redis", [run.cpu_ms["redis"] for run in runs.values()]))
    rows.append(("total", [sum(column) for column in zip(*(v for _, v in rows), strict=True)]))
    return rows


def print_report(args: argparse.Namespace, rows: list[Row], runs: dict[str, Throughput]) -> None:
    bare = runs["bare"].rate
    verdicts = [("HTTP", Row("throughput, HTTP submit (jobs/s)", runs["http"].rate, bare))]
    if "direct" in runs:
        direct = Row("throughput, in-process enqueue (jobs/s)", runs["direct"].rate, bare)
        verdicts.append(("in-process", direct))
    rows = [*rows, *(row for _, row in verdicts)]
    width = max(len(r.metric) for r in rows) + 2
    print()
    print(
        f"dispatch bench: {args.jobs} jobs, concurrency {args.concurrency}, {args.database}, "
        f"{args.latency_samples} latency samples ({args.gap * 1000:.0f} ms apart), "
        f"{args.work_ms:g} ms of work per throughput job, {os.cpu_count()} cores"
    )
    print(f"{'metric':<{width}}{'longplay':>12}{'bare Celery':>14}{'ratio':>9}")
    for row in rows:
        print(f"{row.metric:<{width}}{row.longplay:>12.2f}{row.bare:>14.2f}{row.ratio:>9.2f}")
    print("(ratio = longplay / bare Celery; bare Celery's submit is the apply_async call)")
    names = {"http": "longplay HTTP", "direct": "in-process", "bare": "bare Celery"}
    ordered = {n: runs[n] for n in names if n in runs}
    cpu = cpu_rows(ordered)
    if cpu:
        heads = "".join(f"{names[n]:>15}" for n in ordered)
        print()
        print(f"{'CPU per job (ms)':<{width}}{heads}")
        for label, values in cpu:
            print(f"{label:<{width}}" + "".join(f"{v:>15.2f}" for v in values))
    print()
    for name, row in verdicts:
        met = "MET" if row.ratio >= AIM_THROUGHPUT_RATIO else "MISSED"
        print(
            f"verdict: throughput ratio {name} = {row.ratio:.3f} "
            f"(aim >= {AIM_THROUGHPUT_RATIO:.2f}): {met}"
        )
    p99 = next(r for r in rows if r.metric == "submit round trip p99 (ms)")
    met = "MET" if p99.longplay < AIM_SUBMIT_P99_MS else "MISSED"
    print(f"verdict: submit p99 = {p99.longplay:.2f} ms (aim < {AIM_SUBMIT_P99_MS:.0f} ms): {met}")
    sys.stdout.flush()


PEERS = {
    "http": ("longplay, HTTP submit", ("client", "api", "worker", "redis")),
    "direct": ("longplay, in-process", ("client", "api", "worker", "redis")),
    "bare": ("bare Celery", ("client", "bare-worker", "redis")),
    "rq": ("RQ", ("client", "rq-workers", "redis")),
}
"""Each throughput run, and the parts whose CPU it spends."""


def cpu_per_job(name: str, run: Throughput) -> float:
    """CPU milliseconds per job in every process of this run's side."""
    parts = dict(run.cpu_ms)
    parts["rq-workers"] = sum(v for k, v in run.cpu_ms.items() if k.startswith("rq-worker-"))
    return sum(parts.get(part, 0.0) for part in PEERS[name][1])


def print_peers(args: argparse.Namespace, rows: list[Row], runs: dict[str, Throughput]) -> None:
    """The no-op jobs against both peers, and the verdicts against issue 8's aims."""
    bare, rq = runs["bare"], runs.get("rq")
    width = 30
    print()
    print(
        f"{'against the peers':<{width}}{'jobs/s':>10}{'CPU ms/job':>12}"
        f"{'x bare Celery':>15}{'x RQ':>8}"
    )
    for name, run in runs.items():
        vs_rq = f"{run.rate / rq.rate:>8.2f}" if rq is not None else f"{'-':>8}"
        print(
            f"{PEERS[name][0]:<{width}}{run.rate:>10.1f}{cpu_per_job(name, run):>12.2f}"
            f"{run.rate / bare.rate:>15.2f}{vs_rq}"
        )
    if rq is None:
        print("(RQ is not installed: pip install -e '.[bench]' for its column)")
    print("(CPU: every process of that side, the bench's own included, per job)")
    print()
    found = {row.metric: row.longplay for row in rows}
    burst = next(m for m in found if m.startswith("burst of") and m.endswith("p99 (ms)"))
    at_most = [
        ("submit p99 (ms)", found["submit round trip p99 (ms)"], AIMS.submit_p99_ms),
        (
            "submit -> running p50 (ms)",
            found["submit sent -> running p50 (ms)"],
            AIMS.to_running_p50_ms,
        ),
        (
            "submit -> running p99 (ms)",
            found["submit sent -> running p99 (ms)"],
            AIMS.to_running_p99_ms,
        ),
        (burst, found[burst], AIMS.burst_submit_p99_ms),
    ]
    at_least = []
    for name in ("http", "direct"):
        if name in runs:
            label, run = PEERS[name][0], runs[name]
            at_most.append(
                (f"CPU per job, {label} (ms)", cpu_per_job(name, run), AIMS.cpu_per_job_ms)
            )
            at_least.append(
                (
                    f"throughput, {label} (x bare Celery)",
                    run.rate / bare.rate,
                    AIMS.throughput_vs_bare,
                )
            )
            if rq is not None:
                at_least.append(
                    (f"throughput, {label} (x RQ)", run.rate / rq.rate, AIMS.throughput_vs_rq)
                )
    for what, value, aim in at_most:
        met = "MET" if value <= aim else "MISSED"
        print(f"aim (issue 8): {what} = {value:.2f} (<= {aim:g}): {met}")
    for what, value, aim in at_least:
        met = "MET" if value >= aim else "MISSED"
        print(f"aim (issue 8): {what} = {value:.2f} (>= {aim:g}): {met}")
    sys.stdout.flush()


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--jobs", type=int, default=500, help="jobs per throughput run")
    add("--concurrency", type=int, default=2, help="pool processes of each worker")
    add("--database", choices=("sqlite", "postgresql"), default="sqlite", help="longplay's store")
    add("--latency-samples", type=int, default=200, help="sequential submits for latency")
    add("--gap", type=float, default=0.05, help="seconds between two latency submits")
    add("--work-ms", type=float, default=0.0, help="each throughput job sleeps this long")
    add("--submitters", type=int, default=4, help="HTTP client threads for throughput")
    add("--no-direct", action="store_true", help="skip the in-process enqueue run")
    add("--burst-jobs", type=int, default=300, help="submits in the burst")
    add("--burst-clients", type=int, default=10, help="HTTP clients submitting the burst")
    add("--stall-timeout", type=float, default=60.0, help="seconds without progress = lost")
    parser.add_argument("--bare-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rq-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    counts = (args.jobs, args.concurrency, args.latency_samples, args.submitters)
    if min(*counts, args.burst_jobs, args.burst_clients) < 1:
        parser.error(
            "--jobs, --concurrency, --latency-samples, --submitters, --burst-jobs and "
            "--burst-clients must be >= 1"
        )
    return args


def _terminate(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def bench(args: argparse.Namespace, root: Path, stack: contextlib.ExitStack) -> None:
    stall, jobs, work = args.stall_timeout, args.jobs, args.work_ms
    dep = stack.enter_context(Deployment(root, args.database, args.concurrency))
    try:
        dep.start()
        store = Store(dep.database_url)
        bare = Bare(dep)
        stack.callback(bare.close)
        peer = Rq(dep) if HAS_RQ else None
        if peer is not None:
            stack.callback(peer.close)
        step("warming up the workers")
        first = warm_up(dep, store, bare, 4 * args.concurrency, stall)
        if peer is not None:
            rq_throughput(peer, 4 * args.concurrency, 0.0, stall)
        step(f"latency: {args.latency_samples} sequential submits each")
        ours = longplay_latency(dep, store, args.latency_samples, args.gap, stall)
        theirs = bare_latency(bare, args.latency_samples, args.gap, stall)
        step(f"burst: {args.burst_jobs} submits from {args.burst_clients} clients each")
        burst = (
            longplay_burst(dep, store, args.burst_jobs, args.burst_clients, stall),
            bare_burst(bare, args.burst_jobs, args.burst_clients, stall),
        )
        step(f"throughput: {jobs} jobs each")
        runs = {
            "bare": measure(dep, jobs, lambda: bare_throughput(bare, jobs, work, stall)),
            "http": measure(
                dep,
                jobs,
                lambda: longplay_http_throughput(dep, store, jobs, work, args.submitters, stall),
            ),
        }
        if not args.no_direct:
            runs["direct"] = measure(
                dep, jobs, lambda: longplay_direct_throughput(store, jobs, work, stall)
            )
        if peer is not None:
            runs["rq"] = measure(dep, jobs, lambda: rq_throughput(peer, jobs, work, stall))
    except BaseException:
        print(dep.log_tails(), file=sys.stderr)
        raise
    rows = [Row("first submit after start (ms)", 1000 * first[0], 1000 * first[1])]
    rows += latency_rows(ours, theirs)
    name = f"burst of {args.burst_jobs} from {args.burst_clients} clients: submit"
    for pct in (50, 99):
        ms = [1000 * percentile(trips, pct) for trips in burst]
        rows.append(Row(f"{name} p{pct} (ms)", ms[0], ms[1]))
    print_report(args, rows, runs)
    print_peers(args, rows, runs)


def step(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare_worker:
        run_bare_worker(args.concurrency)
        return 0
    if args.rq_worker:
        run_rq_worker()
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    with tempfile.TemporaryDirectory(prefix="lp-bench-") as tmp, contextlib.ExitStack() as stack:
        try:
            bench(args, Path(tmp), stack)
        except (BenchError, TimeoutError) as exc:
            print(f"bench broke: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
