"""The Celery app, built from the same settings object as the API.

Late acks and reject-on-worker-lost give at-least-once delivery; a prefetch of one
keeps a long job from holding a second one hostage; the broker polls queues in
priority order so a high job overtakes a backlog of low ones. Job state lives in
the store, so Celery keeps no results.
"""

from __future__ import annotations

import logging
import re

from celery import Celery
from kombu import Queue

from longplay import keys
from longplay.redis_client import REDIS_DOWN, redis_away
from longplay.settings import Settings, get_settings

RUN_JOB = "longplay.run_job"
REAP = "longplay.reap"
DELIVER_WEBHOOK = "longplay.deliver_webhook"
SWEEP_WEBHOOKS = "longplay.sweep_webhooks"
CLEANUP = "longplay.cleanup"
ADMIT = "longplay.admit"
SETTLE_WAITING = "longplay.settle_waiting"
ROUTINE = (REAP, SWEEP_WEBHOOKS, CLEANUP, ADMIT, SETTLE_WAITING)
"""Upkeep beat sends every few seconds; their every run is not news."""


class QuietRoutine(logging.Filter):
    """Drops Celery's INFO lines about routine upkeep ("received", "succeeded",
    "Sending due task"), which would bury the lines about jobs; warnings stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = record.getMessage()
        return not any(name in message for name in ROUTINE)


_SCHEDULED = re.compile(r"Couldn't apply scheduled task (\S+):")


class BrokerAway(logging.Filter):
    """Beat's "Message Error: Couldn't apply scheduled task …" while Redis does not
    answer, as one line. Celery writes the call stack and a chained traceback of some
    150 lines for each send it could not make, which with admission's schedule is one a
    second for as long as Redis is away. A send that failed for another reason (a wrong
    password, a task that cannot be serialized) keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        away = _redis_away(error) if error is not None else None
        if away is None:
            return True
        task = _SCHEDULED.search(str(error))
        first = (str(away).strip().splitlines() or [""])[0][:200]
        record.msg = "%s: not sent, Redis did not answer (%s: %s); beat sends it at its next time"
        record.args = (task.group(1) if task else "a scheduled task", type(away).__name__, first)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def _redis_away(error: BaseException) -> BaseException | None:
    """The error in ``error``'s chain that says Redis did not answer, if one does."""
    seen: set[int] = set()
    at: BaseException | None = error
    while at is not None and id(at) not in seen:
        seen.add(id(at))
        if isinstance(at, REDIS_DOWN):  # the first Redis error of the chain decides
            return at if redis_away(at) else None
        at = at.__cause__ or at.__context__
    return None


def quiet_routine_logs() -> None:
    for name in ("celery.worker.strategy", "celery.app.trace", "celery.beat"):
        logging.getLogger(name).addFilter(QuietRoutine())
    logging.getLogger("celery.beat").addFilter(BrokerAway())


def make_celery(settings: Settings) -> Celery:
    app = Celery(
        "longplay",
        broker=settings.broker_url,
        include=[
            "longplay.worker.tasks",
            "longplay.worker.webhook_tasks",
            "longplay.worker.flow_tasks",
        ],
    )
    all_queues = keys.worker_queues(["cpu", "gpu"])
    upkeep = {"queue": keys.UPKEEP_QUEUE, "expires": settings.worker.reaper_interval}
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        task_queues=[Queue(name) for name in all_queues],
        task_default_queue=keys.queue_name("cpu", "normal"),
        task_create_missing_queues=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "queue_order_strategy": "priority",
            "visibility_timeout": settings.worker.visibility_timeout,
        },
        worker_soft_shutdown_timeout=settings.worker.shutdown_grace,
        # Celery's own check, in KiB, made in the pool process after each task; None: off.
        worker_max_memory_per_child=settings.worker.max_memory_mb * 1024 or None,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        beat_schedule={
            # Expiring: while no worker runs, reap messages do not pile up.
            "reap": {"task": REAP, "schedule": settings.worker.reaper_interval, "options": upkeep},
            # Waiting jobs and flows whose wake-up was lost with a dying process.
            "settle-waiting": {
                "task": SETTLE_WAITING,
                "schedule": settings.worker.reaper_interval,
                "options": upkeep,
            },
            # Due run_at and retries, deadlines, messages lost with the broker.
            "admit": {
                "task": ADMIT,
                "schedule": settings.admission.dispatch_interval,
                "options": {
                    "queue": keys.UPKEEP_QUEUE,
                    "expires": settings.admission.dispatch_interval,
                },
            },
            "sweep-webhooks": {
                "task": SWEEP_WEBHOOKS,
                "schedule": settings.webhooks.sweep_interval,
                "options": {
                    "queue": keys.UPKEEP_QUEUE,
                    "expires": settings.webhooks.sweep_interval,
                },
            },
            "cleanup": {
                "task": CLEANUP,
                "schedule": settings.retention.cleanup_interval,
                "options": {
                    "queue": keys.UPKEEP_QUEUE,
                    "expires": settings.retention.cleanup_interval,
                },
            },
        },
    )
    return app


celery_app = make_celery(get_settings())
