"""Fault bench: what becomes of running jobs when a part of longplay dies mid-run.

Run ``.venv/bin/python bench/faults.py [--jobs N] [--min-seconds A] [--max-seconds B]
[--concurrency C] [--database sqlite|postgresql] [--faults worker,redis,api,database]
[--json PATH]``. It starts a private deployment (an embedded Redis with its append-only
file, a fresh database, ``longplay api``, ``longplay worker`` and ``longplay beat``), and
for each fault submits a batch of ``fault_sleep`` jobs (``bench/fault_kinds.py``) over
HTTP, follows every one of them over the API's event stream, injects the fault once a
part of the batch is done, and waits until the batch has finished:

- ``worker``: ``kill -9`` the worker's whole process group, then start a new worker;
- ``redis``: ``kill -9`` the embedded Redis, then start it again on the same files;
- ``api``: ``kill -9`` the API, then start it again (the followers reconnect);
- ``database``: SQLite: another process holds its write lock for ``--outage`` seconds;
  PostgreSQL: the database refuses connections and its sessions are ended, for as long.

It prints, for each fault, the jobs submitted, completed, lost (not completed) and
duplicated (their work ran to the end more than once: two ``completed`` attempts in the
store, or two lines in the side channel the kind writes), how many followers saw the
end, and what ``/healthz`` said meanwhile. It removes everything it started and exits
1 when a job was lost or duplicated, 2 when the deployment itself broke.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

# The process harness is shared with the tests, and lives with them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import harness

BENCH = Path(__file__).resolve().parent
OWNER = "faults"
"""The owner that submits and follows every job of the bench."""
FAULTS = ("worker", "redis", "api", "database")
POLL = 0.25
LEASE_SECONDS = 6.0
"""Shorter than the default (60 s), so a job of a killed worker is taken back sooner."""
REDISPATCH_AFTER = 20.0
"""Shorter than the default (60 s): how soon a queued job whose message vanished (a
delivery the worker took but could not claim, the store being away) is handed over again."""
FINISHED = ("completed", "failed", "cancelled", "expired")


class BenchError(Exception):
    """The deployment broke: a part did not start, or did not come back."""


# -- the deployment -----------------------------------------------------------------------


class Deployment(harness.Deployment):
    """The harness's deployment with the ``fault_sleep`` kind and short leases, none of
    this process's ``LONGPLAY_*`` settings, and a database the bench can take away."""

    def __init__(self, root: Path, database: str, concurrency: int) -> None:
        self.concurrency = concurrency
        self.runs_dir = root / "runs"
        self.runs_dir.mkdir()
        (root / "tmp").mkdir()
        super().__init__(
            root,
            database,
            plugin="fault_kinds",
            plugin_dir=BENCH,
            env={
                "LONGPLAY_LEASE_SECONDS": str(LEASE_SECONDS),
                "LONGPLAY_HEARTBEAT_INTERVAL": "1",
                "LONGPLAY_REAPER_INTERVAL": "1",
                "LONGPLAY_REDISPATCH_AFTER": str(REDISPATCH_AFTER),
                "LONGPLAY_SHUTDOWN_GRACE": "2",
                "LONGPLAY_LOG_LEVEL": "warning",
                "FAULTS_RUNS_DIR": str(self.runs_dir),
                "TMPDIR": str(root / "tmp"),  # a killed worker leaves files there
            },
            inherit_settings=False,
            postgres_admin=os.environ.get("LONGPLAY_BENCH_POSTGRES_URL", harness.POSTGRES_ADMIN),
            database_prefix="longplay_faults",
            logs=True,
        )

    def take_database_away(self, seconds: float) -> None:
        """Make the store refuse work for ``seconds``; returns when it is back."""
        if self.database_kind == "sqlite":
            self._hold_sqlite_lock(self.database_url.removeprefix("sqlite:///"), seconds)
        else:
            self._refuse_postgres(self.database_url.rsplit("/", 1)[1], seconds)

    @staticmethod
    def _hold_sqlite_lock(path: str, seconds: float) -> None:
        code = (
            "import sqlite3, sys, time\n"
            "conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)\n"
            "conn.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "time.sleep(float(sys.argv[2]))\n"
            "conn.execute('ROLLBACK')\n"
        )
        holder = subprocess.Popen(
            [sys.executable, "-c", code, path, str(seconds)],
            stdout=subprocess.PIPE,
        )
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != b"locked":
            raise BenchError("could not lock the SQLite database")
        if holder.wait(seconds + 60) != 0:
            raise BenchError("the process holding the SQLite lock failed")

    def _refuse_postgres(self, name: str, seconds: float) -> None:
        import psycopg

        with psycopg.connect(self.postgres_admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            try:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = %s AND pid <> pg_backend_pid()",
                        (name,),
                    )
                    time.sleep(0.2)
            finally:
                conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    def client(self, owner: str = OWNER, timeout: float = 60) -> httpx.Client:
        return super().client(owner, timeout)


