"""Gauges read when Prometheus scrapes: the broker's queues, the store's held and running
jobs, the live workers, their slots and the engines their processes have loaded.

Read from where ``/healthz``, ``GET /v1/workers`` and admission read them (the liveness
marks, the worker processes' reports, the jobs table), so the numbers agree with those.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter as Tally
from collections.abc import Callable, Iterator

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from longplay.broker.liveness import capacity, live_reports, live_workers
from longplay.broker.single_beat import scheduling
from longplay.framework.kinds import all_kinds
from longplay.jobs.admission.choice import RESOURCES
from longplay.jobs.admission.overview import broker_depths
from longplay.settings import get_settings
from longplay.store.db import session_scope
from longplay.store.models import Job, JobStatus

log = logging.getLogger(__name__)


def gauges(client: redis.Redis) -> Iterator[Metric]:
    """Every scrape-time gauge; one that cannot be read now is left out, logged."""
    readers: tuple[Callable[[redis.Redis], Metric], ...] = (
        queue_depth,
        held_jobs,
        running_jobs,
        workers,
        beat,
        slots,
        engines,
        disk_free,
    )
    for reader in readers:
        try:
            yield reader(client)
        except (redis.RedisError, SQLAlchemyError, OSError) as exc:
            log.warning("metrics: %s not read: %s", reader.__name__, exc)


def queue_depth(client: redis.Redis) -> Metric:
    family = GaugeMetricFamily(
        "longplay_broker_queue_depth",
        "Messages waiting in each broker queue (handed over by admission, not yet taken).",
        labels=("queue",),
    )
    for queue, depth in broker_depths(client).items():
        family.add_metric([queue], depth)
    return family


def held_jobs(client: redis.Redis) -> Metric:
    family = GaugeMetricFamily(
        "longplay_jobs_held",
        "Queued jobs admission holds in the store (not yet handed to the broker), by resource.",
        labels=("resource",),
    )
    with session_scope() as session:
        rows = session.execute(
            select(Job.resource, func.count())
            .where(Job.status == JobStatus.QUEUED.value, Job.dispatched_at.is_(None))
            .group_by(Job.resource)
        ).all()
    found = dict.fromkeys(RESOURCES, 0) | {resource: count for resource, count in rows}
    for resource, count in sorted(found.items()):
        family.add_metric([resource], count)
    return family


def running_jobs(client: redis.Redis) -> Metric:
    family = GaugeMetricFamily(
        "longplay_jobs_running", "Jobs running now, by kind.", labels=("kind",)
    )
    with session_scope() as session:
        rows = session.execute(
            select(Job.kind, func.count())
            .where(Job.status == JobStatus.RUNNING.value)
            .group_by(Job.kind)
        ).all()
    # Every kind, 0 where none runs: a series that vanished at 0 would read as no data.
    found = {kind.name: 0 for kind in all_kinds()} | {kind: count for kind, count in rows}
    for kind, count in sorted(found.items()):
        family.add_metric([kind], count)
    return family


def workers(client: redis.Redis) -> Metric:
    family = GaugeMetricFamily(
        "longplay_workers_live", "Worker main processes marked alive recently (as /healthz)."
    )
    family.add_metric([], len(live_workers(client)))
    return family


def disk_free(client: redis.Redis) -> Metric:
    """Free bytes of the data folder's disk, as this process sees it (on one machine,
    or shared storage, every part sees the same): alert on it before writes fail."""
    family = GaugeMetricFamily(
        "longplay_data_disk_free_bytes",
        "Free bytes on the disk of the data folder (uploads, results, SQLite, Redis's file).",
    )
    family.add_metric([], shutil.disk_usage(get_settings().data_dir).free)
    return family


def beat(client: redis.Redis) -> Metric:
    family = GaugeMetricFamily(
        "longplay_beat_scheduling",
        "1 while a beat holds its lease and schedules (the reaper, cleanup), else 0.",
    )
    family.add_metric([], int(scheduling(client)))
    return family


def slots(client: redis.Redis) -> Metric:
    family = GaugeMetricFamily(
        "longplay_worker_slots",
        "Jobs the live workers run at once, by resource.",
        labels=("resource",),
    )
    for resource, count in sorted(capacity(client).items()):
        family.add_metric([resource], count)
    return family


def engines(client: redis.Redis) -> Metric:
    """Pool processes of live workers with each engine loaded, from the reports each
    process writes (``GET /v1/workers``)."""
    family = GaugeMetricFamily(
        "longplay_engines_loaded",
        "Worker pool processes with an engine loaded, by engine kind, backend and device.",
        labels=("engine", "backend", "device"),
    )
    tally: Tally[tuple[str, str, str]] = Tally()
    for raw in live_reports(client):
        for engine in json.loads(raw).get("engines", []):
            tally[(str(engine["kind"]), str(engine["backend"]), str(engine["device"]))] += 1
    for labels, count in sorted(tally.items()):
        family.add_metric(list(labels), count)
    return family
