"""The webhook tasks: one delivery attempt, and beat's sweep for lost messages.

Thin like the job task: each takes an id and hands it to :mod:`longplay.jobs.webhooks`,
which owns the retry rules; a retry is a new message with a countdown.
"""

from __future__ import annotations

from longplay.jobs import webhooks
from longplay.queue.app import DELIVER_WEBHOOK, SWEEP_WEBHOOKS, celery_app


@celery_app.task(name=DELIVER_WEBHOOK, ignore_result=True)
def deliver_webhook(delivery_id: str) -> None:
    """POST one webhook; schedule the next attempt if it was not accepted."""
    delay = webhooks.deliver(delivery_id)
    if delay is not None:
        webhooks.send(delivery_id, countdown=delay)


@celery_app.task(name=SWEEP_WEBHOOKS, ignore_result=True)
def sweep_webhooks() -> int:
    """Send again the due webhooks no message carries (lost, or their worker died)."""
    return webhooks.sweep()
