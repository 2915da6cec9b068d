"""Beat's upkeep goes on while every worker process runs a job.

Real API, worker and beat processes. Each upkeep round went to the upkeep queue for
a free pool process to take, and while none was free it expired unrun: on a busy
deployment a running job's deadline passed without its cancel, and cleanup waited
for a job to end. Beat's process now runs the upkeep on threads of its own.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from conftest import Stack, submit, wait_for_status, wait_until
from sqlalchemy import MetaData, create_engine, insert, select, text
from test_migrations import add_row

from longplay.store.db import normalise_url

RETENTION = 3


def test_upkeep_goes_on_while_every_worker_process_runs_a_job(
    make_stack: Callable[[], Stack],
) -> None:
    deployment = make_stack()
    deployment.env.update(
        LONGPLAY_DISPATCH_INTERVAL="0.5",
        LONGPLAY_JOB_RETENTION=str(RETENTION),
        LONGPLAY_CLEANUP_INTERVAL="1",
    )
    deployment.start_api()
    deployment.start_beat()
    deployment.start_worker(concurrency=1)
    client = deployment.client()

    old = submit(client, params={"seconds": 0.1})
    wait_for_status(client, old["id"], {"completed"})
    deadline = datetime.now(UTC) + timedelta(seconds=RETENTION + 8)
    busy = submit(client, params={"seconds": 60, "ticks": 600}, deadline=deadline.isoformat())
    wait_for_status(client, busy["id"], {"running"})

    # Cleanup: the finished job goes once it is old enough, though the only slot is taken.
    def gone() -> bool:
        return client.get(f"/v1/jobs/{old['id']}").status_code == 404

    wait_until(gone, timeout=RETENTION + 6)
    assert client.get(f"/v1/jobs/{busy['id']}").json()["status"] == "running"

    # Admission's round: the running job is cancelled at its deadline, not when it ends.
    cancelled = wait_for_status(client, busy["id"], {"cancelled", "completed"}, timeout=20)
    assert cancelled["status"] == "cancelled", cancelled
    assert cancelled["error"]["code"] == "deadline_passed"
    late = datetime.fromisoformat(cancelled["finished_at"]) - deadline
    assert timedelta(0) <= late < timedelta(seconds=5), late


OLD_JOBS = 20_000


def test_a_beat_stopped_in_a_long_cleanup_stops_at_once_and_its_standby_takes_over(
    make_stack: Callable[..., Stack],
) -> None:
    """Told to stop, beat waited for the cleanup it ran to delete its every row (30 s
    for 10,000 old jobs), holding its lease: its standby could not schedule, nor could
    anyone, and a supervisor's grace ran out into a kill that left files behind."""
    deployment = make_stack(logs=True)
    deployment.env.update(
        LONGPLAY_JOB_RETENTION="1",
        LONGPLAY_CLEANUP_INTERVAL="2",
        LONGPLAY_CLEANUP_BATCH="20",
        LONGPLAY_CLEANUP_MAX_PER_RUN=str(OLD_JOBS),
    )
    deployment.start_api()  # it makes the schema
    client = deployment.client("keeper")
    deployment.key("keeper")
    engine = create_engine(normalise_url(deployment.database_url))
    with engine.begin() as connection:
        jobs = MetaData()
        jobs.reflect(connection, only=["jobs", "owners"])
        owner = connection.execute(select(jobs.tables["owners"].c.id)).scalar_one()
        old = datetime.now(UTC) - timedelta(hours=1)
        first = add_row(
            connection, jobs.tables["jobs"], 1, owner_id=owner, status="completed", finished_at=old
        )
        copies = [{**first, "id": f"job_{n:020x}"} for n in range(2, OLD_JOBS + 1)]
        connection.execute(insert(jobs.tables["jobs"]), copies)

    def count() -> int:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM jobs")).scalar_one())

    deployment.start_beat()
    beat = deployment.processes["beat"]
    wait_until(lambda: count() < OLD_JOBS, timeout=60)  # its cleanup runs
    standby = [sys.executable, "-m", "longplay", "beat"]
    deployment.spawn("standby", standby, deployment.env)
    wait_until(lambda: "schedules already; this one waits" in log_of(deployment, "standby"))
    told = time.monotonic()
    beat.send_signal(signal.SIGTERM)
    wait_until(lambda: beat.poll() is not None, timeout=30)
    assert time.monotonic() - told < 10, "it waited for the whole cleanup"
    assert beat.returncode == 0
    left = count()
    assert left > 0, "the cleanup ended after its batch, not its run"
    wait_until(lambda: "holds the lease and schedules" in log_of(deployment, "standby"), timeout=10)
    wait_until(lambda: count() < left, timeout=60)  # the standby's cleanup goes on
    assert client.get("/healthz").json()["beat"] == "ok"


def log_of(deployment: Stack, part: str) -> str:
    return (deployment.data_dir / f"{part}.log").read_text(errors="replace")
