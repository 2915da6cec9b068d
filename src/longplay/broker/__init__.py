"""The broker: the Celery app (``app``), the messages the jobs layer sends (``send``)
and the worker liveness marks (``liveness``). Nothing above this package imports
Celery; the jobs layer goes through :mod:`longplay.broker.send`."""

from celery.exceptions import SoftTimeLimitExceeded

__all__ = ["SoftTimeLimitExceeded"]