# -- watching a batch ---------------------------------------------------------------------


class Follower(threading.Thread):
    """A client following one job over the API's event stream to its end."""

    def __init__(self, api_url: str, key: str, job_id: str) -> None:
        super().__init__(name=f"follow-{job_id}", daemon=True)
        self.api_url, self.key, self.job_id = api_url, key, job_id
        self.last: str | None = None

    def run(self) -> None:
        from longplay.client import Client

        client = Client(self.api_url, self.key)
        try:
            for event in client.events(self.job_id):
                self.last = str(event.get("type"))
        except Exception as exc:
            self.last = f"error: {type(exc).__name__}: {str(exc)[:120]}"


@dataclass
class HealthLog:
    """What ``/healthz`` answered while the fault lasted."""

    answers: dict[str, int] = field(default_factory=dict)
    slowest_ms: float = 0.0

    def summary(self) -> str:
        seen = ", ".join(f"{k} x{n}" for k, n in sorted(self.answers.items()))
        return f"{seen or 'nothing'}; slowest {self.slowest_ms:.0f} ms"


class HealthWatch(threading.Thread):
    def __init__(self, api_url: str) -> None:
        super().__init__(name="healthz", daemon=True)
        self.api_url = api_url
        self.log = HealthLog()
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.done.wait(POLL):
                started = time.perf_counter()
                try:
                    response = http.get(f"{self.api_url}/healthz")
                    body = response.json()
                    answer = (
                        "ok"
                        if response.status_code == 200
                        else "down: " + "+".join(body.get("down", []))
                    )
                except (httpx.HTTPError, ValueError):
                    answer = "no answer"
                elapsed = 1000 * (time.perf_counter() - started)
                if answer != "no answer":
                    self.log.slowest_ms = max(self.log.slowest_ms, elapsed)
                self.log.answers[answer] = self.log.answers.get(answer, 0) + 1


@dataclass(frozen=True)
class JobState:
    status: str
    attempts: int
    completed_attempts: int


