"""The webhook tasks: a delivery's next attempt, and beat's sweep for lost messages.

Thin like the job task: each takes an id and hands it on. The attempt itself is made
by a sender thread of this process (:mod:`longplay.jobs.webhooks.relay`), so that a
slow receiver does not hold the pool process; :mod:`longplay.jobs.webhooks.delivery`
owns the retry rules. A delivery comes here when the process that stored it had no
room for it, or died with it (the sweep).
"""

from __future__ import annotations

from longplay.broker.app import DELIVER_WEBHOOK, SWEEP_WEBHOOKS, celery_app
from longplay.jobs.webhooks import outbox, relay
from longplay.worker.upkeep import round_of_upkeep


@celery_app.task(name=DELIVER_WEBHOOK, ignore_result=True)
def deliver_webhook(delivery_id: str, job_id: str | None = None) -> None:
    """Make the next attempt at a delivery; it books the one after, if one is due.
    A message without the job's id (sent by an earlier version) is attempted here."""
    if job_id is None:
        relay.attempt(delivery_id, None)
    else:
        relay.send(delivery_id, job_id)


@celery_app.task(name=SWEEP_WEBHOOKS, ignore_result=True)
@round_of_upkeep
def sweep_webhooks() -> int:
    """Send again the due webhooks no message carries (lost, or their worker died)."""
    return outbox.sweep()
