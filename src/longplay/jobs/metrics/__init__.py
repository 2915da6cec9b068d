"""Prometheus metrics: counts every process keeps in Redis (:mod:`.kept`), added to by
the hooks' subscriber (:mod:`.listener`) and the API's request middleware, and gauges
read when scraped (:mod:`.gauges`); :func:`render` is the ``/metrics`` page."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from longplay.jobs.metrics import catalogue
from longplay.jobs.metrics.gauges import gauges
from longplay.jobs.metrics.kept import Batch, read
from longplay.jobs.metrics.listener import send
from longplay.redis_client import get_quick_redis

__all__ = ["CONTENT_TYPE_LATEST", "REQUESTS", "catalogue", "render", "send"]

REQUESTS = Batch(every=1.0)
"""This process's HTTP request counts, written to Redis once a second."""


class _Deployment(Collector):
    """The whole deployment's metrics, read from Redis and the store at each scrape.

    On the quick client (one try, one-second timeouts): a Redis that stalls makes the
    scrape a 503 at once, not an answer 30 s later, past Prometheus's scrape timeout,
    with a thread of the API held all that time."""

    def collect(self) -> Iterator[Metric]:
        client = get_quick_redis()
        yield from read(catalogue.ALL, client)
        yield from gauges(client)


_registry = CollectorRegistry(auto_describe=False)
_registry.register(_Deployment())


def render() -> bytes:
    """The Prometheus text page: this process's pending request counts written first."""
    REQUESTS.flush(get_quick_redis())
    return generate_latest(_registry)
