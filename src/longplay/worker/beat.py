"""Beat's process: it keeps the schedule and runs the upkeep on threads of its own.

Beat sends each round of upkeep (admission, the reaper, the sweeps, cleanup) to the
upkeep queue, and a worker's pool process took it when one was free. While every pool
process ran a job, which on a busy deployment is for hours, none was: each round
expired unrun, so a running job's deadline passed without its cancel, old jobs and
files stayed past their retention, and a dead worker's jobs were shown running. So
beat's process consumes the upkeep queue too: it is a Celery worker of the
``threads`` pool on that queue alone, with beat's scheduler in a thread of it. Idle
workers still take upkeep when they ask first, and run it as fast; a busy one no
longer holds it up.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from celery.beat import EmbeddedService
from celery.signals import worker_ready, worker_shutting_down

from longplay import keys
from longplay.broker.app import celery_app
from longplay.jobs import cleanup
from longplay.worker.main import run_worker

UPKEEP_THREADS = 4
"""Threads that run upkeep tasks at once: an hourly cleanup that takes a while leaves
three for admission, the reaper and webhook resends."""


def run(schedule: Path, *, log_level: str, quiet: bool) -> int:
    """Schedule beat's tasks and run the upkeep queue's, until told to stop (SIGTERM,
    Ctrl-C); the worker's exit code (0 after a stop, 1 after an unrecoverable error)."""
    scheduler = EmbeddedService(celery_app, thread=True, schedule_filename=str(schedule))

    def start(**_: object) -> None:
        scheduler.start()

    def stop(**_: object) -> None:
        """Before the threads finish their tasks: no new sends while the process ends,
        and a cleanup running ends after its batch."""
        cleanup.STOPPING.set()
        if scheduler.is_alive():
            scheduler.stop()

    # Once the worker consumes: the first rounds beat sends find a thread to run them.
    worker_ready.connect(start, weak=False)
    worker_shutting_down.connect(stop, weak=False)
    return run_worker(
        [
            *(["--quiet"] if quiet else []),  # no banner
            "worker",
            f"--loglevel={log_level.upper()}",
            "--pool=threads",
            f"--concurrency={UPKEEP_THREADS}",
            f"--queues={keys.UPKEEP_QUEUE}",
            f"--hostname=longplay-beat-{socket.gethostname()}-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )
