"""The few messages longplay sends through Celery, each an id and a queue, and how
many wait in a queue.

This is the jobs layer's one door to the broker: it names what to send, this module
knows the task names, queues and options. A send raises when the broker does not
answer; each caller decides whether that fails its request or waits for a sweep.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kombu import Producer

from longplay import keys
from longplay.broker.app import ADMIT, DELIVER_WEBHOOK, RUN_JOB, celery_app
from longplay.redis_client import get_redis

HELP_JOB = "longplay.help_job"
Sender = Producer
"""What :func:`job_sender` gives, to pass to :func:`run_job` (callers need not know
kombu)."""
PRIORITY_STEPS = (3, 6, 9)
"""kombu's Redis transport keeps message priorities in extra lists (``name\\x06\\x16N``)."""


def run_job(
    job_id: str,
    *,
    resource: str,
    priority: str,
    soft_time_limit: float | None = None,
    time_limit: float | None = None,
    producer: Sender | None = None,
) -> None:
    """Hand a committed job's id to a worker, on the queue for its resource and priority;
    ``producer``: one of :func:`job_sender`'s, for a batch."""
    celery_app.send_task(
        RUN_JOB,
        args=[job_id],
        queue=keys.queue_name(resource, priority),
        soft_time_limit=soft_time_limit,
        time_limit=time_limit,
        producer=producer,
    )


@contextmanager
def job_sender() -> Iterator[Sender]:
    """A producer to pass to :func:`run_job` for every message of a batch: taken from
    Celery's pool once, not once a message (a quarter of a message's cost)."""
    with celery_app.producer_or_acquire() as producer:
        yield producer


def help_job(job_id: str, step: str, *, queue: str) -> None:
    """Ask a worker process on ``queue`` to run items of a running job's step."""
    celery_app.send_task(HELP_JOB, args=[job_id, step], queue=queue)


def deliver_webhook(
    delivery_id: str, job_id: str | None, *, countdown: float | None = None
) -> None:
    """Ask a worker (upkeep queue) to make the next attempt at a committed delivery."""
    celery_app.send_task(
        DELIVER_WEBHOOK,
        args=[delivery_id, job_id],
        queue=keys.UPKEEP_QUEUE,
        countdown=countdown,
    )


def admission_round(*, countdown: float) -> None:
    """Book an admission round ``countdown`` seconds from now (upkeep queue)."""
    celery_app.send_task(ADMIT, queue=keys.UPKEEP_QUEUE, countdown=countdown, ignore_result=True)


def waiting(queue: str) -> int:
    """Messages waiting in a Celery queue on the Redis broker."""
    pipe = get_redis().pipeline(transaction=False)
    pipe.llen(queue)
    for step in PRIORITY_STEPS:
        pipe.llen(f"{queue}\x06\x16{step}")
    return sum(int(n) for n in pipe.execute())