def job_states(url: str, ids: Sequence[str]) -> dict[str, JobState] | None:
    """The batch's jobs as the store has them; None while the store does not answer."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    from longplay.store.db import session_scope
    from longplay.store.models import Job, JobAttempt

    try:
        with session_scope(url) as session:
            rows = session.execute(
                select(Job.id, Job.status, Job.attempts).where(Job.id.in_(ids))
            ).all()
            done = dict(
                session.execute(
                    select(JobAttempt.job_id, func.count())
                    .where(JobAttempt.job_id.in_(ids), JobAttempt.outcome == "completed")
                    .group_by(JobAttempt.job_id)
                ).all()
            )
    except SQLAlchemyError:
        return None
    return {i: JobState(s, a, int(done.get(i, 0))) for i, s, a in rows}


@dataclass
class Outcome:
    fault: str
    submitted: int
    completed: int
    lost: int
    duplicated: int
    followed: int
    """Followers (event-stream clients) that saw the job complete."""
    retried: int
    """Jobs that needed more than one attempt."""
    wall_s: float
    """From the first submit to the last job finished."""
    ideal_s: float
    """The batch's work divided among the worker's processes: its time with no fault."""
    healthz: str
    follower_ends: dict[str, int] = field(default_factory=dict)
    """The last event each follower saw, counted."""
    problems: list[str] = field(default_factory=list)


def run_fault(
    dep: Deployment, fault: str, *, jobs: int, durations: Sequence[float], outage: float
) -> Outcome:
    started = time.monotonic()
    with dep.client() as client:
        ids = []
        for seconds in durations:
            body = {"kind": "fault_sleep", "params": {"seconds": round(seconds, 2)}}
            response = client.post("/v1/jobs", json=body)
            if response.status_code != 202:
                raise BenchError(f"submit answered {response.status_code}: {response.text[:300]}")
            ids.append(str(response.json()["id"]))
    followers = [Follower(dep.api_url, dep.key(OWNER), job_id) for job_id in ids]
    for follower in followers:
        follower.start()

    def states() -> dict[str, JobState]:
        return job_states(dep.database_url, ids) or {}

    def in_the_middle() -> bool:
        found = [s.status for s in states().values()]
        return found.count("running") >= 1 and found.count("completed") >= max(1, jobs // 5)

    harness.wait_until(
        in_the_middle,
        timeout=120 + 2 * max(durations),
        every=POLL,
        what=f"{fault}: a part of the batch to be done",
    )
    watch = HealthWatch(dep.api_url)
    watch.start()
    inject(dep, fault, outage)

    # Wait for the batch to finish; a batch that stops moving has lost its jobs.
    stall = 60.0 + LEASE_SECONDS + 2 * max(durations)
    last, moved = -1, time.monotonic()
    while True:
        found = states()
        finished = sum(1 for s in found.values() if s.status in FINISHED)
        if finished >= jobs:
            break
        if finished != last:
            last, moved = finished, time.monotonic()
        elif time.monotonic() - moved > stall:
            break
        time.sleep(POLL)
    wall = time.monotonic() - started
    watch.done.set()
    watch.join(15)
    for follower in followers:
        follower.join(max(0.1, 30 - (time.monotonic() - started - wall)))
    final = states()
    runs = {job_id: _lines(dep.runs_dir / f"{job_id}.done") for job_id in ids}
    completed = sum(1 for i in ids if i in final and final[i].status == "completed")
    duplicated = [i for i in ids if runs[i] > 1 or (i in final and final[i].completed_attempts > 1)]
    problems = [
        f"{i}: {final[i].status if i in final else 'missing'}, ran to the end {runs[i]} time(s)"
        for i in ids
        if i not in final or final[i].status != "completed" or i in duplicated
    ]
    return Outcome(
        fault=fault,
        submitted=jobs,
        completed=completed,
        lost=jobs - completed,
        duplicated=len(duplicated),
        followed=sum(1 for f in followers if f.last == "completed"),
        retried=sum(1 for i in ids if i in final and final[i].attempts > 1),
        wall_s=round(wall, 1),
        ideal_s=round(sum(durations) / dep.concurrency, 1),
        healthz=watch.log.summary(),
        follower_ends=dict(Counter(str(f.last) for f in followers)),
        problems=problems,
    )


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def inject(dep: Deployment, fault: str, outage: float) -> None:
    if fault == "worker":
        dep.kill("worker")
        time.sleep(1.0)  # as ``longplay up`` waits before its first restart
        dep.start_worker(dep.concurrency, wait=False)
    elif fault == "redis":
        dep.kill("redis")
        time.sleep(1.0)
        dep.start_redis()
    elif fault == "api":
        dep.kill("api")
        time.sleep(1.0)
        dep.start_api()
    elif fault == "database":
        dep.take_database_away(outage)
    else:
        raise ValueError(f"no fault {fault!r}")


# -- the report ---------------------------------------------------------------------------


COLUMNS = ("fault", "submitted", "completed", "lost", "duplicated", "followed", "retried")


def table(outcomes: Sequence[Outcome]) -> str:
    header = f"{'fault':<10}" + "".join(f"{c:>11}" for c in COLUMNS[1:])
    header += f"{'wall s':>9}{'ideal s':>9}  healthz during the fault"
    rows = [header]
    for o in outcomes:
        row = f"{o.fault:<10}" + "".join(f"{getattr(o, c):>11}" for c in COLUMNS[1:])
        rows.append(row + f"{o.wall_s:>9.1f}{o.ideal_s:>9.1f}  {o.healthz}")
    return "\n".join(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20, help="jobs per fault")
    parser.add_argument("--min-seconds", type=float, default=5.0)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4, help="worker processes")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated")
    parser.add_argument("--outage", type=float, default=5.0, help="database outage, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the outcomes here")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data folder")
    args = parser.parse_args(argv)
    args.faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown fault(s): {', '.join(sorted(unknown))}")
    return args


@contextlib.contextmanager
def deployment(args: argparse.Namespace) -> Iterator[Deployment]:
    root = Path(tempfile.mkdtemp(prefix="longplay-faults-"))
    try:
        with Deployment(root, args.database, args.concurrency) as dep:
            try:
                dep.start_api(timeout=60)
                dep.start_worker(dep.concurrency, wait=False)
                dep.start_beat()
                dep.wait_healthy()
                yield dep
            except (BenchError, TimeoutError):
                print(dep.log_tails(25), file=sys.stderr)
                raise
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    print(
        f"fault bench: {args.jobs} jobs of {args.min_seconds:g}-{args.max_seconds:g} s per fault,"
        f" worker concurrency {args.concurrency}, {args.database}, lease {LEASE_SECONDS:g} s,"
        f" redispatch after {REDISPATCH_AFTER:g} s, database outage {args.outage:g} s",
        flush=True,
    )
    outcomes: list[Outcome] = []
    try:
        with deployment(args) as dep:
            for fault in args.faults:
                durations = [
                    rng.uniform(args.min_seconds, args.max_seconds) for _ in range(args.jobs)
                ]
                outcome = run_fault(
                    dep, fault, jobs=args.jobs, durations=durations, outage=args.outage
                )
                outcomes.append(outcome)
                print(f"{fault}: done in {outcome.wall_s:.1f} s", flush=True)
                for problem in outcome.problems:
                    print(f"  {problem}", flush=True)
                if outcome.lost or outcome.duplicated:
                    print(dep.log_tails(25), file=sys.stderr)
    except (BenchError, TimeoutError) as exc:
        print(f"the deployment broke: {exc}", file=sys.stderr)
        return 2
    print()
    print(table(outcomes))
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    return 1 if any(o.lost or o.duplicated for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
