"""Webhooks: signed POSTs to a job's ``callback_url`` when it starts, progresses and ends.

``signing`` makes the Standard Webhooks headers and keeps the owner's secret;
``outbox`` stores each message with the change it tells of; ``delivery`` sends them,
with retries.
"""
