"""The webhook tasks: one delivery attempt, and beat's sweep for lost messages.

Thin like the job task: each takes an id and hands it to :mod:`longplay.jobs.webhooks.delivery`,
which owns the retry rules; a retry is a new message with a countdown.
"""

from __future__ import annotations

from longplay.broker.app import DELIVER_WEBHOOK, SWEEP_WEBHOOKS, celery_app
from longplay.jobs.webhooks import delivery, outbox
from longplay.worker.upkeep import round_of_upkeep


@celery_app.task(name=DELIVER_WEBHOOK, ignore_result=True)
def deliver_webhook(delivery_id: str) -> None:
    """POST one webhook; schedule the next attempt if it was not accepted."""
    delay = delivery.deliver(delivery_id)
    if delay is not None:
        outbox.send(delivery_id, countdown=delay)


@celery_app.task(name=SWEEP_WEBHOOKS, ignore_result=True)
@round_of_upkeep
def sweep_webhooks() -> int:
    """Send again the due webhooks no message carries (lost, or their worker died)."""
    return outbox.sweep()
