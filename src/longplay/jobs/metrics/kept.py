"""Counters and histograms kept in Redis, where every process adds to the same numbers.

Why Redis and not prometheus-client's multiprocess mode: longplay runs on more than one
machine (API replicas, CPU and GPU workers), and the numbers must add up over all of
them. Multiprocess mode sums the files of one machine's processes only, so every worker
machine would need a scrape target of its own, and its folder needs cleaning at start and
a mark per dead pool process (prefork pools replace processes). Here every process, on
any machine, adds with one pipelined ``HINCRBY`` per change to a hash per metric family
in the Redis they already share, and any API process answers ``/metrics`` for the whole
deployment. The cost is a Redis round trip per job change (jobs change a few times a
minute) and, for HTTP requests, one per second per API process (:class:`Batch`).

A family's hash maps a label set (JSON of the label values) to its count; a histogram's
fields are ``<labels>|<bucket index>`` (a count per bucket, not cumulative) and
``<labels>|sum``. The numbers live as long as Redis keeps them (with AOF, across
restarts); a flushed Redis is a counter reset, which Prometheus' ``rate()`` expects.
"""

from __future__ import annotations

import atexit
import bisect
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import redis
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from redis.client import Pipeline

from longplay import keys
from longplay.redis_client import get_redis

log = logging.getLogger(__name__)

Add = tuple[str, str, float]
"""One change to a kept number: the family's Redis key, the field, how much to add."""

SUM = "sum"


@dataclass(frozen=True)
class Counter:
    """A counter with labels; :meth:`inc` says what to add, :func:`write` adds it."""

    name: str
    help: str
    labels: tuple[str, ...]

    @property
    def key(self) -> str:
        return keys.metric(self.name)

    def inc(self, *values: str, by: int = 1) -> list[Add]:
        return [(self.key, _field(self.labels, values), by)]

    def family(self, kept: dict[str, float]) -> Metric:
        family = CounterMetricFamily(self.name, self.help, labels=self.labels)
        for field, value in sorted(kept.items()):
            family.add_metric(json.loads(field), value)
        return family


@dataclass(frozen=True)
class Histogram:
    """A histogram with labels and fixed bucket bounds (seconds)."""

    name: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...]

    @property
    def key(self) -> str:
        return keys.metric(self.name)

    def observe(self, value: float, *values: str) -> list[Add]:
        labels = _field(self.labels, values)
        bucket = bisect.bisect_left(self.buckets, value)  # len(buckets) is +Inf
        return [(self.key, f"{labels}|{bucket}", 1), (self.key, f"{labels}|{SUM}", value)]

    def family(self, kept: dict[str, float]) -> Metric:
        counts: dict[str, list[float]] = {}
        sums: dict[str, float] = {}
        for field, value in kept.items():
            labels, _, part = field.rpartition("|")
            if part == SUM:
                sums[labels] = value
                continue
            row = counts.setdefault(labels, [0.0] * (len(self.buckets) + 1))
            index = int(part)
            if 0 <= index < len(row):
                row[index] += value
        family = HistogramMetricFamily(self.name, self.help, labels=self.labels)
        bounds = [*(_bound(b) for b in self.buckets), "+Inf"]
        for labels, row in sorted(counts.items()):
            cumulative, total = [], 0.0
            for bound, count in zip(bounds, row, strict=True):
                total += count
                cumulative.append((bound, total))
            family.add_metric(json.loads(labels), cumulative, sum_value=sums.get(labels, 0.0))
        return family


Family = Counter | Histogram


def _field(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if len(names) != len(values):
        raise ValueError(f"labels {names} want {len(names)} values, not {values}")
    return json.dumps([str(v) for v in values], separators=(",", ":"))


def _bound(bound: float) -> str:
    return repr(float(bound))


def write(adds: Iterable[Add], client: redis.Redis | None = None) -> None:
    """Add to the kept numbers in one round trip. A Redis that does not answer loses
    these adds, with a warning: a metric must never fail the job or request it counts."""
    adds = list(adds)
    if not adds:
        return
    try:
        pipe = (client or get_redis()).pipeline(transaction=False)
        add_to(pipe, adds)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("metrics not kept (%d adds): %s", len(adds), exc)


def add_to(pipe: Pipeline, adds: Iterable[Add]) -> None:
    """Add the adds' commands to ``pipe``, sent by whoever owns it."""
    for key, field, amount in adds:
        if isinstance(amount, int):
            pipe.hincrby(key, field, amount)
        else:
            pipe.hincrbyfloat(key, field, amount)


def read(families: Iterable[Family], client: redis.Redis | None = None) -> Iterator[Metric]:
    """Every family as Prometheus metrics, read in one round trip."""
    families = list(families)
    pipe = (client or get_redis()).pipeline(transaction=False)
    for family in families:
        pipe.hgetall(family.key)
    for family, kept in zip(families, pipe.execute(), strict=True):
        yield family.family({_text(k): float(v) for k, v in kept.items()})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Batch:
    """Adds gathered in this process and written together, at most every ``every``
    seconds, by a thread of the process (started on the first add, again after a fork).

    For what happens on every request: one Redis round trip a second per process
    instead of one per request, and none on the request's path.
    """

    def __init__(self, every: float = 1.0) -> None:
        self._every = every
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], float] = {}
        self._pid: int | None = None
        self._wake = threading.Event()

    def add(self, adds: Iterable[Add]) -> None:
        with self._lock:
            for key, field, amount in adds:
                self._pending[(key, field)] = self._pending.get((key, field), 0) + amount
            if self._pid != os.getpid():
                self._start()

    def flush(self, client: redis.Redis | None = None) -> None:
        """Write what is pending now (``/metrics`` does, before it reads, on its own
        ``client``)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        write(((key, field, amount) for (key, field), amount in pending.items()), client)

    def _start(self) -> None:
        self._pid = os.getpid()
        self._wake = threading.Event()
        thread = threading.Thread(target=self._run, name="metrics-batch", daemon=True)
        thread.start()
        atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._every)
            try:
                self.flush()
            except Exception:  # the thread must outlive any one failure
                log.exception("metrics: a batch was not written")
