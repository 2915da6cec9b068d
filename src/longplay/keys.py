"""Every Redis key and Celery queue name longplay uses, in one place."""

from __future__ import annotations

PREFIX = "longplay"
PRIORITIES = ("high", "normal", "low")
UPKEEP_QUEUE = f"{PREFIX}.upkeep"
"""Beat's periodic tasks: every worker takes them first, so no backlog delays them."""


def events_stream(job_id: str) -> str:
    """A Redis stream of the job's events; its entry ids are the SSE event ids."""
    return f"{PREFIX}:events:{job_id}"


def events_deleted(job_id: str) -> str:
    """Set for a while when a job or flow (``job_id`` names either) is deleted: an event
    about it written after that is refused, so a writer that was late (its change
    committed before the delete, its event sent after) does not bring the deleted data
    back into a stream."""
    return f"{PREFIX}:events-deleted:{job_id}"


def worker_process(name: str) -> str:
    """What one worker process reports about itself: its loaded engines, its last job."""
    return f"{PREFIX}:workers:{name}"


WORKER_PROCESSES = f"{PREFIX}:workers:*"


def worker_stopping(holder_prefix: str) -> str:
    """Set while the worker whose processes are named ``holder_prefix…`` stops cleanly:
    its jobs go back to the queue without costing an attempt, whoever finds them."""
    return f"{PREFIX}:stopping:{holder_prefix}"


BEAT_LEASE = f"{PREFIX}:beat:lease"
"""Held, and renewed, by the one beat that schedules; another waits for it to lapse."""
ADMISSION_LOCK = f"{PREFIX}:admission:lock"
"""Held by the one process handing held jobs to the broker."""
ADMISSION_DIRTY = f"{PREFIX}:admission:dirty"
"""Set by a process that wanted to hand jobs over while the lock was held: the
holder runs once more."""
ADMISSION_WAKE = f"{PREFIX}:admission:wake"
"""When the next admission round is due (epoch seconds), as a delayed upkeep task."""
ADMISSION_ASKED = f"{PREFIX}:admission:asked"
"""A list of at most one item: a round is wanted (the workers' admission loops wait on it)."""


def step_times(kind: str) -> str:
    """A hash of each step of ``kind`` to its share of a run's time, learned from the runs
    that completed (see :mod:`longplay.jobs.step_times`)."""
    return f"{PREFIX}:step-times:{kind}"


STORE_FULL = f"{PREFIX}:store-full"
"""Set for a minute by a process whose write the database refused for a full disk: its
reads still pass, so ``/healthz`` (which reads) learns of it from here."""


def submit_rate(owner_id: str) -> str:
    """An owner's submit rate limiter: its theoretical arrival time (GCRA), in ms."""
    return f"{PREFIX}:rate:submit:{owner_id}"


def queue_name(resource: str, priority: str) -> str:
    """The Celery queue for a job: split by resource, then by priority."""
    return f"{PREFIX}.{resource}.{priority}"


def worker_queues(resources: list[str]) -> list[str]:
    """A worker's queues, highest priority first (the broker polls them in this order)."""
    return [UPKEEP_QUEUE, *(queue_name(r, p) for p in PRIORITIES for r in resources)]


WORKERS_ALIVE = f"{PREFIX}:workers-alive"
"""A sorted set: each worker main process (``host:pid``) and when it last said it is
alive, as epoch seconds. ``/healthz`` counts the recent ones."""


def worker_slots(name: str) -> str:
    """How many jobs the worker ``name`` runs at once, per resource (JSON); it lapses
    with the worker's liveness marks."""
    return f"{WORKERS_ALIVE}:slots:{name}"


def metric(name: str) -> str:
    """A Prometheus metric family's counts, kept for every process: a hash of label
    values (and, for a histogram, bucket) to a number."""
    return f"{PREFIX}:metrics:{name}"
